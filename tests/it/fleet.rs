//! Several `synckit serve` processes on one PostgreSQL and Redis: a document's text
//! state is read back when it gains its first local listener (no stale text across
//! instances), CRDT ops are relayed across instances when enabled, and a rolling
//! restart loses no acknowledged write and leaves every client converged.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::redis::{redis_url, test_prefix, wait_numsub};
use common::{database_url, spawn_serve, subscribe, text_of, Client, TestServer};
use serde_json::{json, Map, Value};
use sqlx::PgPool;
use synckit_core::crdt::FugueText;

fn fleet_env<'a>(db: &'a str, redis: &'a str, prefix: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("REDIS_URL", redis),
        ("REDIS_CHANNEL_PREFIX", prefix),
        ("SYNCKIT_PRESENCE_INTERVAL", "200ms"),
    ];
    if !db.is_empty() {
        env.push(("DATABASE_URL", db));
    }
    env
}

/// A client's copy of a document: fields and text, built from what it received.
#[derive(Default)]
struct Replica {
    fields: BTreeMap<String, Value>,
    text: Option<FugueText>,
    id: String,
}

impl Replica {
    fn new(id: &str) -> Replica {
        Replica {
            id: id.to_owned(),
            ..Replica::default()
        }
    }

    fn merge_text(&mut self, state: &str) {
        let remote: FugueText = serde_json::from_str(state).expect("a Fugue state");
        let mine = self
            .text
            .get_or_insert_with(|| FugueText::new(self.id.clone()));
        mine.merge(&remote).expect("merge");
    }

    fn observe(&mut self, m: &Value) {
        match m["type"].as_str() {
            Some("sync_response") => {
                if let Some(state) = m["state"].as_object() {
                    for (k, v) in state {
                        self.fields.insert(k.clone(), v.clone());
                    }
                }
                if let Some(t) = m["textState"].as_str() {
                    self.merge_text(t);
                }
            }
            Some("delta") => {
                let field = m["field"].as_str().expect("field").to_owned();
                if m["value"].get("__deleted").is_some() {
                    self.fields.remove(&field);
                } else {
                    self.fields.insert(field, m["value"].clone());
                }
            }
            Some("delta_batch") => {
                for op in m["deltas"].as_array().into_iter().flatten() {
                    if op["type"] == "text-state" {
                        self.merge_text(op["state"].as_str().expect("state"));
                    }
                }
            }
            _ => {}
        }
    }

    /// Insert `word` at the end of the text; returns the state to send.
    fn append(&mut self, word: &str) -> String {
        let mine = self
            .text
            .get_or_insert_with(|| FugueText::new(self.id.clone()));
        let at = mine.len();
        mine.insert(at, word).expect("insert");
        serde_json::to_string(mine).expect("serialize")
    }

    fn text(&self) -> String {
        self.text
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default()
    }
}

fn text_op(doc: &str, client: &str, state: &str) -> Value {
    json!({"type": "text-state", "documentId": doc, "state": state, "clientId": client,
           "timestamp": common::now_secs() * 1000})
}

fn batch(doc: &str, ops: Vec<Value>, id: &str) -> Value {
    json!({"type": "delta_batch", "documentId": doc, "deltas": ops, "messageId": id})
}

/// Receive into `replica` until `done` holds (or panic after `within`).
async fn receive_until(
    c: &mut Client,
    replica: &mut Replica,
    within: Duration,
    what: &str,
    done: impl Fn(&Replica) -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !done(replica) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = c.recv_timeout(left).await.unwrap_or_else(|| {
            panic!(
                "timed out waiting for {what}: fields {:?}, text {:?}",
                replica.fields,
                replica.text()
            )
        });
        assert_ne!(m["type"], "__close", "closed while waiting for {what}: {m}");
        replica.observe(&m);
    }
}

