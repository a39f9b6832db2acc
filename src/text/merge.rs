//! Merging a remote state into a document, with the semantics of the SDK's core
//! (README "Text engine"): split-to-match normalisation of blocks the remote side
//! has split, union of blocks, deletion propagation over clock ranges, tombstones
//! kept, Lamport clock advanced to the highest block clock seen. Everything is
//! checked first ([`super::validate`]); a refused merge changes nothing.

use std::collections::BTreeMap;

use super::write::SinceWrite;
use super::{
    grapheme_byte_offset, parse, validate, Block, Id, Limits, Map, State, TextDoc, TextError,
};

/// What a merge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeSummary {
    /// Remote blocks added to the document.
    pub(crate) inserted: usize,
    /// Blocks split or newly marked deleted, and whether the clock moved.
    pub changed: bool,
    /// Whether blocks the document already had were split or newly deleted
    /// (otherwise the merge only added blocks and perhaps moved the clock).
    altered: bool,
}

/// How a remote block relates to the document, decided before anything changes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The document holds the very same block (id and length): at most its
    /// deletion flag is merged. What most of a full state resent by a client is.
    Same(u32),
    /// None of its clocks is known: it is inserted.
    New,
    /// Part of (or made of) blocks the document has under other ids.
    Other,
}

impl TextDoc {
    /// Parse the state `json` and merge it into this document, or refuse it and
    /// change nothing. The same outcome as [`parse`] then [`TextDoc::merge`]; a
    /// state that repeats most of what the document last wrote (SDK clients send
    /// their whole state with each edit) is read by comparing bytes, and only
    /// what differs is parsed and merged.
    pub fn merge_json(&mut self, json: &str, limits: &Limits) -> Result<MergeSummary, TextError> {
        if let Some(summary) = self.merge_resent(json, limits) {
            return Ok(summary);
        }
        self.merge(parse(json, limits)?, limits)
    }

    /// The byte-comparing path of [`TextDoc::merge_json`]; `None` (nothing
    /// changed) when it does not apply or the state is refused.
    fn merge_resent(&mut self, json: &str, limits: &Limits) -> Option<MergeSummary> {
        if self.since_write != SinceWrite::Nothing {
            return None;
        }
        let written = self.written.as_ref()?;
        if written.blocks != self.state.blocks.len() {
            return None;
        }
        let resent = parse::parse_resent(json, written, &self.state, limits)?;
        // The full state's blocks are the parsed ones and the `same` ones: a
        // parsed block must not overlap a `same` block (check_state on the
        // whole state would refuse it). Then merging the parsed ones alone does
        // what merging all would: a `same` block merges into itself.
        let mut is_same = vec![false; self.state.blocks.len()];
        for &i in &resent.same {
            is_same[i as usize] = true;
        }
        for b in &resent.state.blocks {
            let name = resent.state.clients.get(b.id.client as usize)?;
            let Some(&client) = self.client_index.get(name) else {
                continue;
            };
            let hit = self
                .by_start
                .range((client, 0)..=(client, b.id.clock))
                .rev()
                .map(|(_, &i)| i)
                .take_while(|&i| self.state.blocks[i as usize].id.clock >= b.start())
                .any(|i| is_same[i as usize]);
            if hit {
                return None;
            }
        }
        self.merge(resent.state, limits).ok()
    }

