//! Wildcard patterns: `*` matches any run of characters, `?` exactly one.
//!
//! A pattern compiles once into tokens; matching walks the text without
//! allocating. Case-insensitive patterns are stored lowercased and compare
//! ASCII letters without regard to case; text with other letters is lowered
//! once before matching, so `Ä` and `ä` are equal too.

/// One element of a compiled pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    Byte(u8),
    /// `*`: any run of characters, including none.
    Star,
    /// `?`: exactly one character (not one byte).
    One,
}

/// A compiled wildcard pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Box<[Token]>,
    case_insensitive: bool,
    shape: Shape,
}

/// Shapes common enough to answer without the general matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `*` alone.
    Any,
    /// No wildcard at all.
    Literal,
    /// Literal bytes then one trailing `*` (`ecs:Describe*`).
    Prefix,
    General,
}

impl Pattern {
    /// `*` and `?` are wildcards.
    pub fn new(text: &str, case_insensitive: bool) -> Self {
        Self::from_tokens(tokens_of(text, case_insensitive, true), case_insensitive)
    }

    /// Every character stands for itself (`StringEquals` and its kin).
    pub fn literal(text: &str, case_insensitive: bool) -> Self {
        Self::from_tokens(tokens_of(text, case_insensitive, false), case_insensitive)
    }

    pub(crate) fn from_tokens(tokens: Vec<Token>, case_insensitive: bool) -> Self {
        let stars = tokens.iter().filter(|t| **t == Token::Star).count();
        let ones = tokens.iter().filter(|t| **t == Token::One).count();
        let shape = match (stars, ones) {
            (1, 0) if tokens.len() == 1 => Shape::Any,
            (0, 0) => Shape::Literal,
            (1, 0) if tokens.last() == Some(&Token::Star) => Shape::Prefix,
            _ => Shape::General,
        };
        Pattern {
            tokens: tokens.into_boxed_slice(),
            case_insensitive,
            shape,
        }
    }

    pub(crate) fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Whether this pattern is `*` alone.
    pub fn matches_everything(&self) -> bool {
        self.shape == Shape::Any
    }

    pub fn matches(&self, text: &str) -> bool {
        if self.shape == Shape::Any {
            return true;
        }
        if self.case_insensitive && !text.is_ascii() {
            return self.matches_bytes(text.to_lowercase().as_bytes());
        }
        self.matches_bytes(text.as_bytes())
    }

    fn matches_bytes(&self, text: &[u8]) -> bool {
        let fold = self.case_insensitive;
        match self.shape {
            Shape::Any => true,
            Shape::Literal => {
                text.len() == self.tokens.len()
                    && self
                        .tokens
                        .iter()
                        .zip(text)
                        .all(|(t, b)| byte_eq(*t, *b, fold))
            }
            Shape::Prefix => {
                let literal = &self.tokens[..self.tokens.len() - 1];
                text.len() >= literal.len()
                    && literal.iter().zip(text).all(|(t, b)| byte_eq(*t, *b, fold))
            }
            Shape::General => wildcard_match(&self.tokens, text, fold),
        }
    }
}

fn tokens_of(text: &str, case_insensitive: bool, wildcards: bool) -> Vec<Token> {
    let folded;
    let text = if case_insensitive {
        folded = text.to_lowercase();
        folded.as_str()
    } else {
        text
    };
    text.bytes()
        .map(|b| match b {
            b'*' if wildcards => Token::Star,
            b'?' if wildcards => Token::One,
            other => Token::Byte(other),
        })
        .collect()
}

fn byte_eq(token: Token, byte: u8, fold: bool) -> bool {
    match token {
        Token::Byte(expected) if fold => expected == byte.to_ascii_lowercase(),
        Token::Byte(expected) => expected == byte,
        _ => false,
    }
}

/// The length in bytes of the UTF-8 character starting with `first`.
fn char_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Greedy matching with one backtrack point: the classic linear-space
/// algorithm, quadratic at worst, never recursive.
pub(crate) fn wildcard_match(tokens: &[Token], text: &[u8], fold: bool) -> bool {
    let (mut t, mut s) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while s < text.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                backtrack = Some((t, s));
                t += 1;
                continue;
            }
            Some(Token::One) => {
                t += 1;
                s += char_len(text[s]);
                continue;
            }
            Some(token) if byte_eq(*token, text[s], fold) => {
                t += 1;
                s += 1;
                continue;
            }
            _ => {}
        }
        match backtrack {
            Some((star, from)) => {
                let next = from + char_len(text[from]);
                backtrack = Some((star, next));
                t = star + 1;
                s = next;
            }
            None => return false,
        }
    }
    s == text.len()
        && tokens[t.min(tokens.len())..]
            .iter()
            .all(|token| *token == Token::Star)
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    #[test]
    fn wildcards() {
        let cases = [
            ("*", "", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbb", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "aéc", true),
            ("*a*b*", "xxaxxbxx", true),
            ("*a*b*", "xxbxxaxx", false),
            ("ecs:Describe*", "ecs:DescribeTasks", true),
            ("ecs:Describe*", "ecs:Describ", false),
            ("arn:*:task/*/abc", "arn:x:task/c1/abc", true),
            ("", "", true),
            ("", "a", false),
            ("**", "abc", true),
            ("?*", "", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Pattern::new(pattern, false).matches(text),
                expected,
                "{pattern} vs {text}"
            );
        }
    }

    #[test]
    fn case_rules() {
        assert!(Pattern::new("ecs:run*", true).matches("ECS:RunTask"));
        assert!(!Pattern::new("ecs:run*", false).matches("ECS:RunTask"));
        assert!(Pattern::literal("ÄB", true).matches("äb"));
        assert!(!Pattern::literal("a*", false).matches("abc"));
        assert!(Pattern::literal("a*", false).matches("a*"));
    }
}
