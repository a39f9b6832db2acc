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

    /// Visible blocks in document order: the tree is built, its children lists
    /// grouped, and the tree walked.
    fn document_order(&self) -> Vec<u32> {
        let n = self.state.blocks.len();
        let (mut edges, roots) = self.tree_edges();
        // Children lists, grouped by (parent, side), id order kept (stable sort).
        edges.sort_by_key(|&(p, right, _)| (p, right));
        let first = child_offsets(&edges, n);
        let children = |p: u32, right: bool| {
            let slot = 2 * p as usize + right as usize;
            &edges[first[slot] as usize..first[slot + 1] as usize]
        };
        // In-order walk with an explicit stack: (node, emit?) entries.
        let blocks = &self.state.blocks;
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

    /// Hang every block on its parent, taking them in id order: the edges
    /// (parent, is_right, child) in the order the children came, and the roots.
    fn tree_edges(&self) -> (Vec<Edge>, Vec<u32>) {
        let blocks = &self.state.blocks;
        let n = blocks.len();
        let mut tree = Ancestry::new(n);
        let mut edges: Vec<Edge> = Vec::with_capacity(n);
        let mut roots = Vec::new();
        let resolve = |o: Option<Id>| o.and_then(|o| self.containing(o.client, o.clock));
        for i in self.id_order() {
            let b = &blocks[i as usize];
            let (left, right) = (resolve(b.left), resolve(b.right));
            let (p, on_right) = match (left, right) {
                (None, None) => (None, true),
                (Some(a), None) => (Some(a), true),
                (None, Some(r)) => (Some(r), false),
                (Some(a), Some(r)) => {
                    let t = &tree;
                    if is_ancestor(a, r, &t.parent, &t.depth, &t.jump, &t.placed) {
                        (Some(r), false)
                    } else {
                        (Some(a), true)
                    }
                }
            };
            match p {
                Some(p) => edges.push((p, on_right, i)),
                None => roots.push(i),
            }
            tree.place(i, p);
        }
        (edges, roots)
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

/// A child's edge in the tree: (parent, is_right, child).
type Edge = (u32, bool, u32);

/// The tree as far as it is built, for ancestor queries: each placed block's
/// parent, depth and jump pointer (see the module's comment).
struct Ancestry {
    parent: Vec<u32>,
    depth: Vec<u32>,
    jump: Vec<u32>,
    placed: Vec<bool>,
}

impl Ancestry {
    fn new(n: usize) -> Ancestry {
        Ancestry {
            parent: vec![NONE; n],
            depth: vec![0u32; n],
            jump: vec![NONE; n],
            placed: vec![false; n],
        }
    }

    /// Place block `i` under `p` (a root when `None`), choosing its jump pointer.
    #[inline]
    fn place(&mut self, i: u32, p: Option<u32>) {
        let iu = i as usize;
        match p {
            Some(p) => {
                self.parent[iu] = p;
                let pu = p as usize;
                if self.placed[pu] {
                    self.depth[iu] = self.depth[pu] + 1;
                    let j = self.jump[pu] as usize;
                    let jj = self.jump[j];
                    let depth = &self.depth;
                    self.jump[iu] = if depth[pu] - depth[j] == depth[j] - depth[jj as usize] {
                        jj
                    } else {
                        p
                    };
                } else {
                    // Parent not yet placed (never for a validated state): the
                    // node starts a chain of its own for ancestor queries.
                    self.jump[iu] = i;
                }
            }
            None => self.jump[iu] = i,
        }
        self.placed[iu] = true;
    }
}

/// Where each (parent, side)'s children start in the grouped `edges`: slot
/// `2 * parent + is_right`, one more slot for the end.
fn child_offsets(edges: &[Edge], n: usize) -> Vec<u32> {
    let mut first = vec![0u32; 2 * n + 1];
    for &(p, right, _) in edges {
        first[2 * p as usize + right as usize + 1] += 1;
    }
    for k in 1..first.len() {
        first[k] += first[k - 1];
    }
    first
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
