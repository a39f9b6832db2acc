//! Reassembly of `delta_batch_chunk` sets, with bounds: ids like document ids, at
//! most 1000 chunks per set, 16 open sets per connection, one byte budget (the message limit) shared by all of
//! a connection's open sets, and sets dropped 30 s after their first chunk — checked
//! on every chunk and by the session's timer, so an idle connection's sets go too.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use tokio::time::Instant;

use crate::protocol::message::ChunkMessage;

const MAX_CHUNKS_PER_SET: u64 = 1000;
const MAX_OPEN_SETS: usize = 16;
const SET_TTL: Duration = Duration::from_secs(30);

struct ChunkSet {
    slots: Vec<Option<Vec<u8>>>,
    filled: usize,
    bytes: usize,
    started: Instant,
}

/// What a chunk did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChunkOutcome {
    Pending,
    /// All slots filled: the complete encoded message.
    Complete(Vec<u8>),
    /// Malformed or over a bound; the set (if any) is dropped.
    Invalid,
}

pub(crate) struct ChunkAssembler {
    /// Decoded bytes all open sets may hold together.
    budget: usize,
    /// Decoded bytes the open sets hold now.
    buffered: usize,
    sets: HashMap<String, ChunkSet>,
}

impl ChunkAssembler {
    pub(crate) fn new(budget: usize) -> ChunkAssembler {
        ChunkAssembler {
            budget,
            buffered: 0,
            sets: HashMap::new(),
        }
    }

    fn drop_set(&mut self, id: &str) -> Option<ChunkSet> {
        let set = self.sets.remove(id)?;
        self.buffered -= set.bytes;
        Some(set)
    }

    pub(crate) fn accept(&mut self, chunk: ChunkMessage, now: Instant) -> ChunkOutcome {
        self.sweep(now);
        let (Some(id), Some(total), Some(index), Some(data)) = (
            chunk.chunk_id,
            chunk.total_chunks,
            chunk.chunk_index,
            chunk.data,
        ) else {
            return ChunkOutcome::Invalid;
        };
        // The id is held as long as its set: bounded like a document id (1–255
        // characters of `A-Za-z0-9_:-`), or a few open sets with huge ids would hold
        // far more than the byte budget, which counts the data only.
        if crate::protocol::document_id::validate(Some(&id)).is_err() {
            return ChunkOutcome::Invalid;
        }
        let valid_shape = (1..=MAX_CHUNKS_PER_SET).contains(&total) && index < total;
        let decoded = base64::engine::general_purpose::STANDARD.decode(data.as_bytes());
        let (true, Ok(bytes)) = (valid_shape, decoded) else {
            self.drop_set(&id);
            return ChunkOutcome::Invalid;
        };
        if !self.sets.contains_key(&id) && self.sets.len() >= MAX_OPEN_SETS {
            return ChunkOutcome::Invalid;
        }
        let set = self.sets.entry(id.clone()).or_insert_with(|| ChunkSet {
            slots: vec![None; total as usize],
            filled: 0,
            bytes: 0,
            started: now,
        });
        if set.slots.len() as u64 != total {
            self.drop_set(&id);
            return ChunkOutcome::Invalid;
        }
        let slot = &mut set.slots[index as usize];
        if let Some(previous) = slot.take() {
            set.bytes -= previous.len();
            self.buffered -= previous.len();
            set.filled -= 1;
        }
        set.bytes += bytes.len();
        self.buffered += bytes.len();
        set.filled += 1;
        *slot = Some(bytes);
        if self.buffered > self.budget {
            self.drop_set(&id);
            return ChunkOutcome::Invalid;
        }
        if set.filled < set.slots.len() {
            return ChunkOutcome::Pending;
        }
        let Some(set) = self.drop_set(&id) else {
            return ChunkOutcome::Invalid;
        };
        let mut out = Vec::with_capacity(set.bytes);
        for part in set.slots.into_iter().flatten() {
            out.extend_from_slice(&part);
        }
        ChunkOutcome::Complete(out)
    }

    /// Drop sets older than the TTL.
    pub(crate) fn sweep(&mut self, now: Instant) {
        let mut freed = 0;
        self.sets.retain(|_, s| {
            let keep = now.saturating_duration_since(s.started) < SET_TTL;
            if !keep {
                freed += s.bytes;
            }
            keep
        });
        self.buffered -= freed;
    }

