//! Merging a remote state into a document, with the semantics of the SDK's core
//! (README "Text engine"): split-to-match normalisation of blocks the remote side
//! has split, union of blocks, deletion propagation over clock ranges, tombstones
//! kept, Lamport clock advanced to the highest block clock seen. Everything is
//! checked first ([`super::validate`]); a refused merge changes nothing.

use std::collections::HashMap;

use super::{grapheme_byte_offset, validate, Block, Id, Limits, State, TextDoc, TextError};

/// What a merge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeSummary {
    /// Remote blocks added to the document.
    pub inserted: usize,
    /// Blocks split or newly marked deleted, and whether the clock moved.
    pub changed: bool,
}

impl TextDoc {
    /// Merge `remote` into this document, or refuse it and change nothing.
    pub fn merge(&mut self, remote: State, limits: &Limits) -> Result<MergeSummary, TextError> {
        // Client ids as the document will number them; new ones are added only
        // once the merge is accepted.
        let mut new_clients = Vec::new();
        let map: Vec<u32> = remote
            .clients
            .iter()
            .map(|name| match self.client_index.get(name) {
                Some(&i) => i,
                None => {
                    new_clients.push(name.clone());
                    (self.state.clients.len() + new_clients.len() - 1) as u32
                }
            })
            .collect();
        let remap = |id: Id| Id {
            client: map[id.client as usize],
            ..id
        };
        let mapped: Vec<Block> = remote
            .blocks
            .iter()
            .map(|b| Block {
                id: remap(b.id),
                left: b.left.map(remap),
                right: b.right.map(remap),
                ..*b
            })
            .collect();
        // A remote block none of whose clocks the document knows is inserted; the
        // others are (pieces of) blocks the document has. Splits keep coverage, so
        // this is decided before anything changes.
        let is_new: Vec<bool> = mapped
            .iter()
            .map(|b| !self.overlaps(b.id.client, b.start(), b.id.clock))
            .collect();
        let inserted: Vec<u32> = (0..mapped.len() as u32)
            .filter(|&i| is_new[i as usize])
            .collect();
        let blocks = self.state.blocks.len() + inserted.len();
        if blocks > limits.max_blocks {
            return Err(TextError::TooManyBlocks {
                blocks,
                limit: limits.max_blocks,
            });
        }
        let arena = self.state.arena.len() + remote.arena.len();
        if arena > u32::MAX as usize {
            return Err(TextError::TooLarge {
                bytes: arena,
                limit: u32::MAX as usize,
            });
        }
        validate::check_inserts(self, &remote, &mapped, &inserted)?;

        // Accepted: from here on nothing fails.
        for name in new_clients {
            let i = self.state.clients.len() as u32;
            self.client_index.insert(name.clone(), i);
            self.state.clients.push(name);
        }
        let mut changed = false;

        // Phase 1: where the remote side holds a shorter block under one of our
        // ids, it split that block: split ours the same way (its left part gets a
        // new id, which may in turn match a shorter remote block).
        let remote_by_end: HashMap<(u32, u64), (u64, u64)> = mapped
            .iter()
            .map(|b| ((b.id.client, b.id.clock), (b.id.offset, b.len)))
            .collect();
        for b in &mapped {
            let mut target = self.by_end.get(&(b.id.client, b.id.clock)).copied();
            let mut keep = b.len;
            while let Some(li) = target.take() {
                let local = self.state.blocks[li as usize];
                let Some(&(offset, _)) = remote_by_end.get(&(local.id.client, local.id.clock))
                else {
                    break;
                };
                if offset != local.id.offset || keep >= local.len {
                    break;
                }
                let left = self.split_to_match(li, keep);
                changed = true;
                let l = self.state.blocks[left as usize];
                if let Some(&(_, len)) = remote_by_end.get(&(l.id.client, l.id.clock)) {
                    keep = len;
                    target = Some(left);
                }
            }
        }

        // Phase 2: union. Same id: deletion wins. Known clocks under another id:
        // a deletion there is propagated over its clock range (phase 3).
        let mut deletions = Vec::new();
        for (i, b) in mapped.iter().enumerate() {
            let exact = self
                .by_end
                .get(&(b.id.client, b.id.clock))
                .copied()
                .filter(|&li| self.state.blocks[li as usize].id.offset == b.id.offset);
            if let Some(li) = exact {
                let local = &mut self.state.blocks[li as usize];
                if b.deleted && !local.deleted {
                    local.deleted = true;
                    changed = true;
                }
            } else if is_new[i] {
                let text = remote.text_of(&remote.blocks[i]);
                let text_start = self.state.arena.len() as u32;
                self.state.arena.push_str(text);
                let idx = self.state.blocks.len() as u32;
                self.state.blocks.push(Block { text_start, ..*b });
                self.index_block(idx);
            } else if b.deleted {
                deletions.push((b.id.client, b.start(), b.id.clock));
            }
        }

        // Phase 3: deletions over clock ranges, splitting partly covered blocks.
        for (client, from, to) in deletions {
            changed |= self.delete_range(client, from, to);
        }

        // Phase 4: the Lamport clock follows the highest remote block clock.
        let remote_max = mapped.iter().map(|b| b.id.clock).max().unwrap_or(0);
        if remote_max > self.state.clock {
            self.state.clock = remote_max;
            changed = true;
        }
        Ok(MergeSummary {
            inserted: inserted.len(),
            changed: changed || !inserted.is_empty(),
        })
    }

