#![no_main]

use std::collections::BTreeMap;

use flotilla_metrics::math::{evaluate, parse, Context, MathError, Series, Value};
use libfuzzer_sys::fuzz_target;

struct Fixed;

fn series(offset: f64) -> Series {
    Series {
        label: "s".into(),
        points: (0..5).map(|i| (i * 60_000, i as f64 * 10.0 + offset)).collect::<BTreeMap<_, _>>(),
    }
}

impl Context for Fixed {
    fn value_of(&mut self, id: &str) -> Option<Value> {
        match id {
            "m1" => Some(Value::Series(series(0.0))),
            "m2" => Some(Value::Series(series(-20.0))),
            _ => None,
        }
    }
    fn metrics(&mut self) -> Vec<(String, Series)> {
        vec![("m1".into(), series(0.0)), ("m2".into(), series(-20.0))]
    }
    fn grid(&self) -> Vec<i64> {
        (0..6).map(|i| i * 60_000).collect()
    }
    fn period_s(&self) -> i64 {
        60
    }
    fn search(&mut self, _: &str, _: &str, _: i64, position: usize) -> Result<Vec<Series>, MathError> {
        Err(MathError::at(position, "no search"))
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(expr) = parse(text) {
            let _ = evaluate(&expr, &mut Fixed);
        }
    }
});