    /// Merge `remote` into this document, or refuse it and change nothing.
    pub fn merge(&mut self, remote: State, limits: &Limits) -> Result<MergeSummary, TextError> {
        let State {
            clients: remote_clients,
            blocks: mut mapped,
            arena: remote_arena,
            ..
        } = remote;
        let known = self.state.clients.len();
        let new_clients = self.map_clients(remote_clients, &mut mapped);
        let kinds = self.classify(&mapped);
        let inserted: Vec<u32> = (0..mapped.len() as u32)
            .filter(|&i| kinds[i as usize] == Kind::New)
            .collect();
        self.check_merge(
            &mapped,
            &inserted,
            &remote_arena,
            known,
            &new_clients,
            limits,
        )?;

        // Accepted: from here on nothing fails.
        for name in new_clients {
            let i = self.state.clients.len() as u32;
            self.client_index.insert(name.clone(), i);
            self.state.clients.push(name);
        }
        let mut altered = self.split_as_remote(&mapped, &kinds);
        let bulk = self.state.blocks.is_empty();
        let (deletions, deleted) = self.union(&mapped, &kinds, &remote_arena, bulk);
        altered |= deleted;
        if bulk {
            self.index_all();
        }

        // Phase 3: deletions over clock ranges, splitting partly covered blocks.
        for (client, from, to) in deletions {
            altered |= self.delete_range(client, from, to);
        }

        // Phase 4: the Lamport clock follows the highest remote block clock.
        let remote_max = mapped.iter().map(|b| b.id.clock).max().unwrap_or(0);
        let mut changed = altered || !inserted.is_empty();
        if remote_max > self.state.clock {
            self.state.clock = remote_max;
            changed = true;
        }
        let since = if altered {
            SinceWrite::Altered
        } else if changed {
            SinceWrite::Appended
        } else {
            SinceWrite::Nothing
        };
        self.since_write = self.since_write.max(since);
        Ok(MergeSummary {
            inserted: inserted.len(),
            changed,
            altered,
        })
    }

    /// Renumber the remote blocks' client ids as the document will number them;
    /// returns the clients it does not know yet (added only once the merge is
    /// accepted, numbered from the document's client count on).
    fn map_clients(&self, remote_clients: Vec<String>, mapped: &mut [Block]) -> Vec<String> {
        let known = self.state.clients.len();
        let mut new_clients = Vec::new();
        let map: Vec<u32> = remote_clients
            .into_iter()
            .map(|name| match self.client_index.get(&name) {
                Some(&i) => i,
                None => {
                    new_clients.push(name);
                    (known + new_clients.len() - 1) as u32
                }
            })
            .collect();
        let remap = |id: &mut Id| id.client = map[id.client as usize];
        for b in mapped {
            remap(&mut b.id);
            if let Some(o) = &mut b.left {
                remap(o);
            }
            if let Some(o) = &mut b.right {
                remap(o);
            }
        }
        new_clients
    }

    /// How each remote block relates to the document. Splits keep coverage, so
    /// this is decided before anything changes.
    fn classify(&self, mapped: &[Block]) -> Vec<Kind> {
        mapped
            .iter()
            .map(|b| {
                let same = self
                    .by_end
                    .get(&(b.id.client, b.id.clock))
                    .copied()
                    .filter(|&li| {
                        let l = &self.state.blocks[li as usize];
                        l.id.offset == b.id.offset && l.len == b.len
                    });
                match same {
                    Some(li) => Kind::Same(li),
                    None if !self.overlaps(b.id.client, b.start(), b.id.clock) => Kind::New,
                    None => Kind::Other,
                }
            })
            .collect()
    }

    /// Refuse a merge past the limits or whose inserted blocks do not fit the
    /// document (`validate::check_inserts`).
    fn check_merge(
        &self,
        mapped: &[Block],
        inserted: &[u32],
        remote_arena: &str,
        known: usize,
        new_clients: &[String],
        limits: &Limits,
    ) -> Result<(), TextError> {
        let blocks = self.state.blocks.len() + inserted.len();
        if blocks > limits.max_blocks {
            return Err(TextError::TooManyBlocks {
                blocks,
                limit: limits.max_blocks,
            });
        }
        let arena = self.state.arena.len() + remote_arena.len();
        if arena > u32::MAX as usize {
            return Err(TextError::TooLarge {
                bytes: arena,
                limit: u32::MAX as usize,
            });
        }
        let describe = |id: &Id| {
            let c = id.client as usize;
            let name = match c.checked_sub(known) {
                None => self.state.clients.get(c),
                Some(k) => new_clients.get(k),
            };
            format!(
                "{}@{}:{}",
                name.map_or("?", String::as_str),
                id.clock,
                id.offset
            )
        };
        validate::check_inserts(self, mapped, inserted, &describe)
    }

