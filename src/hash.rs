//! The hash maps of the hot paths (the hub's documents and batches, the write queue,
//! the in-memory store, the text engine's indexes): foldhash, seeded per process.
//!
//! SipHash, the standard library's default, was 3–4 % of the server's CPU per write
//! (BENCHMARKS.md, "Hashing"); foldhash is several times faster on the short keys
//! used here (document ids, field names, small integers) and is still keyed by a
//! random seed, so a client cannot precompute colliding keys.

/// A `HashMap` with the fast, randomly seeded hasher.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with the fast, randomly seeded hasher.
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
