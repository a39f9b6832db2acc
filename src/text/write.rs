//! Writes a document's state in the shape SDK clients read and stored documents
//! hold: blocks in id order as `[id, block]` pairs, then the Lamport clock and the
//! writing replica — byte for byte what the SDK's core writes for the same state.
//!
//! The document keeps what it last wrote ([`Written`]: the JSON, where each block's
//! element starts, which block it is). After a merge only the blocks it added or
//! changed are written; the elements of the others are copied from that JSON, in
//! runs. A state resent with most of its elements byte-identical to it is read by
//! comparing bytes (`parse::parse_resent`).

use std::cmp::Ordering;
use std::sync::Arc;

use super::{Block, Id, State, StateJson, TextDoc};

/// A replaced JSON this large is kept for the next write to reuse
/// (`TextDoc::spare`): about where the allocator stops reusing freed memory and
/// maps fresh pages for each allocation.
const SPARE_MIN_BYTES: usize = 256 * 1024;

/// A buffer kept for the next write (`TextDoc::spare`).
#[derive(Clone, Default)]
pub(crate) struct Spare(Option<StateJson>);

impl std::fmt::Debug for Spare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = self.0.as_ref().map_or(0, |s| s.capacity());
        write!(f, "Spare({bytes} bytes)")
    }
}

/// The JSON a document last wrote (or was read from), element by element.
#[derive(Clone, Default)]
pub(crate) struct Written {
    pub(crate) json: StateJson,
    /// Byte offset of each `[id, block]` element, in id order.
    pub(crate) starts: Vec<u32>,
    /// The block each element was written from.
    pub(crate) order: Vec<u32>,
    /// Offset of the `]` closing the blocks array.
    pub(crate) blocks_end: usize,
    /// The document's block count when written: blocks from here on are new.
    pub(crate) blocks: usize,
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
    pub(crate) fn element(&self, k: usize) -> &[u8] {
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
        let mut out = Out::new(
            &self.state,
            self.state.arena.len() + self.state.blocks.len() * 200 + 64,
            String::new(),
        );
        for i in self.id_order() {
            out.block(i);
        }
        out.finish().json
    }

    /// The state as JSON, shared: what it last wrote when nothing changed since,
    /// else that with the blocks added or changed since written in. The document
    /// remembers it.
    pub fn write_json(&mut self) -> StateJson {
        let written = self.written.take();
        let since = std::mem::take(&mut self.since_write);
        let touched = std::mem::take(&mut self.touched);
        let w = match (written, since) {
            (Some(w), SinceWrite::Nothing) => w,
            (Some(w), _) => {
                let buffer = self.take_spare();
                let new = self.rewrite(&w, touched, buffer);
                self.keep_spare(w.json);
                new
            }
            (None, _) => {
                let buffer = self.take_spare();
                self.write_full(buffer)
            }
        };
        let json = w.json.clone();
        self.written = Some(w);
        json
    }

    /// Take `json` as what the document last wrote if it is exactly that (a
    /// stored state read back); otherwise the document writes its own.
    pub(crate) fn adopt_json(&mut self, json: &StateJson) {
        self.written = None;
        self.write_json();
        let ours = match &mut self.written {
            Some(w) if *w.json == **json => Some(std::mem::replace(&mut w.json, json.clone())),
            _ => None,
        };
        // Our own copy is nobody else's: the next write reuses it.
        if let Some(ours) = ours {
            self.keep_spare(ours);
        }
    }

    /// The spare buffer, emptied, when no reader holds it any more.
    fn take_spare(&mut self) -> String {
        match self.spare.0.take().map(Arc::try_unwrap) {
            Some(Ok(mut buffer)) => {
                buffer.clear();
                buffer
            }
            // Still shared (a reader, the write queue): it goes when they are done.
            Some(Err(_)) | None => String::new(),
        }
    }

    /// Keep a JSON just replaced for the next write when it is large (a small
    /// state costs little to allocate, and the buffer would only hold memory).
    fn keep_spare(&mut self, json: StateJson) {
        if json.capacity() >= SPARE_MIN_BYTES {
            self.spare.0 = Some(json);
        }
    }

    fn write_full(&self, buffer: String) -> Written {
        let order = self.id_order();
        let capacity = self.state.arena.len() + order.len() * 200 + 64;
        let mut out = Out::new(&self.state, capacity, buffer);
        for i in order {
            out.block(i);
        }
        out.finish().written(self.state.blocks.len())
    }