    #[cfg(test)]
    fn open_sets(&self) -> usize {
        self.sets.len()
    }

    /// Decoded bytes held by the open sets.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: &str, total: u64, index: u64, data: &[u8]) -> ChunkMessage {
        ChunkMessage {
            chunk_id: Some(id.into()),
            total_chunks: Some(total),
            chunk_index: Some(index),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
        }
    }

    #[test]
    fn reassembles_out_of_order() {
        let t = Instant::now();
        let mut a = ChunkAssembler::new(1000);
        assert_eq!(a.accept(chunk("c", 3, 2, b"ghi"), t), ChunkOutcome::Pending);
        assert_eq!(a.accept(chunk("c", 3, 0, b"abc"), t), ChunkOutcome::Pending);
        assert_eq!(
            a.accept(chunk("c", 3, 1, b"def"), t),
            ChunkOutcome::Complete(b"abcdefghi".to_vec())
        );
        assert_eq!(a.open_sets(), 0);
    }

    #[test]
    fn rejects_out_of_bounds() {
        let t = Instant::now();
        let mut a = ChunkAssembler::new(5);
        assert_eq!(a.accept(chunk("c", 2, 2, b"x"), t), ChunkOutcome::Invalid);
        assert_eq!(a.accept(chunk("c", 0, 0, b"x"), t), ChunkOutcome::Invalid);
        assert_eq!(
            a.accept(chunk("c", 1001, 0, b"x"), t),
            ChunkOutcome::Invalid
        );
        assert_eq!(
            a.accept(chunk("c", 3, 0, b"123456"), t),
            ChunkOutcome::Invalid
        );
        let mut bad = chunk("c", 2, 0, b"x");
        bad.data = Some("***".into());
        assert_eq!(a.accept(bad, t), ChunkOutcome::Invalid);
        let mut missing = chunk("c", 2, 0, b"x");
        missing.chunk_id = None;
        assert_eq!(a.accept(missing, t), ChunkOutcome::Invalid);
        // Inconsistent totals drop the set.
        assert_eq!(a.accept(chunk("d", 2, 0, b"a"), t), ChunkOutcome::Pending);
        assert_eq!(a.accept(chunk("d", 3, 1, b"b"), t), ChunkOutcome::Invalid);
        assert_eq!(a.open_sets(), 0);
    }

    #[test]
    fn limits_open_sets_and_expires_them() {
        let t = Instant::now();
        let mut a = ChunkAssembler::new(1000);
        for i in 0..MAX_OPEN_SETS {
            assert_eq!(
                a.accept(chunk(&format!("s{i}"), 2, 0, b"a"), t),
                ChunkOutcome::Pending
            );
        }
        assert_eq!(
            a.accept(chunk("one-more", 2, 0, b"a"), t),
            ChunkOutcome::Invalid
        );
        a.sweep(t + SET_TTL);
        assert_eq!(a.open_sets(), 0);
        assert_eq!(a.buffered(), 0);
    }

    #[test]
    fn one_budget_spans_every_open_set() {
        let t = Instant::now();
        let mut a = ChunkAssembler::new(10);
        assert_eq!(
            a.accept(chunk("a", 2, 0, b"1234"), t),
            ChunkOutcome::Pending
        );
        assert_eq!(
            a.accept(chunk("b", 2, 0, b"5678"), t),
            ChunkOutcome::Pending
        );
        assert_eq!(a.buffered(), 8);
        // A third set would take the connection past its budget: it is dropped, the
        // others stay.
        assert_eq!(a.accept(chunk("c", 2, 0, b"9ab"), t), ChunkOutcome::Invalid);
        assert_eq!((a.open_sets(), a.buffered()), (2, 8));
        // Replacing a slot does not count twice; completing a set frees its bytes.
        assert_eq!(a.accept(chunk("a", 2, 0, b"12"), t), ChunkOutcome::Pending);
        assert_eq!(a.buffered(), 6);
        assert_eq!(
            a.accept(chunk("a", 2, 1, b"34"), t),
            ChunkOutcome::Complete(b"1234".to_vec())
        );
        assert_eq!((a.open_sets(), a.buffered()), (1, 4));
        a.sweep(t + SET_TTL);
        assert_eq!((a.open_sets(), a.buffered()), (0, 0));
    }
}