    /// Phase 1: where the remote side holds a shorter block under one of our
    /// ids, it split that block: split ours the same way (its left part gets a
    /// new id, which may in turn match a shorter remote block). Only `Other`
    /// blocks take part: a `Same` block's end is no other block's, before or
    /// after a split (a split's new ends lie inside the block it splits).
    /// Returns whether a block was split.
    fn split_as_remote(&mut self, mapped: &[Block], kinds: &[Kind]) -> bool {
        let mut altered = false;
        let others: Vec<u32> = (0..mapped.len() as u32)
            .filter(|&i| kinds[i as usize] == Kind::Other)
            .collect();
        let remote_by_end: Map<(u32, u64), (u64, u64)> = others
            .iter()
            .map(|&i| {
                let b = &mapped[i as usize];
                ((b.id.client, b.id.clock), (b.id.offset, b.len))
            })
            .collect();
        for &i in &others {
            let b = &mapped[i as usize];
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
                altered = true;
                let l = self.state.blocks[left as usize];
                if let Some(&(_, len)) = remote_by_end.get(&(l.id.client, l.id.clock)) {
                    keep = len;
                    target = Some(left);
                }
            }
        }

        altered
    }

    /// Phase 2: union. Same id: deletion wins. Known clocks under another id: a
    /// deletion there is returned, to be propagated over its clock range (phase
    /// 3). Into an empty document (`bulk`) the indexes are built afterwards, in
    /// bulk. Returns those deletions and whether a block was newly deleted.
    fn union(
        &mut self,
        mapped: &[Block],
        kinds: &[Kind],
        remote_arena: &str,
        bulk: bool,
    ) -> (Vec<(u32, u64, u64)>, bool) {
        let mut altered = false;
        let mut deletions = Vec::new();
        for (i, b) in mapped.iter().enumerate() {
            let exact = match kinds[i] {
                Kind::Same(li) => Some(li),
                Kind::New => {
                    let text_start =
                        (b.text_start as usize)..(b.text_start as usize + b.text_bytes as usize);
                    let text = remote_arena.get(text_start).unwrap_or_default();
                    let text_start = self.state.arena.len() as u32;
                    self.state.arena.push_str(text);
                    let idx = self.state.blocks.len() as u32;
                    self.state.blocks.push(Block { text_start, ..*b });
                    if !bulk {
                        self.index_block(idx);
                    }
                    continue;
                }
                Kind::Other => self
                    .by_end
                    .get(&(b.id.client, b.id.clock))
                    .copied()
                    .filter(|&li| self.state.blocks[li as usize].id.offset == b.id.offset),
            };
            if let Some(li) = exact {
                let local = &mut self.state.blocks[li as usize];
                if b.deleted && !local.deleted {
                    local.deleted = true;
                    altered = true;
                    self.touched.push(li);
                }
            } else if b.deleted {
                deletions.push((b.id.client, b.start(), b.id.clock));
            }
        }
        (deletions, altered)
    }

    /// Build both block indexes from scratch (after a bulk load).
    fn index_all(&mut self) {
        let blocks = &self.state.blocks;
        self.by_end = Map::with_capacity_and_hasher(blocks.len(), Default::default());
        self.by_end.extend(
            blocks
                .iter()
                .enumerate()
                .map(|(i, b)| ((b.id.client, b.id.clock), i as u32)),
        );
        let mut starts: Vec<((u32, u64), u32)> = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| ((b.id.client, b.start()), i as u32))
            .collect();
        starts.sort_unstable_by_key(|&(k, _)| k);
        self.by_start = BTreeMap::from_iter(starts);
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
        self.touched.push(li);
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
            self.touched.push(li);
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
