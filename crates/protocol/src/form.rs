//! `application/x-www-form-urlencoded` bodies, as the Query protocol sends
//! them: `Action=GetCallerIdentity&Version=2011-06-15&Names.member.1=a`.

use std::collections::BTreeMap;

/// Bounds on what one form may hold, so that no request grows memory past
/// what its (already bounded) body holds, nor makes the decoder walk a list
/// of a trillion items.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Parameters in one request.
    pub parameters_max: usize,
    /// Items in one list or entries in one map; also the largest index
    /// (`a.member.N`) a list may use.
    pub list_members_max: usize,
    /// Nesting of structures, lists and maps.
    pub depth_max: usize,
}

/// Ten thousand parameters, a thousand members per list: above anything an
/// AWS operation we serve accepts (ELBv2 and IAM cap their lists far lower).
pub const LIMITS: Limits = Limits {
    parameters_max: 10_000,
    list_members_max: 1_000,
    depth_max: 32,
};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("the request body is not valid UTF-8 after percent-decoding parameter {index}")]
    NotUtf8 { index: usize },
    #[error("the request has more than {max} parameters")]
    TooManyParameters { max: usize },
    #[error("parameter '{name}' appears more than once")]
    Duplicate { name: String },
    #[error("a parameter has an empty name")]
    EmptyName,
}

/// The parameters of a form body, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Form {
    pub parameters: BTreeMap<String, String>,
}

impl Form {
    pub fn parse(body: &[u8], limits: &Limits) -> Result<Form, FormError> {
        let mut parameters = BTreeMap::new();
        for (index, pair) in body
            .split(|&byte| byte == b'&')
            .filter(|pair| !pair.is_empty())
            .enumerate()
        {
            if index >= limits.parameters_max {
                return Err(FormError::TooManyParameters {
                    max: limits.parameters_max,
                });
            }
            let (name, value) = match pair.iter().position(|&byte| byte == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            let name = decode_component(name).ok_or(FormError::NotUtf8 { index: index + 1 })?;
            let value = decode_component(value).ok_or(FormError::NotUtf8 { index: index + 1 })?;
            if name.is_empty() {
                return Err(FormError::EmptyName);
            }
            if parameters.contains_key(&name) {
                return Err(FormError::Duplicate { name });
            }
            parameters.insert(name, value);
        }
        Ok(Form { parameters })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }
}

/// `+` is a space in forms; the rest is percent-decoding.
fn decode_component(raw: &[u8]) -> Option<String> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&byte| if byte == b'+' { b' ' } else { byte })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
    String::from_utf8(bytes).ok()
}

/// Encodes parameters as a form body, for tests and the fuzz seeds.
pub fn encode(parameters: &[(&str, &str)]) -> String {
    const FORM: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    parameters
        .iter()
        .map(|(name, value)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(name, FORM),
                percent_encoding::utf8_percent_encode(value, FORM)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_with_percent_and_plus() {
        let form = Form::parse(b"Action=Get&Name=a+b%2Fc&Empty=&Bare", &LIMITS).expect("parses");
        assert_eq!(form.get("Action"), Some("Get"));
        assert_eq!(form.get("Name"), Some("a b/c"));
        assert_eq!(form.get("Empty"), Some(""));
        assert_eq!(form.get("Bare"), Some(""));
    }

    #[test]
    fn refuses_what_it_cannot_hold() {
        assert_eq!(
            Form::parse(b"a=%ff", &LIMITS),
            Err(FormError::NotUtf8 { index: 1 })
        );
        assert_eq!(
            Form::parse(b"a=1&a=2", &LIMITS),
            Err(FormError::Duplicate { name: "a".into() })
        );
        assert_eq!(Form::parse(b"=1", &LIMITS), Err(FormError::EmptyName));
        let many: Vec<String> = (0..10_001).map(|i| format!("p{i}=1")).collect();
        assert_eq!(
            Form::parse(many.join("&").as_bytes(), &LIMITS),
            Err(FormError::TooManyParameters { max: 10_000 })
        );
    }
}
