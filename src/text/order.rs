//! Document order: the Fugue tree the SDK's core builds (README "Text engine"),
//! built iteratively. Blocks are taken in id order (clock, client id, offset); a
//! block's parent is the block holding its left origin (it hangs on the right) —
//! or, when it has only a right origin, or when its left origin is an ancestor of
//! its right one, the block holding its right origin (it hangs on the left).
//! The order is an in-order walk: left children, the block, right children, each
//! list in id order, roots in id order.
//!
//! Ancestor queries use jump pointers (each node keeps one pointer up, chosen so
//! any ancestor is reached in O(log n) steps), and the walk uses an explicit
//! stack: O(n log n) in all, no recursion, whatever the input.

use super::{Id, State, TextDoc};

const NONE: u32 = u32::MAX;

impl TextDoc {
    /// Block indices in id order (how states are written).
    pub(crate) fn id_order(&self) -> Vec<u32> {
        id_order(&self.state)
    }

    /// Visible blocks in document order.
    pub(crate) fn document_order(&self) -> Vec<u32> {
        let blocks = &self.state.blocks;
        let n = blocks.len();
        let sorted = self.id_order();
        let mut parent = vec![NONE; n];
        let mut depth = vec![0u32; n];
        let mut jump = vec![NONE; n];
        let mut placed = vec![false; n];
        // Children in id order: (parent, is_right, child), appended as processed.
        let mut edges: Vec<(u32, bool, u32)> = Vec::with_capacity(n);
        let mut roots = Vec::new();
        let resolve = |o: Option<Id>| o.and_then(|o| self.containing(o.client, o.clock));
        for &i in &sorted {
            let b = &blocks[i as usize];
            let (left, right) = (resolve(b.left), resolve(b.right));
            let (p, on_right) = match (left, right) {
                (None, None) => (None, true),
                (Some(a), None) => (Some(a), true),
                (None, Some(r)) => (Some(r), false),
                (Some(a), Some(r)) => {
                    if is_ancestor(a, r, &parent, &depth, &jump, &placed) {
                        (Some(r), false)
                    } else {
                        (Some(a), true)
                    }
                }
            };
            let iu = i as usize;
            match p {
                Some(p) => {
                    parent[iu] = p;
                    edges.push((p, on_right, i));
                    let pu = p as usize;
                    if placed[pu] {
                        depth[iu] = depth[pu] + 1;
                        let j = jump[pu] as usize;
                        let jj = jump[j];
                        jump[iu] = if depth[pu] - depth[j] == depth[j] - depth[jj as usize] {
                            jj
                        } else {
                            p
                        };
                    } else {
                        // Parent not yet placed (never for a validated state): the
                        // node starts a chain of its own for ancestor queries.
                        jump[iu] = i;
                    }
                }
                None => {
                    roots.push(i);
                    jump[iu] = i;
                }
            }
            placed[iu] = true;
        }
        // Children lists, grouped by (parent, side), id order kept (stable sort).
        edges.sort_by_key(|&(p, right, _)| (p, right));
        let mut first = vec![0u32; 2 * n + 1];
        for &(p, right, _) in &edges {
            first[2 * p as usize + right as usize + 1] += 1;
        }
        for k in 1..first.len() {
            first[k] += first[k - 1];
        }
        let children = |p: u32, right: bool| {
            let slot = 2 * p as usize + right as usize;
            &edges[first[slot] as usize..first[slot + 1] as usize]
        };
        // In-order walk with an explicit stack: (node, emit?) entries.
        let mut out = Vec::with_capacity(n);
        let mut stack: Vec<(u32, bool)> = roots.iter().rev().map(|&r| (r, false)).collect();
        while let Some((node, emit)) = stack.pop() {
            if emit {
                if !blocks[node as usize].deleted {
                    out.push(node);
                }
                continue;
            }
            stack.extend(children(node, true).iter().rev().map(|e| (e.2, false)));
            stack.push((node, true));
            stack.extend(children(node, false).iter().rev().map(|e| (e.2, false)));
        }
        out
    }

    /// The visible text.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for i in self.document_order() {
            s.push_str(self.state.text_of(&self.state.blocks[i as usize]));
        }
        s
    }
}

/// Whether `a` is `b` or one of its ancestors, among the blocks placed so far.
fn is_ancestor(
    a: u32,
    b: u32,
    parent: &[u32],
    depth: &[u32],
    jump: &[u32],
    placed: &[bool],
) -> bool {
    if a == b {
        return true;
    }
    if !placed[a as usize] || !placed[b as usize] {
        return false;
    }
    let target = depth[a as usize];
    let mut v = b;
    while depth[v as usize] > target {
        let j = jump[v as usize];
        v = if depth[j as usize] >= target {
            j
        } else {
            parent[v as usize]
        };
        if v == NONE || !placed[v as usize] {
            return false;
        }
    }
    v == a
}

/// Block indices sorted by id: clock, then client id (as a string), then offset.
pub(crate) fn id_order(state: &State) -> Vec<u32> {
    let mut names: Vec<u32> = (0..state.clients.len() as u32).collect();
    names.sort_unstable_by(|x, y| state.clients[*x as usize].cmp(&state.clients[*y as usize]));
    let mut rank = vec![0u32; names.len()];
    for (r, &c) in names.iter().enumerate() {
        rank[c as usize] = r as u32;
    }
    let mut order: Vec<u32> = (0..state.blocks.len() as u32).collect();
    let key = |i: u32| {
        let id = &state.blocks[i as usize].id;
        (id.clock, rank[id.client as usize], id.offset)
    };
    order.sort_unstable_by_key(|&i| key(i));
    order
}
