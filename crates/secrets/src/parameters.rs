//! Parameter Store (`AmazonSSM`).
