//! Checks that run before a state touches a document: on the state alone (no two
//! blocks of a client share a clock), then on what a merge would add (every origin
//! that names a character of the merged result names one in a block that ends
//! before the new block begins — which rules out cycles, and holds for everything
//! an SDK writes, since a client's Lamport clock is past every character it has
//! seen; an origin naming no character must name an earlier clock).

use super::{Block, Id, State, TextDoc, TextError};

/// No two blocks of one client cover the same clock (so no duplicate ids either).
pub(crate) fn check_state(state: &State) -> Result<(), TextError> {
    let mut order: Vec<u32> = (0..state.blocks.len() as u32).collect();
    let key = |i: &u32| {
        let b = &state.blocks[*i as usize];
        (b.id.client, b.start(), b.id.clock, b.id.offset)
    };
    order.sort_unstable_by_key(key);
    for pair in order.windows(2) {
        let (a, b) = (
            &state.blocks[pair[0] as usize],
            &state.blocks[pair[1] as usize],
        );
        if a.id.client == b.id.client && b.start() <= a.id.clock {
            return Err(if a.id == b.id {
                TextError::Duplicate {
                    block: state.describe(&b.id),
                }
            } else {
                TextError::Overlap {
                    block: state.describe(&b.id),
                    other: state.describe(&a.id),
                }
            });
        }
    }
    Ok(())
}

/// The remote blocks a merge inserts (`inserted`, indexes into `mapped`, client
/// ids already mapped to the document's) have origins that resolve in the merged
/// result, each to a block ending before the new block starts. Splits during the
/// merge only shorten blocks, so what holds here holds after it. `describe` names
/// an id for the error.
pub(crate) fn check_inserts(
    doc: &TextDoc,
    mapped: &[Block],
    inserted: &[u32],
    describe: &dyn Fn(&Id) -> String,
) -> Result<(), TextError> {
    // Inserted blocks by (client, start), to resolve origins among themselves.
    let mut by_start: Vec<(u32, u64, u64)> = inserted
        .iter()
        .map(|&i| {
            let b = &mapped[i as usize];
            (b.id.client, b.start(), b.id.clock)
        })
        .collect();
    by_start.sort_unstable();
    let resolve_end = |o: &Id| -> Option<u64> {
        if let Some(i) = doc.containing(o.client, o.clock) {
            return Some(doc.state.blocks[i as usize].id.clock);
        }
        let at = by_start.partition_point(|&(c, s, _)| (c, s) <= (o.client, o.clock));
        let &(c, _, end) = by_start.get(at.checked_sub(1)?)?;
        (c == o.client && end >= o.clock).then_some(end)
    };
    for &i in inserted {
        let b = &mapped[i as usize];
        for (side, origin) in [("left", b.left), ("right", b.right)] {
            let Some(o) = origin else {
                continue;
            };
            let describe = || (describe(&b.id), describe(&o));
            match resolve_end(&o) {
                // An earlier clock no block holds: the SDK's core writes such
                // origins (its Lamport clock jumps past other clients' clocks, and
                // it names a neighbour's clock it never used) and ignores them when
                // ordering; so does the engine. A later one can only be forged.
                None if o.clock < b.start() => {}
                None => {
                    let (block, origin) = describe();
                    return Err(TextError::Dangling {
                        block,
                        side,
                        origin,
                    });
                }
                Some(end) if end >= b.start() => {
                    let (block, origin) = describe();
                    return Err(TextError::NotCausal {
                        block,
                        side,
                        origin,
                    });
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}