    /// `w` with the blocks added since (from index `w.blocks` on) and the
    /// `touched` ones written in at their place in the id order, the others'
    /// elements copied from `w` in runs. Untouched blocks kept their ids, so
    /// their order among themselves is `w`'s.
    fn rewrite(&self, w: &Written, touched: Vec<u32>, buffer: String) -> Written {
        let st = &self.state;
        let elements = w.order.len();
        let mut position = vec![u32::MAX; w.blocks];
        for (k, &b) in w.order.iter().enumerate() {
            if let Some(p) = position.get_mut(b as usize) {
                *p = k as u32;
            }
        }
        let mut skip: Vec<u32> = touched
            .iter()
            .filter_map(|&b| position.get(b as usize).copied())
            .filter(|&p| p != u32::MAX)
            .collect();
        skip.sort_unstable();
        skip.dedup();
        let mut added: Vec<u32> = touched
            .into_iter()
            .filter(|&b| (b as usize) < w.blocks)
            .chain(w.blocks as u32..st.blocks.len() as u32)
            .collect();
        added.sort_unstable();
        added.dedup();
        let id = |b: u32| &st.blocks[b as usize].id;
        added.sort_unstable_by(|&a, &b| cmp_ids(st, id(a), id(b)));
        let mut out = Out::new(st, w.json.len() + added.len() * 240 + 64, buffer);
        let (mut k, mut a, mut s) = (0usize, 0usize, 0usize);
        loop {
            let next_skip = skip.get(s).map_or(elements, |&p| p as usize);
            // Untouched elements k..next_skip are in id order: the next added
            // block goes before the first of them with a greater id.
            let ins = match added.get(a) {
                Some(&b) => {
                    k + w.order[k..next_skip]
                        .partition_point(|&o| cmp_ids(st, id(o), id(b)) == Ordering::Less)
                }
                None => next_skip,
            };
            out.copy(w, k, ins);
            k = ins;
            if ins < next_skip || (ins == elements && a < added.len()) {
                out.block(added[a]);
                a += 1;
            } else if next_skip < elements {
                k += 1;
                s += 1;
            } else {
                break;
            }
        }
        out.finish().written(st.blocks.len())
    }
}

/// A state being written: the JSON, where each element starts, in which order.
struct Out<'a> {
    st: &'a State,
    /// Each client id escaped once: `{"client_id":"…","clock":`.
    heads: Vec<String>,
    json: String,
    starts: Vec<u32>,
    order: Vec<u32>,
}

impl<'a> Out<'a> {
    /// `json` is an empty buffer to write into (perhaps one already allocated).
    fn new(st: &'a State, capacity: usize, mut json: String) -> Out<'a> {
        let heads = st
            .clients
            .iter()
            .map(|c| {
                let mut h = String::from("{\"client_id\":");
                push_json_str(&mut h, c);
                h.push_str(",\"clock\":");
                h
            })
            .collect();
        json.reserve(capacity);
        json.push_str("{\"blocks\":[");
        Out {
            st,
            heads,
            json,
            starts: Vec::new(),
            order: Vec::new(),
        }
    }

    fn separate(&mut self) {
        if !self.starts.is_empty() {
            self.json.push(',');
        }
    }

    /// Elements `from..to` of `w`, copied.
    fn copy(&mut self, w: &Written, from: usize, to: usize) {
        if from >= to {
            return;
        }
        let begin = w.starts[from] as usize;
        let end = w.starts.get(to).map_or(w.blocks_end, |&s| s as usize - 1);
        self.separate();
        let at = self.json.len();
        self.json
            .push_str(w.json.get(begin..end).unwrap_or_default());
        self.starts.extend(
            w.starts[from..to]
                .iter()
                .map(|&s| (s as usize - begin + at) as u32),
        );
        self.order.extend_from_slice(&w.order[from..to]);
    }

    /// Block `i` as a `[id, block]` element.
    fn block(&mut self, i: u32) {
        self.separate();
        self.starts.push(self.json.len() as u32);
        self.order.push(i);
        let b: &Block = &self.st.blocks[i as usize];
        let out = &mut self.json;
        let heads = &self.heads;
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
        out.push('[');
        push_id(out, &b.id);
        out.push_str(",{\"id\":");
        push_id(out, &b.id);
        out.push_str(",\"text\":");
        push_json_str(out, self.st.text_of(b));
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

    /// `],"clock":{"value":n},"client_id":"…"}`.
    fn finish(mut self) -> Finished {
        let blocks_end = self.json.len();
        self.json.push_str("],\"clock\":{\"value\":");
        self.json
            .push_str(itoa::Buffer::new().format(self.st.clock));
        self.json.push_str("},\"client_id\":");
        push_json_str(&mut self.json, &self.st.client_id);
        self.json.push('}');
        Finished {
            json: self.json,
            starts: self.starts,
            order: self.order,
            blocks_end,
        }
    }
}

/// A written state and the record of its elements.
struct Finished {
    json: String,
    starts: Vec<u32>,
    order: Vec<u32>,
    blocks_end: usize,
}

impl Finished {
    fn written(self, blocks: usize) -> Written {
        Written {
            json: Arc::new(self.json),
            starts: self.starts,
            order: self.order,
            blocks_end: self.blocks_end,
            blocks,
        }
    }
}

/// Ids in the order states are written: clock, client id (as a string), offset.
fn cmp_ids(st: &State, a: &Id, b: &Id) -> Ordering {
    a.clock
        .cmp(&b.clock)
        .then_with(|| st.clients[a.client as usize].cmp(&st.clients[b.client as usize]))
        .then(a.offset.cmp(&b.offset))
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
