//! Fuzz target: a decoded message through the admission checks (depth, NUL, clocks)
//! and the parser. Checks the iterative depth/NUL walk against a plain recursive
//! one (safe here: serde_json stops parsing at 128 levels).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use synckit::{check_clocks, check_shape, decode_frame, ClientMessage, Refusal};

/// Levels of `v` below its parent (a scalar is 0, `[]` is 1).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let is_text = selector & 1 == 1;
    let max_depth = usize::from(selector >> 1) % 40 + 1;
    if is_text && std::str::from_utf8(bytes).is_err() {
        return;
    }
    let Ok(raw) = decode_frame(is_text, bytes) else {
        return;
    };
    let body = Value::Object(raw.body.clone());
    let expected_nul = has_nul(&body);
    let too_deep = depth(&body) > max_depth;
    match check_shape(&raw.body, max_depth) {
        Ok(()) => assert!(!expected_nul && !too_deep, "accepted a bad shape"),
        Err(refused) => {
            assert!(expected_nul || too_deep, "refused a good shape");
            match refused.reason {
                Refusal::Nul => assert!(expected_nul),
                Refusal::JsonDepth => assert!(too_deep),
                other => panic!("unexpected reason {other:?}"),
            }
        }
    }
    if let Ok(msg) = ClientMessage::parse(raw) {
        let _ = check_clocks(&msg, 1000);
    }
});