/// Wait for the ack of `id`, feeding everything else into `replica`.
async fn ack(c: &mut Client, replica: &mut Replica, id: &str) {
    loop {
        let m = c.recv().await;
        assert_ne!(m["type"], "__close", "closed before the ack of {id}: {m}");
        assert_ne!(m["type"], "error", "error instead of the ack of {id}: {m}");
        if m["type"] == "ack" && m["messageId"] == id {
            return;
        }
        replica.observe(&m);
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn a_fresh_subscriber_gets_the_text_and_fields_written_on_another_instance(pool: PgPool) {
    let (db, redis, prefix) = (database_url(&pool), redis_url(), test_prefix());
    let env = fleet_env(&db, &redis, &prefix);
    let (_p1, one) = spawn_serve(&env).await;
    let (_p2, two) = spawn_serve(&env).await;
    let doc = "stale-text";
    let channel = format!("{prefix}delta:{doc}");

    // Instance 1: text "one " and f1, then nobody listens there any more.
    let mut a = Client::connect(&one, false).await;
    let mut ra = Replica::new("client-a");
    ra.observe(&subscribe(&mut a, doc).await);
    let state = ra.append("one ");
    a.send(batch(
        doc,
        vec![
            text_op(doc, "client-a", &state),
            json!({"field": "f1", "value": 1, "clientId": "client-a"}),
        ],
        "a1",
    ))
    .await;
    ack(&mut a, &mut ra, "a1").await;
    a.close_and_wait().await;
    wait_numsub(&redis, &channel, 0).await;

    // Instance 2 continues the text to "one two " and writes f2.
    let mut b = Client::connect(&two, false).await;
    let mut rb = Replica::new("client-b");
    rb.observe(&subscribe(&mut b, doc).await);
    assert_eq!(rb.text(), "one ");
    let state = rb.append("two ");
    b.send(batch(
        doc,
        vec![
            text_op(doc, "client-b", &state),
            json!({"field": "f2", "value": 2, "clientId": "client-b"}),
        ],
        "b1",
    ))
    .await;
    ack(&mut b, &mut rb, "b1").await;

    // A fresh subscriber on instance 1 ends with both (the read-back repairs the
    // cached copy shortly after the subscribe).
    let mut c = Client::connect(&one, false).await;
    let mut rc = Replica::new("client-c");
    rc.observe(&subscribe(&mut c, doc).await);
    receive_until(
        &mut c,
        &mut rc,
        Duration::from_secs(5),
        "text and fields",
        |r| r.text() == "one two " && r.fields.len() == 2,
    )
    .await;
    assert_eq!(
        rc.fields,
        BTreeMap::from([("f1".into(), json!(1)), ("f2".into(), json!(2))])
    );
    // And the next subscriber there gets it all in its sync_response.
    let mut d = Client::connect(&one, false).await;
    let sr = subscribe(&mut d, doc).await;
    assert_eq!(text_of(&sr["textState"]), "one two ");
    assert_eq!(sr["state"], json!({"f1": 1, "f2": 2}));
}

#[tokio::test]
async fn crdt_ops_are_relayed_to_other_instances_when_enabled() {
    let (redis, prefix) = (redis_url(), test_prefix());
    let mut env = fleet_env("", &redis, &prefix);
    env.push(("SYNCKIT_RELAY_CRDT_OPS", "true"));
    let (_p1, one) = spawn_serve(&env).await;
    let (_p2, two) = spawn_serve(&env).await;
    let doc = "crdt-relay";
    let mut a = Client::connect(&one, false).await;
    let mut b = Client::connect(&two, true).await;
    subscribe(&mut a, doc).await;
    subscribe(&mut b, doc).await;
    wait_numsub(&redis, &format!("{prefix}delta:{doc}"), 2).await;
    let ops = vec![
        json!({"type": "counter", "op": "increment", "counterId": "likes", "value": 1, "clientId": "a"}),
        json!({"type": "set", "op": "add", "setId": "tags", "value": "red", "clientId": "a"}),
    ];
    a.send(batch(doc, ops.clone(), "c1")).await;
    let m = b.expect("delta_batch").await;
    assert_eq!(m["documentId"], doc);
    assert_eq!(m["deltas"], json!(ops), "{m}");
    assert!(
        m.get("isTextOperation").is_none(),
        "CRDT ops are not text: {m}"
    );
}

/// A client of the rolling-restart test: its replica, the writes it had acked.
struct Writer {
    name: String,
    client: Client,
    replica: Replica,
    acked: Vec<(String, Value)>,
}

impl Writer {
    async fn join(name: &str, server: &TestServer, doc: &str) -> Writer {
        let mut client = Client::connect(server, false).await;
        let mut replica = Replica::new(name);
        replica.observe(&subscribe(&mut client, doc).await);
        Writer {
            name: name.to_owned(),
            client,
            replica,
            acked: Vec::new(),
        }
    }

    /// Reconnect to `server` (its replica kept, as an SDK client does).
    async fn rejoin(&mut self, server: &TestServer, doc: &str) {
        self.client = Client::connect(server, false).await;
        let sr = subscribe(&mut self.client, doc).await;
        self.replica.observe(&sr);
    }

    /// Write `n` fields `<name>-<round>-<i>`; returns the unacknowledged ones when the
    /// connection closes first (they are sent again after a reconnect).
    async fn write(&mut self, doc: &str, round: &str, fields: Vec<String>) -> Vec<String> {
        let mut pending: Vec<String> = Vec::new();
        for f in &fields {
            self.client
                .send(
                    json!({"type": "delta", "documentId": doc, "field": f, "value": round,
                              "clientId": self.name, "messageId": f}),
                )
                .await;
            pending.push(f.clone());
        }
        while !pending.is_empty() {
            let Some(m) = self.client.recv_timeout(Duration::from_secs(10)).await else {
                break;
            };
            match m["type"].as_str() {
                Some("ack") => {
                    let id = m["messageId"].as_str().expect("id").to_owned();
                    pending.retain(|p| *p != id);
                    self.acked.push((id, json!(round)));
                }
                Some("__close") => break,
                Some("error") => panic!("{}: error reply {m}", self.name),
                _ => self.replica.observe(&m),
            }
        }
        pending
    }

    async fn edit_text(&mut self, doc: &str, word: &str) {
        let state = self.replica.append(word);
        let id = format!("{}-text-{word}", self.name);
        self.client
            .send(batch(doc, vec![text_op(doc, &self.name, &state)], &id))
            .await;
        ack(&mut self.client, &mut self.replica, &id).await;
    }

    /// Read until fields and text match `fields`/`text`.
    async fn converge(&mut self, fields: &BTreeMap<String, Value>, text: &str) {
        let name = self.name.clone();
        receive_until(
            &mut self.client,
            &mut self.replica,
            Duration::from_secs(10),
            &format!("{name} to converge"),
            |r| &r.fields == fields && r.text() == text,
        )
        .await;
    }
}

fn field_names(name: &str, round: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{name}-{round}-{i}")).collect()
}

#[sqlx::test(migrations = "./migrations")]
async fn a_rolling_restart_loses_no_acknowledged_write_and_every_client_converges(pool: PgPool) {
    let (db, redis, prefix) = (database_url(&pool), redis_url(), test_prefix());
    let env = fleet_env(&db, &redis, &prefix);
    let (mut proc_a, a) = spawn_serve(&env).await;
    let (_proc_b, b) = spawn_serve(&env).await;
    let doc = "rolling";
    let channel = format!("{prefix}delta:{doc}");
    let mut on_a = [
        Writer::join("a1", &a, doc).await,
        Writer::join("a2", &a, doc).await,
    ];
    let mut on_b = vec![
        Writer::join("b1", &b, doc).await,
        Writer::join("b2", &b, doc).await,
    ];
    wait_numsub(&redis, &channel, 2).await;

    // Round 1 on both instances; one text edit per client, one after another.
    for w in on_a.iter_mut().chain(on_b.iter_mut()) {
        let fields = field_names(&w.name, "r1", 20);
        assert!(w.write(doc, "r1", fields).await.is_empty());
    }
    let words = ["alpha ", "beta ", "gamma ", "delta "];
    for (w, word) in on_a.iter_mut().chain(on_b.iter_mut()).zip(words) {
        w.edit_text(doc, word).await;
    }

    // SIGTERM instance A while its clients have writes in flight.
    let mut in_flight = Vec::new();
    for w in on_a.iter_mut() {
        for f in field_names(&w.name, "r2", 50) {
            w.client
                .send(
                    json!({"type": "delta", "documentId": doc, "field": f, "value": "r2",
                              "clientId": w.name, "messageId": f}),
                )
                .await;
            in_flight.push(f);
        }
    }
    common::send_signal(proc_a.id().expect("pid"), "TERM");
    // A's clients collect their acks until the close, then reconnect to B and send
    // again what was not acknowledged.
    for w in on_a.iter_mut() {
        let mine: Vec<String> = in_flight
            .iter()
            .filter(|f| f.starts_with(&format!("{}-", w.name)))
            .cloned()
            .collect();
        let mut pending: Vec<String> = mine;
        loop {
            let Some(m) = w.client.recv_timeout(Duration::from_secs(10)).await else {
                break;
            };
            match m["type"].as_str() {
                Some("ack") => {
                    let id = m["messageId"].as_str().expect("id").to_owned();
                    pending.retain(|p| *p != id);
                    w.acked.push((id, json!("r2")));
                }
                Some("__close") => {
                    assert_eq!(m["code"], 1001, "{m}");
                    break;
                }
                _ => w.replica.observe(&m),
            }
        }
        w.rejoin(&b, doc).await;
        assert!(w.write(doc, "r2", pending).await.is_empty(), "resent on B");
    }
    let exit = tokio::time::timeout(Duration::from_secs(15), proc_a.wait())
        .await
        .expect("A exited")
        .expect("status");
    assert!(exit.success(), "A drained: {exit:?}");

    // A comes back; clients write on B, and one moves back to A.
    let (_proc_a2, a2) = spawn_serve(&env).await;
    for w in on_a.iter_mut().chain(on_b.iter_mut()) {
        let fields = field_names(&w.name, "r3", 20);
        assert!(w.write(doc, "r3", fields).await.is_empty());
    }
    let mut mover = on_b.pop().expect("b2");
    mover.rejoin(&a2, doc).await;
    wait_numsub(&redis, &channel, 2).await;
    let fields = field_names(&mover.name, "r4", 20);
    assert!(mover.write(doc, "r4", fields).await.is_empty());
    mover.edit_text(doc, "omega ").await;
    on_b.push(mover);

    // Every acknowledged write is stored.
    let mut expected: BTreeMap<String, Value> = BTreeMap::new();
    for w in on_a.iter().chain(on_b.iter()) {
        for (f, v) in &w.acked {
            expected.insert(f.clone(), v.clone());
        }
    }
    assert_eq!(
        expected.len(),
        4 * 20 + 2 * 50 + 4 * 20 + 20,
        "every write acknowledged"
    );
    let stored: Value = sqlx::query_scalar("SELECT state -> 'fields' FROM documents WHERE id = $1")
        .bind(doc)
        .fetch_one(&pool)
        .await
        .expect("row");
    let stored: Map<String, Value> = stored.as_object().cloned().unwrap_or_default();
    let missing: Vec<&String> = expected
        .keys()
        .filter(|f| !stored.contains_key(*f))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );

    // Every client, and late joiners on both instances, end with the same document.
    let text = on_b.last().expect("mover").replica.text();
    let words: HashSet<&str> = text.split_whitespace().collect();
    assert_eq!(
        words,
        HashSet::from(["alpha", "beta", "gamma", "delta", "omega"]),
        "{text:?}"
    );
    for w in on_a.iter_mut().chain(on_b.iter_mut()) {
        w.converge(&expected, &text).await;
    }
    for server in [&a2, &b] {
        let mut late = Writer::join("late", server, doc).await;
        late.converge(&expected, &text).await;
    }
}

/// Two instances on one PostgreSQL and Redis, text written on both at the same
/// moment: each instance stores its own merge, and whichever commits last must not
/// drop the other's text. Once the relays have crossed, storage holds both sides
/// for every document (a restart then serves what every client was acknowledged).
#[sqlx::test(migrations = "./migrations")]
async fn concurrent_text_writes_on_two_instances_are_all_stored(pool: PgPool) {
    use common::fugue;
    use common::redis::{another, fleet_config, start_instance};
    const DOCS: usize = 20;
    let url = redis_url();
    let prefix = test_prefix();
    let config = fleet_config(&prefix);
    let a = start_instance(another(&config), &url, common::pg_storage(&pool)).await;
    let b = start_instance(another(&config), &url, common::pg_storage(&pool)).await;
    let docs: Vec<String> = (0..DOCS).map(|i| format!("both-{i}")).collect();
    let mut on_a = Client::connect(&a.server, false).await;
    let mut on_b = Client::connect(&b.server, false).await;
    for doc in &docs {
        subscribe(&mut on_a, doc).await;
        subscribe(&mut on_b, doc).await;
        wait_numsub(&url, &format!("{prefix}delta:{doc}"), 2).await;
    }
    for doc in &docs {
        on_a.send(batch(
            doc,
            vec![text_op(doc, "ca", &fugue("ca", "Hello"))],
            &format!("a-{doc}"),
        ))
        .await;
        on_b.send(batch(
            doc,
            vec![text_op(doc, "cb", &fugue("cb", "World"))],
            &format!("b-{doc}"),
        ))
        .await;
    }
    for c in [&mut on_a, &mut on_b] {
        let mut acks = 0;
        while acks < DOCS {
            if c.recv().await["type"] == "ack" {
                acks += 1;
            }
        }
    }
    let storage = common::pg_storage(&pool);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut missing = Vec::new();
        for doc in &docs {
            let stored = storage.load_document(doc).await.expect("load");
            let text = stored
                .and_then(|s| s.text)
                .map(|(json, _)| text_of(&Value::String(json)))
                .unwrap_or_default();
            if !(text.contains("Hello") && text.contains("World")) {
                missing.push(format!("{doc}: {text:?}"));
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stored text lacks a side 10 s after both were acknowledged: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop((on_a, on_b));
    assert!(a.stop().await && b.stop().await, "writes left unpersisted");
}
