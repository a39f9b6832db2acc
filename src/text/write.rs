//! Writes a document's state in the shape SDK clients read and stored documents
//! hold: blocks in id order as `[id, block]` pairs, then the Lamport clock and the
//! writing replica — byte for byte what the SDK's core writes for the same state.
//!
//! The document keeps what it last wrote ([`Written`]: the JSON, where each block's
//! element starts, which block it is). A merge that only added blocks after the
//! last one in id order (what a client typing at its clock writes) extends that
//! JSON instead of writing it all again, and a state resent with most of its
//! elements byte-identical to it is read by comparing bytes (`parse::parse_resent`).

use std::cmp::Ordering;
use std::sync::Arc;

use super::{Block, Id, State, TextDoc};

/// The JSON a document last wrote (or was read from), element by element.
#[derive(Clone, Default)]
pub(crate) struct Written {
    pub json: Arc<str>,
    /// Byte offset of each `[id, block]` element, in id order.
    pub starts: Vec<u32>,
    /// The block each element was written from.
    pub order: Vec<u32>,
    /// Offset of the `]` closing the blocks array.
    pub blocks_end: usize,
    /// The document's block count when written: blocks from here on are new.
    pub blocks: usize,
}

impl std::fmt::Debug for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Written({} bytes, {} blocks)",
            self.json.len(),
            self.blocks
        )
    }
}

impl Written {
    /// Element `k`'s bytes.
    pub fn element(&self, k: usize) -> &[u8] {
        let start = self.starts[k] as usize;
        let end = self
            .starts
            .get(k + 1)
            .map_or(self.blocks_end, |&s| s as usize - 1);
        self.json.as_bytes().get(start..end).unwrap_or_default()
    }
}

/// What changed since the document last wrote its JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SinceWrite {
    #[default]
    Nothing,
    /// Blocks were added (and the clock may have moved); none was changed.
    Appended,
    /// Blocks were split or deleted.
    Altered,
}

impl TextDoc {
    /// The state as JSON (written in full).
    pub fn to_json(&self) -> String {
        let mut order = self.id_order();
        let mut out = String::with_capacity(self.state.arena.len() + order.len() * 200 + 64);
        let mut starts = Vec::new();
        out.push_str("{\"blocks\":[");
        write_blocks(&self.state, &mut order, &mut out, &mut starts, false);
        write_trailer(&self.state, &mut out);
        out
    }

    /// The state as JSON, shared: what it last wrote when nothing changed since,
    /// that extended when blocks were only added at the end of the id order, else
    /// written in full. The document remembers it.
    pub fn write_json(&mut self) -> Arc<str> {
        let written = self.written.take();
        let since = std::mem::take(&mut self.since_write);
        let w = match (written, since) {
            (Some(w), SinceWrite::Nothing) => w,
            (Some(w), SinceWrite::Appended) => match self.extend(w) {
                Ok(w) => w,
                Err(()) => self.write_full(),
            },
            _ => self.write_full(),
        };
        let json = w.json.clone();
        self.written = Some(w);
        json
    }

    /// Take `json` as what the document last wrote if it is exactly that (a
    /// stored state read back); otherwise the document writes its own.
    pub fn adopt_json(&mut self, json: &Arc<str>) {
        self.since_write = SinceWrite::Altered;
        self.write_json();
        if let Some(w) = &mut self.written {
            if *w.json == **json {
                w.json = json.clone();
            }
        }
    }

    fn write_full(&self) -> Written {
        let mut order = self.id_order();
        let mut json = String::with_capacity(self.state.arena.len() + order.len() * 200 + 64);
        let mut starts = Vec::with_capacity(order.len());
        json.push_str("{\"blocks\":[");
        write_blocks(&self.state, &mut order, &mut json, &mut starts, false);
        let blocks_end = json.len();
        write_trailer(&self.state, &mut json);
        Written {
            json: Arc::from(json),
            starts,
            order,
            blocks_end,
            blocks: self.state.blocks.len(),
        }
    }

    /// `w` extended with the blocks added since, if they all follow its last
    /// element in id order and nothing else changed.
    fn extend(&self, w: Written) -> Result<Written, ()> {
        let st = &self.state;
        let mut added: Vec<u32> = (w.blocks as u32..st.blocks.len() as u32).collect();
        added.sort_unstable_by(|&a, &b| {
            cmp_ids(st, &st.blocks[a as usize].id, &st.blocks[b as usize].id)
        });
        if let (Some(&last), Some(&first)) = (w.order.last(), added.first()) {
            let (last, first) = (&st.blocks[last as usize].id, &st.blocks[first as usize].id);
            if cmp_ids(st, last, first) != Ordering::Less {
                return Err(());
            }
        }
        let Written {
            json: old,
            mut starts,
            mut order,
            blocks_end,
            ..
        } = w;
        let head = old.get(..blocks_end).ok_or(())?;
        let mut json = String::with_capacity(old.len() + added.len() * 240 + 64);
        json.push_str(head);
        drop(old);
        let first = order.is_empty();
        write_blocks(st, &mut added, &mut json, &mut starts, !first);
        order.extend(added);
        let blocks_end = json.len();
        write_trailer(st, &mut json);
        Ok(Written {
            json: Arc::from(json),
            starts,
            order,
            blocks_end,
            blocks: st.blocks.len(),
        })
    }
}

/// Ids in the order states are written: clock, client id (as a string), offset.
pub(crate) fn cmp_ids(st: &State, a: &Id, b: &Id) -> Ordering {
    a.clock
        .cmp(&b.clock)
        .then_with(|| st.clients[a.client as usize].cmp(&st.clients[b.client as usize]))
        .then(a.offset.cmp(&b.offset))
}

/// The blocks `order` names, as `[id, block]` elements (a comma first when
/// `comma`), recording where each starts.
fn write_blocks(
    st: &State,
    order: &mut [u32],
    out: &mut String,
    starts: &mut Vec<u32>,
    comma: bool,
) {
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
    for (k, &i) in order.iter().enumerate() {
        let b: &Block = &st.blocks[i as usize];
        if k > 0 || comma {
            out.push(',');
        }
        starts.push(out.len() as u32);
        out.push('[');
        push_id(out, &b.id);
        out.push_str(",{\"id\":");
        push_id(out, &b.id);
        out.push_str(",\"text\":");
        push_json_str(out, st.text_of(b));
        out.push_str(",\"left_origin\":");
        push_origin(out, &b.left);
        out.push_str(",\"right_origin\":");
        push_origin(out, &b.right);
        out.push_str(if b.deleted {
            ",\"deleted\":true}]"
        } else {
            ",\"deleted\":false}]"
        });
    }
}

/// `],"clock":{"value":n},"client_id":"…"}`.
fn write_trailer(st: &State, out: &mut String) {
    out.push_str("],\"clock\":{\"value\":");
    out.push_str(itoa::Buffer::new().format(st.clock));
    out.push_str("},\"client_id\":");
    push_json_str(out, &st.client_id);
    out.push('}');
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
