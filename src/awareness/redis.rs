//! Redis awareness store (`--awareness-store redis`, T6-08): presence shared by every
//! instance on one Redis, in the C# server's key layout (docs/storage.md §6.5) so Rust and
//! C# instances can read each other's entries.
//!
//! # Keys (`<prefix>` defaults to C#'s hard-coded `synckit:`)
//!
//! | Key | Type | Content |
//! |---|---|---|
//! | `<prefix>awareness:<documentId>` | hash | field = client id, value = JSON `{"documentId","clientId","state":{"clientId","state","clock","lastUpdated"},"clock","expiresAt","connectionId","userId"}` (ms epochs) |
//! | `<prefix>awareness:expires:<documentId>` | sorted set | member = client id, score = `expiresAt` |
//! | `<prefix>awareness:docs` | set | documents that currently have entries |
//! | `<prefix>awareness-conn:<connectionId>` | set | `["documentId","clientId"]` pairs the connection wrote (ours, not C#'s) |
//!
//! Differences from C#, all invisible to a C# reader:
//!
//! - **`userId`** (the owner, see the `awareness` module) is another extra key; the
//!   set and leave scripts refuse a live entry of another connection and user.
//! - **`connectionId`** is an extra key in the entry JSON (System.Text.Json ignores
//!   unknown keys) because `remove_connection` must only remove entries a connection
//!   wrote *last*. Entries written by C# have none and belong to no connection.
//! - **Connection index**: `remove_connection` cannot scan every hash, so each accepted
//!   write also adds the pair to a per-connection set. It lives under `awareness-conn:`
//!   rather than `awareness:conn:` because document ids may contain `:`, and a document
//!   called `conn:x` must not collide with it. The index is only a list of candidates:
//!   members are not removed when another connection takes an entry over or when it is
//!   pruned (that would mean touching a key the script was not given); removal checks
//!   the entry's `connectionId` inside the script, so a stale member removes nothing.
//! - **`PEXPIRE`** of `timeout × 2` on the hash, the sorted set and the connection
//!   index, refreshed by every accepted write, so documents (and connections) nobody
//!   sweeps any more disappear (docs/storage.md §6.5 asks for it). This TTL runs on Redis's
//!   clock; it is a safety net far behind the sweeper, not the expiry rule.
//! - **The document set is kept tidy**: a document leaves `awareness:docs` once its hash
//!   is empty (or gone through `PEXPIRE`, noticed by the next prune), instead of holding
//!   every document that ever had presence; a new entry adds it back.
//!
//! Inherited from the C# layout: a document named `docs` or `expires:<id>` maps onto
//! another key's name, and Redis answers `WRONGTYPE`, reported as unavailable.
//!
//! # Semantics (same as [`MemoryAwarenessStore`](super::MemoryAwarenessStore))
//!
//! `tests/awareness_conformance.rs` runs the same checks against the memory, PostgreSQL
//! and Redis stores.
//!
//! - **Clock ordering** is one Lua script per write: it reads the stored clock, rejects
//!   `clock <= stored` and otherwise writes the hash, sorted set, document set and index.
//!   Redis runs a script atomically, so concurrent writers on any instance can never let
//!   an older clock win, and two writers of the same new clock cannot both be accepted.
//!   (`WATCH`/`MULTI`, C#'s way, needs a dedicated connection per writer; the
//!   multiplexed connection we share cannot hold a `WATCH`.) Lua numbers are doubles,
//!   so clocks compare exactly up to 2^53 — every clock a JavaScript SDK can send.
//! - **An expired entry's clock stays binding until it is pruned**; expiry hides it from
//!   `get_all` and lists it in `expired`. A leave or the prune removes it, after which
//!   any clock is accepted again.
//! - **Time is the caller's** `now_ms`: `expiresAt = now_ms + timeout`, an entry is
//!   expired when `expiresAt <= now` (C#'s cleanup rule, score ≤ now), and `get_all`
//!   compares against `now_ms`, never Redis's clock.
//! - **Ordering**: `get_all` sorts by client id in byte order like the memory store; the
//!   other listings sort by (document, client).
//! - Entries written by C# with a `null` state (C# stores leaves) are never listed by
//!   `get_all`: a null state is not presence.
//!
//! # Connection
//!
//! A lazily connected [`ConnectionManager`]: the constructor never touches the network,
//! so the server starts while Redis is down; a background `PING` opens the connection
//! right away, and operations issued meanwhile wait for that attempt. While Redis is
//! unreachable, operations fail with [`AwarenessError::Unavailable`] after one short
//! connection attempt and one retry (about 0.1 s when the port refuses, about 2 s when
//! packets vanish), and each failure makes the manager start a new attempt in the
//! background, so the store is back as soon as Redis is. A lost connection fails the
//! operations in flight and is replaced the same way. Scripts are sent by SHA and
//! reloaded when a restarted Redis answers `NOSCRIPT`.
//!
//! Standalone Redis only (or any single-shard endpoint): every script touches the
//! document set and one document's keys, which Redis Cluster would reject as
//! cross-slot; C#'s layout has no hash tags to fix that.

