//! Policy variables: `${aws:username}`, `${aws:PrincipalTag/team}`,
//! `${aws:username, 'nobody'}` and the escapes `${*}`, `${?}`, `${$}`.
//!
//! They are read in `Resource` elements and in string and ARN conditions of
//! `2012-10-17` documents (older documents treat `${...}` as text). A
//! variable is replaced by the value of that key in the request context; a
//! key the request lacks, or one with several values, leaves the element
//! unable to match unless the variable names a default. Substituted values
//! and escapes are literal characters, never wildcards.

use crate::context::RequestContext;
use crate::pattern::{Pattern, Token};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    Text(Vec<Token>),
    Variable {
        key_lower: String,
        default: Option<String>,
    },
}

/// A pattern that may depend on the request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Template {
    /// No variables: compiled once.
    Static(Pattern),
    Dynamic {
        pieces: Vec<Piece>,
        case_insensitive: bool,
    },
}

impl Template {
    /// `wildcards`: whether `*` and `?` in the text are wildcards.
    pub(crate) fn compile(
        text: &str,
        wildcards: bool,
        case_insensitive: bool,
        variables: bool,
    ) -> Self {
        if !variables || !text.contains("${") {
            return Template::Static(if wildcards {
                Pattern::new(text, case_insensitive)
            } else {
                Pattern::literal(text, case_insensitive)
            });
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            let Some(length) = rest[start..].find('}') else {
                break;
            };
            push_text(&mut pieces, &rest[..start], wildcards, case_insensitive);
            let inner = &rest[start + 2..start + length];
            match inner.trim() {
                escape @ ("*" | "?" | "$") => push_literal(&mut pieces, escape, case_insensitive),
                variable => pieces.push(read_variable(variable)),
            }
            rest = &rest[start + length + 1..];
        }
        push_text(&mut pieces, rest, wildcards, case_insensitive);
        if pieces.iter().all(|piece| matches!(piece, Piece::Text(_))) {
            let tokens = pieces
                .into_iter()
                .flat_map(|piece| match piece {
                    Piece::Text(tokens) => tokens,
                    Piece::Variable { .. } => Vec::new(),
                })
                .collect();
            return Template::Static(Pattern::from_tokens(tokens, case_insensitive));
        }
        Template::Dynamic {
            pieces,
            case_insensitive,
        }
    }

    /// The tokens to match with, variables replaced; `None` when a variable
    /// cannot be resolved.
    pub(crate) fn resolve(&self, context: &RequestContext) -> Option<Resolved<'_>> {
        match self {
            Template::Static(pattern) => Some(Resolved::Static(pattern)),
            Template::Dynamic {
                pieces,
                case_insensitive,
            } => {
                let mut tokens = Vec::new();
                for piece in pieces {
                    match piece {
                        Piece::Text(text) => tokens.extend_from_slice(text),
                        Piece::Variable { key_lower, default } => {
                            let value = match context.values_lower(key_lower) {
                                Some([one]) => one.as_str(),
                                _ => default.as_deref()?,
                            };
                            tokens.extend(literal_tokens(value, *case_insensitive));
                        }
                    }
                }
                Some(Resolved::Dynamic(Pattern::from_tokens(
                    tokens,
                    *case_insensitive,
                )))
            }
        }
    }
}

/// A template's pattern for one request.
pub(crate) enum Resolved<'a> {
    Static(&'a Pattern),
    Dynamic(Pattern),
}

impl Resolved<'_> {
    pub(crate) fn pattern(&self) -> &Pattern {
        match self {
            Resolved::Static(pattern) => pattern,
            Resolved::Dynamic(pattern) => pattern,
        }
    }
}

fn read_variable(inner: &str) -> Piece {
    let (key, default) = match inner.split_once(',') {
        Some((key, default)) => {
            let default = default.trim();
            let unquoted = default
                .strip_prefix('\'')
                .and_then(|d| d.strip_suffix('\''))
                .unwrap_or(default);
            (key.trim(), Some(unquoted.to_string()))
        }
        None => (inner, None),
    };
    Piece::Variable {
        key_lower: key.to_ascii_lowercase(),
        default,
    }
}

fn push_text(pieces: &mut Vec<Piece>, text: &str, wildcards: bool, case_insensitive: bool) {
    let pattern = if wildcards {
        Pattern::new(text, case_insensitive)
    } else {
        Pattern::literal(text, case_insensitive)
    };
    append(pieces, pattern.tokens().to_vec());
}

fn push_literal(pieces: &mut Vec<Piece>, text: &str, case_insensitive: bool) {
    append(pieces, literal_tokens(text, case_insensitive));
}

fn append(pieces: &mut Vec<Piece>, tokens: Vec<Token>) {
    if let Some(Piece::Text(last)) = pieces.last_mut() {
        last.extend(tokens);
    } else {
        pieces.push(Piece::Text(tokens));
    }
}

fn literal_tokens(text: &str, case_insensitive: bool) -> Vec<Token> {
    Pattern::literal(text, case_insensitive).tokens().to_vec()
}
