//! The SyncText (Fugue) text engine: the state format SDK clients exchange, parsed
//! into a compact structure, validated, merged and written back (README "Text
//! engine").
//!
//! One purpose per module: `parse` reads the JSON, `validate` checks a state
//! before it touches a document, `merge` unions two states, `order` computes
//! the document order (the visible text), `write` serialises (and keeps what it
//! wrote, so a resent state is read by comparing bytes). Nothing here
//! recurses on untrusted input, and every pass is O(n log n) or better.

mod error;
mod merge;
mod order;
mod parse;
mod validate;
mod write;

use std::collections::BTreeMap;

pub use error::TextError;
pub use merge::MergeSummary;
pub use parse::parse;

/// A state's JSON, shared by the document, the relay and the storage queue.
/// `Arc<String>` rather than `Arc<str>`: a freshly written state (tens of
/// megabytes for a large document) becomes shared without being copied.
pub type StateJson = std::sync::Arc<String>;

/// The hash map of the engine's indexes (src/hash.rs: foldhash, seeded per process).
pub(crate) type Map<K, V> = crate::hash::FastMap<K, V>;

/// The largest clock, offset or Lamport value accepted: 2^53 − 1, the largest
/// integer a JavaScript client represents exactly.
pub(crate) const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Default `SYNCKIT_MAX_TEXT_BLOCKS`: twice a 100,000-block document (a few pages
/// of text with its edit history).
pub(crate) const DEFAULT_MAX_TEXT_BLOCKS: usize = 200_000;

/// Default `SYNCKIT_MAX_TEXT_STATE_BYTES` (64 MiB): a 100,000-block state is about
/// 23 MB, each block ~230 bytes of JSON.
pub(crate) const DEFAULT_MAX_TEXT_STATE_BYTES: usize = 64 << 20;

/// Default `SYNCKIT_MAX_TEXT_MESSAGE_BYTES` (80 MiB): the state is a JSON string
/// inside the message, its quotes escaped (~12% more), plus the envelope.
pub(crate) const DEFAULT_MAX_TEXT_MESSAGE_BYTES: usize = 80 << 20;

/// Bounds on one text state and on a document's merged state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Blocks in one incoming state, and blocks a merge may leave in a document.
    pub max_blocks: usize,
    /// Bytes of one incoming state's JSON.
    pub max_state_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_blocks: DEFAULT_MAX_TEXT_BLOCKS,
            max_state_bytes: DEFAULT_MAX_TEXT_STATE_BYTES,
        }
    }
}

/// A character position: `{client_id, clock, offset}` with the client interned.
/// A block's id names its last character; the block covers the clocks
/// `clock - len + 1 ..= clock` of its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Id {
    pub(crate) client: u32,
    pub(crate) clock: u64,
    pub(crate) offset: u64,
}

/// One block: a run of characters one insert produced, with its Fugue origins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) id: Id,
    /// Grapheme clusters in the text: the number of clocks the block covers.
    pub(crate) len: u64,
    /// Byte range of the text in the state's text arena.
    text_start: u32,
    text_bytes: u32,
    pub(crate) left: Option<Id>,
    pub(crate) right: Option<Id>,
    pub(crate) deleted: bool,
}

impl Block {
    /// The first clock the block covers (≥ 1 once validated).
    pub(crate) fn start(&self) -> u64 {
        self.id.clock + 1 - self.len
    }
}

/// A parsed text state: blocks in arrival order, client ids interned, all text in
/// one arena (a block holds a byte range of it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub(crate) clients: Vec<String>,
    pub(crate) blocks: Vec<Block>,
    arena: String,
    /// The Lamport clock (`clock.value`).
    pub(crate) clock: u64,
    /// The replica that wrote the state (`client_id`).
    pub(crate) client_id: String,
}

impl State {
    pub(crate) fn text_of(&self, b: &Block) -> &str {
        let start = b.text_start as usize;
        self.arena
            .get(start..start + b.text_bytes as usize)
            .unwrap_or_default()
    }

