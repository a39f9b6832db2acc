//! Reads the SyncText JSON an SDK client sends — `{"blocks":[[id, block], …],
//! "clock":{"value":n}, "client_id":"…"}` — straight into a [`State`]: block after
//! block, client ids interned, texts appended to one arena, each block checked as
//! it is read (so a state over the block cap is refused without reading the rest).

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::write::Written;
use super::{grapheme_len, validate, Block, Id, Limits, Map, State, TextError, MAX_SAFE_INTEGER};

/// Parse and check one text state: the byte and block limits, the JSON shape, and
/// everything a state must satisfy on its own (`validate::check_state`).
pub fn parse(json: &str, limits: &Limits) -> Result<State, TextError> {
    if json.len() > limits.max_state_bytes {
        return Err(TextError::TooLarge {
            bytes: json.len(),
            limit: limits.max_state_bytes,
        });
    }
    let mut builder = Builder::new(limits.max_blocks);
    let mut de = serde_json::Deserializer::from_str(json);
    let outcome = StateSeed(&mut builder)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if let Some(failure) = builder.failure {
        return Err(failure);
    }
    outcome.map_err(|e| TextError::Malformed(e.to_string()))?;
    validate::check_state(&builder.state)?;
    Ok(builder.state)
}

#[derive(Deserialize)]
struct RawId<'a> {
    #[serde(borrow)]
    client_id: Cow<'a, str>,
    clock: u64,
    offset: u64,
}

/// Missing block fields take their defaults, as the SDK's core reads them.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawBlock<'a> {
    #[serde(borrow)]
    id: Option<RawId<'a>>,
    #[serde(borrow)]
    text: Cow<'a, str>,
    #[serde(borrow)]
    left_origin: Option<RawId<'a>>,
    #[serde(borrow)]
    right_origin: Option<RawId<'a>>,
    deleted: bool,
}

#[derive(Deserialize)]
struct RawClock {
    value: u64,
}

struct Builder {
    state: State,
    client_index: Map<String, u32>,
    /// The first refusal found while reading (serde only carries strings).
    failure: Option<TextError>,
    max_blocks: usize,
}

impl Builder {
    fn new(max_blocks: usize) -> Builder {
        Builder {
            state: State::default(),
            client_index: Map::default(),
            failure: None,
            max_blocks,
        }
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.client_index.get(name) {
            return i;
        }
        let i = self.state.clients.len() as u32;
        self.state.clients.push(name.to_owned());
        self.client_index.insert(name.to_owned(), i);
        i
    }

    fn id(&mut self, raw: &RawId<'_>) -> Id {
        Id {
            client: self.intern(&raw.client_id),
            clock: raw.clock,
            offset: raw.offset,
        }
    }

    fn push(&mut self, key: RawId<'_>, raw: RawBlock<'_>) -> Result<(), TextError> {
        let name = || format!("{}@{}:{}", key.client_id, key.clock, key.offset);
        if self.state.blocks.len() >= self.max_blocks {
            return Err(TextError::TooManyBlocks {
                blocks: self.state.blocks.len() + 1,
                limit: self.max_blocks,
            });
        }
        let huge = |what| TextError::HugeNumber {
            block: name(),
            what,
        };
        if key.clock > MAX_SAFE_INTEGER {
            return Err(huge("clock"));
        }
        if key.offset > MAX_SAFE_INTEGER {
            return Err(huge("offset"));
        }
        for origin in [&raw.left_origin, &raw.right_origin].into_iter().flatten() {
            if origin.clock > MAX_SAFE_INTEGER || origin.offset > MAX_SAFE_INTEGER {
                return Err(huge("origin clock"));
            }
        }
        let same_id = raw.id.as_ref().is_some_and(|id| {
            id.client_id == key.client_id && id.clock == key.clock && id.offset == key.offset
        });
        if !same_id {
            let block = raw.id.as_ref().map_or("(none)".to_owned(), |id| {
                format!("{}@{}:{}", id.client_id, id.clock, id.offset)
            });
            return Err(TextError::KeyMismatch { block, key: name() });
        }
        if raw.text.is_empty() {
            return Err(TextError::EmptyBlock { block: name() });
        }
        let len = grapheme_len(&raw.text) as u64;
        // A block of n characters used the clocks clock-n+1 ..= clock, all ≥ 1.
        if len > key.clock {
            return Err(TextError::BadLength { block: name(), len });
        }
        let id = self.id(&key);
        let left = raw.left_origin.as_ref().map(|o| self.id(o));
        let right = raw.right_origin.as_ref().map(|o| self.id(o));
        let start = key.clock + 1 - len;
        for (side, origin) in [("left", left), ("right", right)] {
            if let Some(o) = origin {
                if o.client == id.client && (start..=key.clock).contains(&o.clock) {
                    return Err(TextError::SelfReference {
                        block: name(),
                        side,
                    });
                }
            }
        }
        let text_start = self.state.arena.len() as u32;
        self.state.arena.push_str(&raw.text);
        self.state.blocks.push(Block {
            id,
            len,
            text_start,
            text_bytes: raw.text.len() as u32,
            left,
            right,
            deleted: raw.deleted,
        });
        Ok(())
    }
}

struct StateSeed<'b>(&'b mut Builder);

