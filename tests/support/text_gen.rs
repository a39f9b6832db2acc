//! SyncText states as SDK clients write them, generated fast enough for 100,000
//! blocks in a debug build: one copy, included with `#[path]` by the text engine's
//! benchmark (examples/text_bench.rs), its wire tests (tests/it/wire_text.rs) and
//! its unit tests (src/text/tests.rs). Each user takes what it needs.
#![allow(dead_code, unreachable_pub)]

/// `n` characters typed one at a time by `client` (each its own block whose left
/// origin is the previous one), byte for byte what the SDK writes.
pub fn typing(client: &str, n: u64) -> String {
    typing_with_deleted(client, n, &[])
}

/// [`typing`] with the characters at `deleted` clocks deleted (a tombstone each,
/// as the SDK writes a deleted one-character block).
pub fn typing_with_deleted(client: &str, n: u64, deleted: &[u64]) -> String {
    let mut s = String::with_capacity(n as usize * 240);
    s.push_str("{\"blocks\":[");
    for clock in 1..=n {
        if clock > 1 {
            s.push(',');
        }
        let id = format!("{{\"client_id\":\"{client}\",\"clock\":{clock},\"offset\":0}}");
        let left = if clock == 1 {
            "null".to_owned()
        } else {
            format!(
                "{{\"client_id\":\"{client}\",\"clock\":{},\"offset\":0}}",
                clock - 1
            )
        };
        let del = deleted.contains(&clock);
        s.push_str(&format!(
            "[{id},{{\"id\":{id},\"text\":\"x\",\"left_origin\":{left},\"right_origin\":null,\"deleted\":{del}}}]"
        ));
    }
    s.push_str(&format!(
        "],\"clock\":{{\"value\":{n}}},\"client_id\":\"{client}\"}}"
    ));
    s
}

/// One character typed by `editor` at clock `clock`, between characters `at`
/// and `at + 1` of `client`'s [`typing`]: the state of a client that has just
/// typed it, holding only the new block.
pub fn one_char_edit(editor: &str, clock: u64, client: &str, at: u64) -> String {
    format!(
        "{{\"blocks\":[[{{\"client_id\":\"{editor}\",\"clock\":{clock},\"offset\":0}},{{\"id\":{{\"client_id\":\"{editor}\",\"clock\":{clock},\"offset\":0}},\"text\":\"y\",\"left_origin\":{{\"client_id\":\"{client}\",\"clock\":{at},\"offset\":0}},\"right_origin\":{{\"client_id\":\"{client}\",\"clock\":{r},\"offset\":0}},\"deleted\":false}}]],\"clock\":{{\"value\":{clock}}},\"client_id\":\"{editor}\"}}",
        r = at + 1
    )
}