    /// `client@clock:offset`, for error messages.
    pub(crate) fn describe(&self, id: &Id) -> String {
        let client = self
            .clients
            .get(id.client as usize)
            .map_or("?", String::as_str);
        format!("{client}@{}:{}", id.clock, id.offset)
    }
}

/// A document's text: a validated [`State`] with the indexes merges need.
#[derive(Debug, Clone, Default)]
pub struct TextDoc {
    pub(crate) state: State,
    /// `(client, last clock)` → block index. Unique: a client's blocks never overlap.
    by_end: Map<(u32, u64), u32>,
    /// `(client, first clock)` → block index, for "which block holds this clock".
    by_start: BTreeMap<(u32, u64), u32>,
    /// Client id → interned index.
    client_index: Map<String, u32>,
    /// The JSON last written (or read back), and what changed since.
    pub(crate) written: Option<write::Written>,
    since_write: write::SinceWrite,
    /// Blocks changed in place (split, deleted, re-cut) since the JSON was written.
    pub(crate) touched: Vec<u32>,
    /// The large JSON written before the last one, kept so the next write
    /// reuses its buffer once no reader holds it any more: writing a 25 MB state
    /// into pages already mapped is about three times faster than into a fresh
    /// allocation, whose every page faults (README "Text engine").
    spare: write::Spare,
}

impl TextDoc {
    /// A document holding `state`, checked as a merge into an empty document is:
    /// every origin must name a character of the state itself.
    pub fn from_state(state: State, limits: &Limits) -> Result<TextDoc, TextError> {
        let mut doc = TextDoc {
            state: State {
                client_id: state.client_id.clone(),
                clock: state.clock,
                ..State::default()
            },
            ..TextDoc::default()
        };
        doc.merge(state, limits)?;
        Ok(doc)
    }

    pub(crate) fn block_count(&self) -> usize {
        self.state.blocks.len()
    }

    /// The block holding `clock` of `client`, if any.
    fn containing(&self, client: u32, clock: u64) -> Option<u32> {
        // Origins mostly name a block's last character: one hash lookup.
        if let Some(&i) = self.by_end.get(&(client, clock)) {
            return Some(i);
        }
        let (_, &i) = self
            .by_start
            .range((client, 0)..=(client, clock))
            .next_back()?;
        let b = &self.state.blocks[i as usize];
        (b.id.clock >= clock).then_some(i)
    }

    /// Whether any block of `client` covers a clock in `start..=end`.
    pub(crate) fn overlaps(&self, client: u32, start: u64, end: u64) -> bool {
        if self.by_end.contains_key(&(client, end)) {
            return true;
        }
        self.by_start
            .range((client, 0)..=(client, end))
            .next_back()
            .is_some_and(|(_, &i)| self.state.blocks[i as usize].id.clock >= start)
    }

    fn index_block(&mut self, i: u32) {
        let b = self.state.blocks[i as usize];
        self.by_end.insert((b.id.client, b.id.clock), i);
        self.by_start.insert((b.id.client, b.start()), i);
    }
}

/// Grapheme clusters in `s`: what a block's length counts (clock values it uses).
fn grapheme_len(s: &str) -> usize {
    if plain_ascii(s) {
        return s.len();
    }
    unicode_segmentation::UnicodeSegmentation::graphemes(s, true).count()
}

/// Byte index of the boundary after the first `n` grapheme clusters of `s`.
fn grapheme_byte_offset(s: &str, n: u64) -> usize {
    if plain_ascii(s) {
        return (n as usize).min(s.len());
    }
    unicode_segmentation::UnicodeSegmentation::graphemes(s, true)
        .take(n as usize)
        .map(str::len)
        .sum()
}

/// ASCII without CR: one byte per grapheme cluster ("\r\n" is a single cluster).
fn plain_ascii(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii() && b != b'\r')
}

#[cfg(test)]
mod tests;
