#![no_main]

use flotilla_autoscaling::schedule::{parse, time_zone};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(schedule) = parse(text) {
            let after = 1_717_372_800_000;
            for zone in [None, Some("America/New_York")] {
                let zone = time_zone(zone).expect("a known zone");
                if let Some(next) = schedule.next_after(after, after, &zone) {
                    assert!(next > after);
                }
            }
        }
    }
});
