//! A service's model as static data: what the protocol layer needs of
//! botocore's `service-2.json`, generated into each service's crate.

/// The wire protocol a service speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `X-Amz-Target` dispatch, JSON body, `application/x-amz-json-1.0`.
    Json10,
    /// The same with `application/x-amz-json-1.1`.
    Json11,
    /// Form-encoded `Action=...&Version=...` request, XML response.
    Query,
}

impl Protocol {
    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::Json10 => "application/x-amz-json-1.0",
            Protocol::Json11 => "application/x-amz-json-1.1",
            Protocol::Query => "text/xml",
        }
    }

    pub fn is_json(self) -> bool {
        matches!(self, Protocol::Json10 | Protocol::Json11)
    }
}

/// An index into [`ServiceModel::shapes`].
pub type ShapeId = u16;

#[derive(Debug)]
pub struct ServiceModel {
    /// botocore's directory name for the service, e.g. `elbv2`.
    pub name: &'static str,
    /// The credential scope's service name requests are signed for.
    pub signing_name: &'static str,
    pub protocol: Protocol,
    /// The `Version` a Query request must carry.
    pub api_version: &'static str,
    /// The `X-Amz-Target` prefix of a JSON service.
    pub target_prefix: Option<&'static str>,
    /// The `xmlns` of a Query service's responses.
    pub xml_namespace: Option<&'static str>,
    /// JSON services that answer errors with `x-amzn-query-error` too, for
    /// clients that still speak their older Query protocol.
    pub query_compatible: bool,
    /// Sorted by name.
    pub operations: &'static [Operation],
    /// Generated only for Query services; JSON services decode with serde.
    pub shapes: &'static [Shape],
    /// Every exception the model declares, sorted by shape name.
    pub errors: &'static [ErrorModel],
}

impl ServiceModel {
    pub fn operation(&self, name: &str) -> Option<&'static Operation> {
        self.operations
            .binary_search_by(|operation| operation.name.cmp(name))
            .ok()
            .map(|index| &self.operations[index])
    }

    pub fn shape(&self, id: ShapeId) -> &'static Shape {
        &self.shapes[usize::from(id)]
    }

    /// The exception modelled under this shape name.
    pub fn error(&self, shape_name: &str) -> Option<&'static ErrorModel> {
        self.errors
            .binary_search_by(|error| error.shape.cmp(shape_name))
            .ok()
            .map(|index| &self.errors[index])
    }

    /// The code clients see for an error: the model's `error.code` where it
    /// has one (`LoadBalancerNotFound` for `LoadBalancerNotFoundException`),
    /// else the shape name itself.
    pub fn wire_code<'a>(&self, shape_name: &'a str) -> &'a str {
        match self.error(shape_name) {
            Some(error) => error.code.unwrap_or(shape_name),
            None => shape_name,
        }
    }
}

#[derive(Debug)]
pub struct Operation {
    pub name: &'static str,
    pub input: Option<ShapeId>,
    pub output: Option<ShapeId>,
    /// The element a Query response wraps its output in, e.g.
    /// `GetCallerIdentityResult`.
    pub result_wrapper: Option<&'static str>,
}

#[derive(Debug)]
pub struct Shape {
    pub name: &'static str,
    pub kind: Kind,
}

#[derive(Debug)]
pub enum Kind {
    Structure {
        members: &'static [Member],
    },
    List {
        member: ShapeId,
        /// The element name of each item; `member` unless the model says.
        member_name: Option<&'static str>,
        flattened: bool,
    },
    Map {
        key: ShapeId,
        value: ShapeId,
        key_name: Option<&'static str>,
        value_name: Option<&'static str>,
        flattened: bool,
    },
    String,
    Integer,
    Long,
    Double,
    Boolean,
    /// Seconds since the epoch in JSON, ISO 8601 in Query and XML.
    Timestamp,
    /// Base64 text.
    Blob,
}

#[derive(Debug)]
pub struct Member {
    /// The model's member name, which is the key in the decoded value.
    pub name: &'static str,
    pub shape: ShapeId,
    /// The name on the wire when it differs (`locationName`).
    pub location_name: Option<&'static str>,
    pub flattened: bool,
}

impl Member {
    pub fn wire_name(&self) -> &'static str {
        self.location_name.unwrap_or(self.name)
    }
}

#[derive(Debug)]
pub struct ErrorModel {
    pub shape: &'static str,
    /// `error.code` in the model, where it differs from the shape name.
    pub code: Option<&'static str>,
    pub status: u16,
    pub sender_fault: bool,
}