use std::collections::HashMap;
use std::time::Duration;
#[cfg(any(test, feature = "test-util"))]
use std::time::Instant;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AwarenessEntry, AwarenessError, AwarenessStore, AwarenessUpdate, SetOutcome};

/// C#'s hard-coded key prefix; tests pass their own to share a Redis safely.
const DEFAULT_KEY_PREFIX: &str = "synckit:";

/// Bounds for one connection attempt and one reply: awareness writes sit on the
/// message path, so a dead Redis must cost a client milliseconds to seconds, not the
/// manager's default six-retry backoff.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_RETRIES: usize = 1;
const MAX_RETRY_DELAY: Duration = Duration::from_millis(200);

/// `PEXPIRE` bounds: at least a second so a zero timeout does not delete the entry as
/// it is written, at most ~100 years so an absurd timeout ("never") cannot overflow
/// Redis's expiry arithmetic ("invalid expire time").
const MIN_TTL_MS: i64 = 1_000;
const MAX_TTL_MS: i64 = 100 * 365 * 24 * 60 * 60 * 1_000;

/// Prepended to the set and leave scripts: `load` decodes a stored entry (nil when
/// absent or unreadable: not ours, not C#'s, so it is overwritten rather than
/// blocking the client for good); `foreign` says whether another connection *and*
/// user own it and it is still live at `now` (the ownership rule of the `awareness`
/// module).
const OWNER_LUA: &str = r"
local function load(hash, client)
  local stored = redis.call('HGET', hash, client)
  if not stored then return nil end
  local ok, entry = pcall(cjson.decode, stored)
  if ok and type(entry) == 'table' then return entry end
  return nil
end
local function foreign(entry, conn, user, now)
  return (entry['connectionId'] or '') ~= conn and (entry['userId'] or '') ~= user
    and (tonumber(entry['expiresAt']) or 0) > tonumber(now)
end
";

/// Clock-ordered, owner-checked write. KEYS: hash, expiry zset, document set,
/// connection index. ARGV: client id, clock, entry JSON, expiresAt, TTL ms, document
/// id, index member, connection id, user id, now. Returns 1 when stored, 0 when
/// stale, 2 when another connection and user own the live entry.
const SET_LUA: &str = r"
local entry = load(KEYS[1], ARGV[1])
if entry then
  if foreign(entry, ARGV[8], ARGV[9], ARGV[10]) then
    return 2
  end
  local clock = tonumber(entry['clock'])
  if clock and tonumber(ARGV[2]) <= clock then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[6])
redis.call('SADD', KEYS[4], ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[4], ARGV[5])
return 1
";

/// Prepended to the scripts that remove entries: `forget_if_empty` drops a document
/// whose hash is gone (its expiry zset and its member of the document set);
/// `remove` deletes one client's entry and then does that.
const REMOVE_LUA: &str = r"
local function forget_if_empty(hash, zset, docs, doc)
  if redis.call('EXISTS', hash) == 0 then
    redis.call('DEL', zset)
    redis.call('SREM', docs, doc)
  end
end
local function remove(hash, zset, docs, client, doc)
  redis.call('HDEL', hash, client)
  redis.call('ZREM', zset, client)
  forget_if_empty(hash, zset, docs, doc)
end
";

