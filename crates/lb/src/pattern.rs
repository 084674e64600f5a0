//! The small matching languages of ELBv2 rules, pure: wildcard patterns
//! (`*` any run of characters, `?` exactly one), CIDR blocks, and the
//! `#{host}`-style placeholders of redirects.

use std::net::IpAddr;
use std::str::FromStr;

/// Whether `text` matches `pattern`, where `*` matches any run of bytes
/// (the empty one too) and `?` exactly one. ASCII letters compare without
/// case when `ignore_case` is set; ELBv2 matches host names, header values
/// and query strings that way and paths and methods exactly.
pub fn wildcard_match(pattern: &[u8], text: &[u8], ignore_case: bool) -> bool {
    let same = |p: u8, t: u8| {
        if ignore_case {
            p.eq_ignore_ascii_case(&t)
        } else {
            p == t
        }
    };
    // Greedy with one backtrack point: the last `*` seen and where in the
    // text it started matching. Linear in practice, O(n·m) at worst, and the
    // pattern is at most 128 bytes.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len()
            && (pattern[p] == b'?' || (pattern[p] != b'*' && same(pattern[p], text[t])))
        {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// An IPv4 or IPv6 network, as source-ip conditions name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_bits: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (address, bits) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} has no /prefix"))?;
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IP address"))?;
        let prefix_bits: u8 = bits
            .parse()
            .map_err(|_| format!("{bits:?} is not a prefix length"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        if prefix_bits > max {
            return Err(format!("prefix /{prefix_bits} is longer than {max} bits"));
        }
        Ok(Cidr {
            network,
            prefix_bits,
        })
    }
}

impl Cidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        // A client on an IPv6 socket may appear as ::ffff:a.b.c.d.
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_bits))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_bits))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// The names a redirect may reuse from the request.
const PLACEHOLDERS: [&str; 5] = ["protocol", "host", "port", "path", "query"];

/// Checks that every `#{...}` in a redirect field is one ELBv2 knows.
pub fn check_placeholders(value: &str) -> Result<(), String> {
    let mut rest = value;
    while let Some(start) = rest.find("#{") {
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "a #{ placeholder is not closed".to_owned())?;
        let name = &after[..end];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder #{{{name}}}; known are #{{protocol}}, #{{host}}, #{{port}}, #{{path}} and #{{query}}"
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// What a redirect's placeholders stand for in one request. `path` is the
/// request's path without its leading `/`, as ELBv2 defines `#{path}`.
pub struct RequestParts<'a> {
    pub protocol: &'a str,
    pub host: &'a str,
    pub port: &'a str,
    pub path: &'a str,
    pub query: &'a str,
}

/// Replaces each placeholder in `template` with the request's part.
pub fn render_placeholders(template: &str, parts: &RequestParts<'_>) -> String {
    let mut out = String::with_capacity(template.len() + parts.path.len());
    let mut rest = template;
    while let Some(start) = rest.find("#{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        match &after[..end] {
            "protocol" => out.push_str(parts.protocol),
            "host" => out.push_str(parts.host),
            "port" => out.push_str(parts.port),
            "path" => out.push_str(parts.path),
            "query" => out.push_str(parts.query),
            other => {
                out.push_str("#{");
                out.push_str(other);
                out.push('}');
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The key/value pairs of a query string, percent-decoded. A parameter
/// without `=` has an empty value.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let decode = |text: &str| {
                percent_encoding::percent_decode_str(text)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(key), decode(value))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_elbv2() {
        let cases: &[(&str, &str, bool, bool)] = &[
            // pattern, text, ignore case, matches
            ("*.example.com", "api.example.com", true, true),
            ("*.example.com", "example.com", true, false),
            ("*.example.com", "API.Example.COM", true, true),
            ("*.example.com", "API.Example.COM", false, false),
            ("api?.example.com", "api1.example.com", true, true),
            ("api?.example.com", "api.example.com", true, false),
            ("api?.example.com", "api12.example.com", true, false),
            ("/img/*", "/img/a/b.png", false, true),
            ("/img/*", "/IMG/a.png", false, false),
            ("/img/*", "/img/", false, true),
            ("/img/*", "/img", false, false),
            ("*", "", false, true),
            ("", "", false, true),
            ("", "a", false, false),
            ("a*b*c", "abc", false, true),
            ("a*b*c", "aXbYbZc", false, true),
            ("a*b*c", "aXbYcZ", false, false),
            ("*?", "", false, false),
            ("*?", "x", false, true),
            ("**a", "bbba", false, true),
            ("/api/v?/*", "/api/v2/users", false, true),
        ];
        for &(pattern, text, ignore_case, expected) in cases {
            assert_eq!(
                wildcard_match(pattern.as_bytes(), text.as_bytes(), ignore_case),
                expected,
                "{pattern:?} against {text:?} (ignore case {ignore_case})"
            );
        }
    }

    #[test]
    fn cidr_blocks_match_their_addresses() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.1.2.3", false),
            ("192.168.1.7/32", "192.168.1.7", true),
            ("192.168.1.7/32", "192.168.1.8", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("2001:db8::/32", "2001:db8::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("10.0.0.0/8", "2001:db8::1", false),
        ];
        for &(cidr, address, expected) in cases {
            let cidr: Cidr = cidr.parse().expect("valid cidr");
            assert_eq!(
                cidr.contains(address.parse().expect("ip")),
                expected,
                "{cidr:?} {address}"
            );
        }
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn placeholders_render_and_unknown_ones_are_refused() {
        let parts = RequestParts {
            protocol: "http",
            host: "example.com",
            port: "80",
            path: "a/b",
            query: "x=1",
        };
        assert_eq!(render_placeholders("/new/#{path}", &parts), "/new/a/b");
        assert_eq!(
            render_placeholders("#{host}:#{port}", &parts),
            "example.com:80"
        );
        assert_eq!(render_placeholders("#{query}&y=2", &parts), "x=1&y=2");
        assert!(check_placeholders("/#{path}?#{query}").is_ok());
        assert!(check_placeholders("/#{paths}").is_err());
        assert!(check_placeholders("/#{path").is_err());
    }

    #[test]
    fn query_pairs_are_decoded() {
        let pairs: Vec<_> = query_pairs("a=1&b=%20x&flag&&c=").collect();
        assert_eq!(
            pairs,
            [
                ("a".into(), "1".into()),
                ("b".into(), " x".into()),
                ("flag".into(), "".into()),
                ("c".into(), "".into())
            ]
        );
    }
}
