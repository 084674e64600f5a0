//! CloudWatch Logs filter patterns arrive in FilterLogEvents from any caller:
//! parsing must answer `Ok` or `Err` for any text and never panic, and a
//! parsed pattern must match any message without panicking.
//!
//! Input layout: the text up to the first NUL byte is the pattern, the rest
//! is a message (the message is also tried as JSON through the selectors).

#![no_main]

use flotilla_logs::Pattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (pattern, message) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let (Ok(pattern), Ok(message)) = (std::str::from_utf8(pattern), std::str::from_utf8(message))
    else {
        return;
    };
    if let Ok(parsed) = Pattern::parse(pattern) {
        let _ = parsed.matches(message);
        let _ = parsed.matches(r#"{"level":"error","a":{"b":[1,2,{"c":null}]},"n":-3.5e2}"#);
    }
});