/// Leave: remove what is stored unless another connection and user own the live
/// entry (then 2). KEYS: hash, zset, document set, the leaving connection's index.
/// ARGV: client id, document id, index member, connection id, user id, now.
const LEAVE_LUA: &str = r"
local entry = load(KEYS[1], ARGV[1])
if entry and foreign(entry, ARGV[4], ARGV[5], ARGV[6]) then
  return 2
end
redis.call('SREM', KEYS[4], ARGV[3])
remove(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
return 1
";

/// Remove one indexed entry if this connection wrote it last; returns its JSON or nil.
/// KEYS: hash, zset, document set, connection index. ARGV: client id, document id,
/// index member, connection id.
const REMOVE_OWNED_LUA: &str = r"
redis.call('SREM', KEYS[4], ARGV[3])
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if not stored then
  return false
end
local ok, entry = pcall(cjson.decode, stored)
if not ok or type(entry) ~= 'table' or entry['connectionId'] ~= ARGV[4] then
  return false
end
remove(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
return stored
";

/// Entries of one document due at `now` (score <= now), as client, JSON, client, JSON…
/// KEYS: hash, zset. ARGV: now.
#[cfg(any(test, feature = "test-util"))]
const EXPIRED_LUA: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local out = {}
for _, client in ipairs(due) do
  local stored = redis.call('HGET', KEYS[1], client)
  if stored then
    out[#out + 1] = client
    out[#out + 1] = stored
  end
end
return out
";

/// C#'s cleanup for one document, atomically so an entry refreshed meanwhile is either
/// pruned before the refresh or kept (never pruned after it, sending a false leave).
/// Also forgets a document whose hash is gone. KEYS: hash, zset, document set.
/// ARGV: now, document id. Returns client, JSON, client, JSON…
const PRUNE_LUA: &str = r"
local out = {}
if redis.call('EXISTS', KEYS[1]) == 1 then
  local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
  for _, client in ipairs(due) do
    local stored = redis.call('HGET', KEYS[1], client)
    if stored then
      redis.call('HDEL', KEYS[1], client)
      out[#out + 1] = client
      out[#out + 1] = stored
    end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
end
forget_if_empty(KEYS[1], KEYS[2], KEYS[3], ARGV[2])
return out
";

/// The entry JSON, field order as C# writes it, plus our `connectionId`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredEntry {
    document_id: String,
    client_id: String,
    state: StoredState,
    clock: u64,
    expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    connection_id: Option<String>,
    /// Ours too: the owning user (see the `awareness` module's ownership rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredState {
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    state: Value,
    #[serde(default)]
    clock: u64,
    /// Missing only in entries someone else wrote; then derived from `expiresAt`.
    #[serde(default)]
    last_updated: Option<i64>,
}

struct Scripts {
    set: Script,
    leave: Script,
    remove_owned: Script,
    #[cfg(any(test, feature = "test-util"))]
    expired: Script,
    prune: Script,
}

pub struct RedisAwarenessStore {
    conn: ConnectionManager,
    prefix: String,
    timeout_ms: i64,
    scripts: Scripts,
}

impl RedisAwarenessStore {
    /// Store on the Redis at `url` (`redis://`, `rediss://`, `unix://`), keys under
    /// `synckit:`. Fails only for a URL the `redis` crate cannot parse or
    /// when called outside a Tokio runtime; an unreachable Redis is not an error here.
    #[cfg(any(test, feature = "test-util"))]
    pub fn new(url: &str, timeout: Duration) -> Result<RedisAwarenessStore, AwarenessError> {
        let client = Client::open(url).map_err(|e| {
            AwarenessError::Unavailable(format!("invalid Redis URL for the awareness store: {e}"))
        })?;
        RedisAwarenessStore::from_client(client, timeout)
    }

    /// Same as [`new`](Self::new) with a client built elsewhere (e.g. from the
    /// StackExchange-style `host:port,options` form the pub/sub configuration accepts).
    pub(crate) fn from_client(
        client: Client,
        timeout: Duration,
    ) -> Result<RedisAwarenessStore, AwarenessError> {
        // The lazy manager spawns its watcher task at once; without a runtime that
        // would panic, so say what is wrong instead.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(AwarenessError::Unavailable(
                "the Redis awareness store must be created inside a Tokio runtime".into(),
            ));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(CONNECT_RETRIES)
            .set_max_delay(MAX_RETRY_DELAY);
        let conn = client
            .get_connection_manager_lazy(config)
            .map_err(redis_error("connection setup"))?;
        // Connect in the background so the first client does not pay for it, and so an
        // operator sees at startup that Redis is missing.
        let mut warm = conn.clone();
        tokio::spawn(async move {
            if let Err(e) = redis::cmd("PING").query_async::<()>(&mut warm).await {
                tracing::warn!(
                    error = %e,
                    "Redis awareness store: Redis unreachable at startup; will retry on use"
                );
            }
        });
        Ok(RedisAwarenessStore {
            conn,
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
            // Same conversion as the memory store, so all stores expire at one instant.
            timeout_ms: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
            scripts: Scripts {
                set: Script::new(&format!("{OWNER_LUA}{SET_LUA}")),
                leave: Script::new(&format!("{OWNER_LUA}{REMOVE_LUA}{LEAVE_LUA}")),
                remove_owned: Script::new(&format!("{REMOVE_LUA}{REMOVE_OWNED_LUA}")),
                #[cfg(any(test, feature = "test-util"))]
                expired: Script::new(EXPIRED_LUA),
                prune: Script::new(&format!("{REMOVE_LUA}{PRUNE_LUA}")),
            },
        })
    }

    /// Put every key under `prefix` instead of `synckit:` (C# cannot be configured, so
    /// only a prefix-less C# fleet needs the default). Tests use a unique one each.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> RedisAwarenessStore {
        self.prefix = prefix.into();
        self
    }

    #[cfg(any(test, feature = "test-util"))]
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// Round trip to Redis, for readiness checks and for tests that must fail loudly
    /// when Redis is missing.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn ping(&self) -> Result<Duration, AwarenessError> {
        let started = Instant::now();
        redis::cmd("PING")
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(redis_error("ping"))?;
        Ok(started.elapsed())
    }

    fn hash_key(&self, document_id: &str) -> String {
        format!("{}awareness:{document_id}", self.prefix)
    }

    fn expires_key(&self, document_id: &str) -> String {
        format!("{}awareness:expires:{document_id}", self.prefix)
    }

    fn docs_key(&self) -> String {
        format!("{}awareness:docs", self.prefix)
    }

    fn connection_key(&self, connection_id: &str) -> String {
        format!("{}awareness-conn:{connection_id}", self.prefix)
    }

    /// `script` called the way the set and leave scripts both read their
    /// input: KEYS the document's hash and expiry index, the document list and the
    /// connection's entries; ARGV the client id, the script's own arguments
    /// (`own`), then the document, its index member and the writer (connection,
    /// user, time) the ownership checks need.
    fn entry_script<'a>(
        &self,
        script: &'a redis::Script,
        update: &AwarenessUpdate,
        member: &str,
        own: impl FnOnce(&mut redis::ScriptInvocation<'a>),
    ) -> redis::ScriptInvocation<'a> {
        let doc = update.document_id.as_str();
        let mut call = script.prepare_invoke();
        call.key(self.hash_key(doc))
            .key(self.expires_key(doc))
            .key(self.docs_key())
            .key(self.connection_key(&update.connection_id))
            .arg(&update.client_id);
        own(&mut call);
        call.arg(doc)
            .arg(member)
            .arg(&update.connection_id)
            .arg(&update.user_id)
            .arg(update.now_ms);
        call
    }

    fn ttl_ms(&self) -> i64 {
        self.timeout_ms
            .saturating_mul(2)
            .clamp(MIN_TTL_MS, MAX_TTL_MS)
    }

    /// Turn a stored JSON value into an entry. The document and client come from the
    /// key and hash field (the layout's source of truth); an unreadable value is skipped
    /// with a warning so one foreign entry cannot hide a whole document's presence.
    fn decode(&self, document_id: &str, client_id: &[u8], raw: &[u8]) -> Option<AwarenessEntry> {
        self.decode_with_expiry(document_id, client_id, raw)
            .map(|(entry, _)| entry)
    }

    /// [`decode`](Self::decode), also returning the entry's `expiresAt`.
    fn decode_with_expiry(
        &self,
        document_id: &str,
        client_id: &[u8],
        raw: &[u8],
    ) -> Option<(AwarenessEntry, i64)> {
        let client_id = match std::str::from_utf8(client_id) {
            Ok(id) => id.to_owned(),
            Err(_) => {
                tracing::warn!(
                    document_id,
                    "Redis awareness: skipping a non-UTF-8 client id"
                );
                return None;
            }
        };
        let stored: StoredEntry = match serde_json::from_slice(raw) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(
                    document_id,
                    client_id,
                    error = %e,
                    "Redis awareness: skipping an unreadable entry"
                );
                return None;
            }
        };
        let last_seen_ms = stored
            .state
            .last_updated
            .unwrap_or_else(|| stored.expires_at.saturating_sub(self.timeout_ms));
        let entry = AwarenessEntry {
            document_id: document_id.to_owned(),
            client_id,
            connection_id: stored.connection_id.unwrap_or_default(),
            user_id: stored.user_id.unwrap_or_default(),
            state: stored.state.state,
            clock: stored.clock,
            last_seen_ms,
        };
        Some((entry, stored.expires_at))
    }

    /// Decode a script's `client, JSON, client, JSON…` reply for one document.
    fn decode_pairs(&self, document_id: &str, flat: &[Vec<u8>]) -> Vec<AwarenessEntry> {
        flat.chunks_exact(2)
            .filter_map(|pair| self.decode(document_id, &pair[0], &pair[1]))
            .collect()
    }

    async fn documents(&self, op: &'static str) -> Result<Vec<String>, AwarenessError> {
        redis::cmd("SMEMBERS")
            .arg(self.docs_key())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error(op))
    }

    /// Run a per-document listing script over every document with presence. The
    /// multiplexed connection pipelines the concurrent calls into few round trips.
    async fn per_document(
        &self,
        script: &Script,
        now_ms: i64,
        with_docs_key: bool,
        op: &'static str,
    ) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        let docs = self.documents(op).await?;
        let calls = docs.iter().map(|doc| {
            let mut conn = self.conn.clone();
            let mut call = script.prepare_invoke();
            call.key(self.hash_key(doc)).key(self.expires_key(doc));
            if with_docs_key {
                call.key(self.docs_key());
            }
            call.arg(now_ms).arg(doc);
            async move {
                let flat: Vec<Vec<u8>> = call.invoke_async(&mut conn).await?;
                Ok::<_, RedisError>(self.decode_pairs(doc, &flat))
            }
        });
        let mut entries: Vec<AwarenessEntry> = try_join_all(calls)
            .await
            .map_err(redis_error(op))?
            .into_iter()
            .flatten()
            .collect();
        sort_by_document_and_client(&mut entries);
        Ok(entries)
    }
}

