//! The AWS wire protocols, apart from any service: the Query protocol's
//! form-encoded requests and XML responses, and the error bodies of every
//! protocol the edge speaks.
//!
//! A service is described by a [`ServiceModel`], generated from botocore's
//! model by `cargo xtask codegen`; this crate turns a request's bytes into a
//! JSON value keyed by the model's member names (the same value a JSON
//! request would have been), and a response value back into the protocol's
//! bytes. Typed requests come from that value through serde, so the Query and
//! the JSON protocols share one set of generated types.
//!
//! *Architecture invariant:* no I/O, no HTTP types, no clock: bytes and a
//! model in, a value or bytes out. Every input is bounded ([`form::Limits`]).

pub mod form;
pub mod json;
pub mod model;
pub mod query;
pub mod timestamp;
pub mod xml;

pub use model::{ErrorModel, Kind, Member, Operation, Protocol, ServiceModel, Shape, ShapeId};
pub use query::QueryError;
