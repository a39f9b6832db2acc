//! Writes a document's state in the shape SDK clients read and stored documents
//! hold: blocks in id order as `[id, block]` pairs, then the Lamport clock and the
//! writing replica — byte for byte what the SDK's core writes for the same state.

use super::{Id, TextDoc};

impl TextDoc {
    /// The state as JSON.
    pub fn to_json(&self) -> String {
        let st = &self.state;
        // Each client id escaped once: `{"client_id":"…","clock":`.
        let heads: Vec<String> = st
            .clients
            .iter()
            .map(|c| {
                let mut h = String::from("{\"client_id\":");
                push_json_str(&mut h, c);
                h.push_str(",\"clock\":");
                h
            })
            .collect();
        let push_id = |out: &mut String, id: &Id| {
            out.push_str(&heads[id.client as usize]);
            let mut n = itoa::Buffer::new();
            out.push_str(n.format(id.clock));
            out.push_str(",\"offset\":");
            out.push_str(n.format(id.offset));
            out.push('}');
        };
        let push_origin = |out: &mut String, id: &Option<Id>| match id {
            Some(id) => push_id(out, id),
            None => out.push_str("null"),
        };
        let mut out = String::with_capacity(st.arena.len() + st.blocks.len() * 200 + 64);
        out.push_str("{\"blocks\":[");
        for (k, &i) in self.id_order().iter().enumerate() {
            let b = &st.blocks[i as usize];
            if k > 0 {
                out.push(',');
            }
            out.push('[');
            push_id(&mut out, &b.id);
            out.push_str(",{\"id\":");
            push_id(&mut out, &b.id);
            out.push_str(",\"text\":");
            push_json_str(&mut out, st.text_of(b));
            out.push_str(",\"left_origin\":");
            push_origin(&mut out, &b.left);
            out.push_str(",\"right_origin\":");
            push_origin(&mut out, &b.right);
            out.push_str(if b.deleted {
                ",\"deleted\":true}]"
            } else {
                ",\"deleted\":false}]"
            });
        }
        out.push_str("],\"clock\":{\"value\":");
        out.push_str(itoa::Buffer::new().format(st.clock));
        out.push_str("},\"client_id\":");
        push_json_str(&mut out, &st.client_id);
        out.push('}');
        out
    }
}

/// `s` as a JSON string, escaped as serde_json escapes it.
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    match serde_json::to_string(s) {
        Ok(escaped) => out.push_str(&escaped),
        // Unreachable for a `str`; keep the output valid JSON regardless.
        Err(_) => out.push_str("\"\""),
    }
}