fn sort_by_document_and_client(entries: &mut [AwarenessEntry]) {
    entries.sort_by(|a, b| {
        (a.document_id.as_str(), a.client_id.as_str())
            .cmp(&(b.document_id.as_str(), b.client_id.as_str()))
    });
}

/// The connection-index member for an entry: a JSON pair, unambiguous whatever the
/// ids contain.
fn index_member(document_id: &str, client_id: &str) -> Result<String, AwarenessError> {
    serde_json::to_string(&(document_id, client_id)).map_err(|e| {
        AwarenessError::Unavailable(format!(
            "Redis awareness: cannot encode an index member: {e}"
        ))
    })
}

/// Every failure is reported as unavailable: callers (sync path, sweeper) can only log
/// it and carry on, and the message names the operation and the cause.
fn redis_error(op: &'static str) -> impl FnOnce(RedisError) -> AwarenessError {
    move |e| {
        let hint = if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() {
            " (is Redis running and reachable?)"
        } else {
            ""
        };
        AwarenessError::Unavailable(format!("Redis awareness {op} failed: {e}{hint}"))
    }
}

#[async_trait]
impl AwarenessStore for RedisAwarenessStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn set(&self, mut update: AwarenessUpdate) -> Result<SetOutcome, AwarenessError> {
        // Taken out first: the rest of `update` is lent to the scripts' calls.
        let state = update.state.take();
        let doc = update.document_id.as_str();
        let member = index_member(doc, &update.client_id)?;
        let mut conn = self.conn.clone();
        let Some(state) = state else {
            // A leave wins whatever its clock and whether or not an entry exists,
            // over an entry this connection or user may replace.
            let outcome: i64 = self
                .entry_script(&self.scripts.leave, &update, &member, |_| {})
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error("leave"))?;
            return Ok(if outcome == 2 {
                SetOutcome::NotOwner
            } else {
                SetOutcome::Left
            });
        };
        let expires_at = update.now_ms.saturating_add(self.timeout_ms);
        let json = serde_json::to_string(&StoredEntry {
            document_id: update.document_id.clone(),
            client_id: update.client_id.clone(),
            state: StoredState {
                client_id: update.client_id.clone(),
                state,
                clock: update.clock,
                last_updated: Some(update.now_ms),
            },
            clock: update.clock,
            expires_at,
            connection_id: Some(update.connection_id.clone()),
            user_id: Some(update.user_id.clone()),
        })
        .map_err(|e| {
            AwarenessError::Unavailable(format!("Redis awareness: cannot encode an entry: {e}"))
        })?;
        let stored: i64 = self
            .entry_script(&self.scripts.set, &update, &member, |call| {
                call.arg(update.clock)
                    .arg(json)
                    .arg(expires_at)
                    .arg(self.ttl_ms());
            })
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error("set"))?;
        Ok(match stored {
            1 => SetOutcome::Accepted,
            2 => SetOutcome::NotOwner,
            _ => SetOutcome::Stale,
        })
    }

    async fn get_all(
        &self,
        document_id: &str,
        now_ms: i64,
    ) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        // One HGETALL is a consistent snapshot of the document; expiry is judged on the
        // entry's own `expiresAt` (what C# wrote, if C# wrote it).
        let raw: HashMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL")
            .arg(self.hash_key(document_id))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error("get_all"))?;
        let mut entries: Vec<AwarenessEntry> = raw
            .iter()
            .filter_map(|(client, value)| self.decode_with_expiry(document_id, client, value))
            .filter(|(entry, expires_at)| *expires_at > now_ms && !entry.state.is_null())
            .map(|(entry, _)| entry)
            .collect();
        entries.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Ok(entries)
    }

    async fn remove_connection(
        &self,
        connection_id: &str,
    ) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        let index = self.connection_key(connection_id);
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error("remove_connection"))?;
        // Each removal is atomic on its own (the ownership check and the delete happen
        // in one script); the connection is closing, so nothing adds members meanwhile.
        let calls = members.iter().filter_map(|member| {
            let Ok((doc, client)) = serde_json::from_str::<(String, String)>(member) else {
                tracing::warn!(
                    member,
                    "Redis awareness: skipping an unreadable index member"
                );
                return None;
            };
            let mut conn = self.conn.clone();
            let mut call = self.scripts.remove_owned.prepare_invoke();
            call.key(self.hash_key(&doc))
                .key(self.expires_key(&doc))
                .key(self.docs_key())
                .key(&index)
                .arg(&client)
                .arg(&doc)
                .arg(member)
                .arg(connection_id);
            Some(async move {
                let raw: Option<Vec<u8>> = call.invoke_async(&mut conn).await?;
                Ok::<_, RedisError>(raw.and_then(|raw| self.decode(&doc, client.as_bytes(), &raw)))
            })
        });
        let mut removed: Vec<AwarenessEntry> = try_join_all(calls)
            .await
            .map_err(redis_error("remove_connection"))?
            .into_iter()
            .flatten()
            .collect();
        sort_by_document_and_client(&mut removed);
        Ok(removed)
    }

    #[cfg(any(test, feature = "test-util"))]
    async fn expired(&self, now_ms: i64) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        self.per_document(&self.scripts.expired, now_ms, false, "expired")
            .await
    }

    async fn prune_expired(&self, now_ms: i64) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        self.per_document(&self.scripts.prune, now_ms, true, "prune_expired")
            .await
    }

    async fn count(&self) -> Result<usize, AwarenessError> {
        // Stored entries, expired-but-unpruned included, like the memory store. One
        // pipelined HLEN per document; not a snapshot across documents, which a stats
        // figure does not need.
        let docs = self.documents("count").await?;
        if docs.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for doc in &docs {
            pipe.cmd("HLEN").arg(self.hash_key(doc));
        }
        let lens: Vec<usize> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error("count"))?;
        Ok(lens.into_iter().sum())
    }
}