impl<'de> DeserializeSeed<'de> for StateSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for StateSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SyncText state object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (mut blocks, mut clock, mut client_id) = (false, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "blocks" if !blocks => {
                    map.next_value_seed(BlocksSeed(self.0))?;
                    blocks = true;
                }
                "clock" if clock.is_none() => clock = Some(map.next_value::<RawClock>()?.value),
                "client_id" if client_id.is_none() => client_id = Some(map.next_value::<String>()?),
                "blocks" | "clock" | "client_id" => {
                    return Err(A::Error::custom(format_args!("duplicate field `{key}`")))
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let missing = |f| A::Error::custom(format_args!("missing field `{f}`"));
        if !blocks {
            return Err(missing("blocks"));
        }
        let clock = clock.ok_or_else(|| missing("clock"))?;
        if clock > MAX_SAFE_INTEGER {
            self.0.failure = Some(TextError::HugeNumber {
                block: "(state)".into(),
                what: "Lamport clock",
            });
            return Err(A::Error::custom("refused"));
        }
        self.0.state.clock = clock;
        self.0.state.client_id = client_id.ok_or_else(|| missing("client_id"))?;
        Ok(())
    }
}

struct BlocksSeed<'b>(&'b mut Builder);

impl<'de> DeserializeSeed<'de> for BlocksSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BlocksSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of [id, block] pairs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some((key, block)) = seq.next_element::<(RawId<'de>, RawBlock<'de>)>()? {
            if let Err(e) = self.0.push(key, block) {
                self.0.failure = Some(e);
                return Err(A::Error::custom("refused"));
            }
        }
        Ok(())
    }
}

/// The JSON that opens a state as SDK clients and the engine write it.
const HEAD: &str = "{\"blocks\":[";

/// A state resent against what the document last wrote: the blocks whose
/// `[id, block]` element differs from every element of `written` met in order,
/// parsed, and the document's blocks whose element was found byte for byte.
pub(crate) struct Resent {
    pub(crate) state: State,
    pub(crate) same: Vec<u32>,
}

/// Read `json` by comparing its elements with `written`'s, in order: an element
/// found byte for byte is one of the document's blocks as the document has it
/// (it read or wrote those very bytes), so it is neither parsed nor checked
/// again; the others are parsed as [`parse`] parses them. `None` when the state
/// does not start as written states do or anything about it is refused: the
/// caller then parses it in full, for the same outcome and the exact error.
/// `known` is the document's state (for the id order).
pub(crate) fn parse_resent(
    json: &str,
    written: &Written,
    known: &State,
    limits: &Limits,
) -> Option<Resent> {
    if json.len() > limits.max_state_bytes || !json.starts_with(HEAD) {
        return None;
    }
    let bytes = json.as_bytes();
    let ws = |p: usize| skip_ws(bytes, p);
    let mut builder = Builder::new(usize::MAX);
    let mut same = Vec::new();
    let (mut pos, mut k, mut count) = (ws(HEAD.len()), 0usize, 0usize);
    let elements = written.order.len();
    if bytes.get(pos) != Some(&b']') {
        loop {
            count += 1;
            if count > limits.max_blocks {
                return None;
            }
            let mine = (k < elements).then(|| written.element(k));
            match mine {
                Some(e) if bytes.get(pos..pos + e.len()) == Some(e) => {
                    same.push(written.order[k]);
                    pos += e.len();
                    k += 1;
                }
                _ => {
                    let rest = json.get(pos..)?;
                    let mut stream =
                        serde_json::Deserializer::from_str(rest)
                            .into_iter::<(RawId<'_>, RawBlock<'_>)>();
                    let (key, block) = stream.next()?.ok()?;
                    pos += stream.byte_offset();
                    k = next_to_compare(written, known, k, &key)?;
                    builder.push(key, block).ok()?;
                }
            }
            pos = ws(pos);
            match bytes.get(pos) {
                Some(b',') => pos = ws(pos + 1),
                Some(b']') => break,
                _ => return None,
            }
        }
    }
    let state = finish_resent(json.get(pos..)?, builder, limits)?;
    Some(Resent { state, same })
}

/// The first position at or after `p` that is not JSON whitespace.
#[inline]
fn skip_ws(bytes: &[u8], mut p: usize) -> usize {
    while bytes
        .get(p)
        .is_some_and(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
    {
        p += 1;
    }
    p
}

/// After an element of the state that differs from ours at `k`: our elements up
/// to its id are missing from the state or replaced by it, so the next comparison
/// is with the one after them (`written.order` is in id order: a binary search).
/// `None` when one of ours names a client the document does not know.
#[inline]
fn next_to_compare(written: &Written, known: &State, k: usize, key: &RawId<'_>) -> Option<usize> {
    let key_id = (key.clock, &*key.client_id, key.offset);
    let mut unknown_client = false;
    let skipped = written.order[k..].partition_point(|&b| {
        let ours = &known.blocks[b as usize].id;
        match known.clients.get(ours.client as usize) {
            Some(name) => (ours.clock, name.as_str(), ours.offset) <= key_id,
            None => {
                unknown_client = true;
                false
            }
        }
    });
    (!unknown_client).then_some(k + skipped)
}

/// The state read so far, completed by the rest of the JSON (`],"clock":…}`, read
/// as the end of an empty state) and checked as [`parse`] checks a state.
fn finish_resent(tail: &str, builder: Builder, limits: &Limits) -> Option<State> {
    let mut end = String::with_capacity(HEAD.len() + tail.len());
    end.push_str(HEAD);
    end.push_str(tail);
    let trailer = parse(&end, limits).ok()?;
    let mut state = builder.state;
    state.clock = trailer.clock;
    state.client_id = trailer.client_id;
    validate::check_state(&state).ok()?;
    Some(state)
}