    /// Split block `li` so that it keeps its id and its last `keep` characters;
    /// the first part becomes a new block (offset 0). Returns the new block.
    fn split_to_match(&mut self, li: u32, keep: u64) -> u32 {
        let b = self.state.blocks[li as usize];
        let cut = b.len - keep;
        let left = self.piece(&b, 0, cut, b.deleted);
        let right = self.piece(&b, cut, b.len, b.deleted);
        let right = Block { id: b.id, ..right };
        self.by_start.remove(&(b.id.client, b.start()));
        self.state.blocks[li as usize] = right;
        self.index_block(li);
        let new = self.state.blocks.len() as u32;
        self.state.blocks.push(left);
        self.index_block(new);
        new
    }

    /// Mark the clocks `from..=to` of `client` deleted. Returns whether anything
    /// changed.
    fn delete_range(&mut self, client: u32, from: u64, to: u64) -> bool {
        let hit: Vec<u32> = self
            .by_start
            .range((client, 0)..=(client, to))
            .rev()
            .map(|(_, &i)| i)
            .take_while(|&i| self.state.blocks[i as usize].id.clock >= from)
            .collect();
        let mut changed = false;
        for li in hit {
            let b = self.state.blocks[li as usize];
            if b.deleted {
                continue;
            }
            changed = true;
            let (start, end) = (b.start(), b.id.clock);
            let cut_from = from.max(start) - start;
            let cut_to = to.min(end) - start + 1;
            if cut_from == 0 && cut_to == b.len {
                self.state.blocks[li as usize].deleted = true;
                continue;
            }
            // Up to three pieces, all with new ids (offset 0): kept, deleted, kept.
            self.by_start.remove(&(client, start));
            self.by_end.remove(&(client, end));
            let mut pieces = Vec::with_capacity(3);
            if cut_from > 0 {
                pieces.push(self.piece(&b, 0, cut_from, false));
            }
            pieces.push(self.piece(&b, cut_from, cut_to, true));
            if cut_to < b.len {
                pieces.push(self.piece(&b, cut_to, b.len, false));
            }
            for (k, piece) in pieces.into_iter().enumerate() {
                let idx = if k == 0 {
                    self.state.blocks[li as usize] = piece;
                    li
                } else {
                    self.state.blocks.push(piece);
                    self.state.blocks.len() as u32 - 1
                };
                self.index_block(idx);
            }
        }
        changed
    }

    /// Characters `from..to` (grapheme offsets) of `b` as a block of their own:
    /// same origins, id `(client, last clock, 0)`.
    fn piece(&self, b: &Block, from: u64, to: u64, deleted: bool) -> Block {
        let text = self.state.text_of(b);
        let lo = grapheme_byte_offset(text, from);
        let hi = grapheme_byte_offset(text, to);
        Block {
            id: Id {
                client: b.id.client,
                clock: b.start() + to - 1,
                offset: 0,
            },
            len: to - from,
            text_start: b.text_start + lo as u32,
            text_bytes: (hi - lo) as u32,
            left: b.left,
            right: b.right,
            deleted,
        }
    }
}
