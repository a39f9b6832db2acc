//! Several instances on one real Redis (`REDIS_URL`), each test on its own channel
//! prefix: writes, text relays and awareness cross instances exactly once, Redis
//! subscriptions follow local interest, presence lists the fleet, and a Redis
//! outage (a server the test owns, killed and restarted) is survived: publishes are
//! dropped and counted, channels are subscribed again, traffic resumes.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::redis::{
    another, eventually, fleet_config, poll, publish_raw, redis_url, start_instance, test_prefix,
    wait_numsub, Instance, OwnedRedis,
};
use common::{fugue, http, of_type, subscribe, text_of, Client};
use serde_json::{json, Value};
use synckit::server::ServerConfig;
use synckit::testing::pubsub::{PubSub, PubSubState};
use synckit::testing::storage::MemoryStorage;

/// Long enough for a stray duplicate to arrive (Redis round trips are sub-ms).
const QUIET: Duration = Duration::from_millis(300);

async fn instance(config: ServerConfig, url: &str) -> Instance {
    start_instance(config, url, Arc::new(MemoryStorage::new())).await
}

fn write(doc: &str, field: &str, value: Value, id: &str) -> Value {
    json!({"type": "delta", "documentId": doc, "field": field, "value": value,
           "clock": {"w": 1}, "clientId": "w", "timestamp": 1, "messageId": id})
}

/// Field → value of every `delta` in `messages`, and how many there were per field.
fn deltas(messages: &[Value]) -> (HashMap<String, Value>, HashMap<String, usize>) {
    let mut values = HashMap::new();
    let mut counts = HashMap::new();
    for m in of_type(messages, "delta") {
        let field = m["field"].as_str().expect("field").to_owned();
        *counts.entry(field.clone()).or_insert(0) += 1;
        values.insert(field, m["value"].clone());
    }
    (values, counts)
}

/// Every message that arrives until `QUIET` passes without one.
async fn drain(c: &mut Client) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(m) = c.recv_timeout(QUIET).await {
        out.push(m);
    }
    out
}

/// [`drain`] several clients at once.
async fn drain_all(clients: Vec<&mut Client>) -> Vec<Vec<Value>> {
    futures_util::future::join_all(clients.into_iter().map(drain)).await
}

#[tokio::test]
async fn writes_on_one_instance_reach_the_others_subscribers_once_in_both_encodings() {
    let url = redis_url();
    let prefix = test_prefix();
    let a = instance(fleet_config(&prefix), &url).await;
    let b = instance(fleet_config(&prefix), &url).await;
    let doc = "fan-doc";
    let mut writer = Client::connect(&a.server, false).await;
    let mut local = Client::connect(&a.server, true).await;
    let mut bin = Client::connect(&b.server, true).await;
    let mut txt = Client::connect(&b.server, false).await;
    for c in [&mut writer, &mut local, &mut bin, &mut txt] {
        subscribe(c, doc).await;
    }
    // Both instances' subscriber connections listen before anything is written.
    wait_numsub(&url, &format!("{prefix}delta:{doc}"), 2).await;

    let n = 20;
    for i in 0..n {
        writer
            .send(write(doc, &format!("f{i}"), json!(i), &format!("m{i}")))
            .await;
    }
    for got in drain_all(vec![&mut writer, &mut local, &mut bin, &mut txt]).await {
        let (values, counts) = deltas(&got);
        assert_eq!(values.len(), n, "every field arrives: {got:?}");
        assert_eq!(values["f7"], json!(7));
        assert!(
            counts.values().all(|c| *c == 1),
            "no duplicates: {counts:?}"
        );
        for d in of_type(&got, "delta") {
            assert_eq!(d["documentId"], doc);
            assert_eq!(d["clientId"], "server", "SDK shape: {d}");
            assert!(
                d["clock"].as_object().is_some_and(|c| !c.is_empty()),
                "non-empty clock: {d}"
            );
        }
    }
    // An overwrite crosses too, once.
    writer.send(write(doc, "f0", json!("last"), "m-last")).await;
    for got in drain_all(vec![&mut writer, &mut local, &mut bin, &mut txt]).await {
        assert_eq!(of_type(&got, "delta").len(), 1, "{got:?}");
        assert_eq!(of_type(&got, "delta")[0]["value"], "last");
    }
    let mut late = Client::connect(&b.server, false).await;
    let state = subscribe(&mut late, doc).await["state"].clone();
    assert_eq!(state["f0"], json!("last"));
    assert_eq!(state.as_object().map(|m| m.len()), Some(n));

    let stats_a = http(a.admin, "GET", "/stats", &[], None).await.json();
    let stats_b = http(b.admin, "GET", "/stats", &[], None).await.json();
    assert!(stats_b["pubsub"]["received"].as_u64() >= Some(2));
    assert_eq!(stats_a["pubsub"]["backend"], "redis");
    assert_eq!(stats_a["pubsub"]["state"], "connected");
    assert_eq!(stats_a["pubsub"]["dropped"], 0);
}

#[tokio::test]
async fn text_states_merge_and_relay_across_instances() {
    let url = redis_url();
    let prefix = test_prefix();
    let a = instance(fleet_config(&prefix), &url).await;
    let b = instance(fleet_config(&prefix), &url).await;
    let doc = "fan-text";
    let mut on_a = Client::connect(&a.server, false).await;
    let mut on_b = Client::connect(&b.server, true).await;
    subscribe(&mut on_a, doc).await;
    subscribe(&mut on_b, doc).await;
    wait_numsub(&url, &format!("{prefix}delta:{doc}"), 2).await;

    on_a.send(json!({"type":"delta_batch","documentId":doc,"messageId":"t1","deltas":[
        {"type":"text-state","documentId":doc,"state":fugue("client-a","Hello"),"clientId":"client-a","timestamp":1000}
    ]}))
    .await;
    let m = on_b.expect("delta_batch").await;
    assert_eq!(text_of(&m["deltas"][0]["state"]), "Hello");
    on_b.send(json!({"type":"delta_batch","documentId":doc,"messageId":"t2","deltas":[
        {"type":"text-state","documentId":doc,"state":fugue("client-b","World"),"clientId":"client-b","timestamp":2000}
    ]}))
    .await;
    let m = on_a.expect("delta_batch").await;
    let merged = text_of(&m["deltas"][0]["state"]);
    assert!(
        merged.contains("Hello") && merged.contains("World"),
        "A relays the merge of its own and B's state: {merged}"
    );
    assert!(of_type(&drain(&mut on_a).await, "delta_batch").is_empty());
    assert!(of_type(&drain(&mut on_b).await, "delta_batch").is_empty());
}

async fn aware(c: &mut Client, doc: &str, client: &str, state: Value, clock: u64) {
    c.send(json!({"type":"awareness_update","documentId":doc,"clientId":client,"state":state,"clock":clock}))
        .await;
}

#[tokio::test]
async fn awareness_joins_leaves_and_expiry_cross_instances_once() {
    let url = redis_url();
    let prefix = test_prefix();
    let mut config = fleet_config(&prefix);
    config.sync.awareness_timeout = Duration::from_millis(800);
    config.awareness_sweep_interval = Duration::from_millis(400);
    // B sweeps far more often: it expires its copy of X first and announces the
    // leave, which reaches A's clients instead of A's own expiry.
    let a = instance(another(&config), &url).await;
    let mut config_b = another(&config);
    config_b.awareness_sweep_interval = Duration::from_millis(20);
    let b = instance(config_b, &url).await;
    let doc = "fan-aware";
    let mut x = Client::connect(&a.server, false).await;
    let mut y = Client::connect(&b.server, true).await;
    for c in [&mut x, &mut y] {
        c.send(json!({"type":"awareness_subscribe","documentId":doc}))
            .await;
        c.expect("awareness_state").await;
    }
    wait_numsub(&url, &format!("{prefix}awareness:{doc}"), 2).await;

    // Join and leave.
    aware(&mut x, doc, "cx", json!({"name": "X"}), 1).await;
    let m = y.expect("awareness_update").await;
    assert_eq!(
        (
            m["clientId"].clone(),
            m["state"].clone(),
            m["clock"].clone()
        ),
        (json!("cx"), json!({"name": "X"}), json!(1))
    );
    aware(&mut x, doc, "cx", Value::Null, 2).await;
    let m = y.expect("awareness_update").await;
    assert_eq!(
        (m["clientId"].clone(), m["state"].clone()),
        (json!("cx"), Value::Null)
    );
    assert!(
        of_type(&drain(&mut y).await, "awareness_update").is_empty(),
        "once each"
    );

    // A late joiner on B sees X's presence (B keeps a copy).
    aware(&mut x, doc, "cx", json!({"name": "X2"}), 3).await;
    y.expect("awareness_update").await;
    let mut z = Client::connect(&b.server, false).await;
    z.send(json!({"type":"awareness_subscribe","documentId":doc}))
        .await;
    let states = z.expect("awareness_state").await;
    assert_eq!(states["states"][0]["clientId"], "cx", "{states}");

    // X falls silent: both instances expire it, Y and Z hear one leave each.
    let leave = y.expect("awareness_update").await;
    assert_eq!(
        (leave["clientId"].clone(), leave["state"].clone()),
        (json!("cx"), Value::Null)
    );
    assert_eq!(leave["clock"], 4, "expiry leave carries clock + 1");
    assert!(
        of_type(&drain(&mut y).await, "awareness_update").is_empty(),
        "one leave: {leave}"
    );
    let zs = drain(&mut z).await;
    assert_eq!(of_type(&zs, "awareness_update").len(), 1, "{zs:?}");

    // X, silent, hears its own expiry like everybody on A; once.
    let xs = drain(&mut x).await;
    assert_eq!(of_type(&xs, "awareness_update").len(), 1, "{xs:?}");

    // A client on B that disconnects leaves for A's clients too.
    aware(&mut z, doc, "cz", json!({"name": "Z"}), 1).await;
    assert_eq!(x.expect("awareness_update").await["clientId"], "cz");
    z.close_and_wait().await;
    let m = x.expect("awareness_update").await;
    assert_eq!(
        (m["clientId"].clone(), m["state"].clone()),
        (json!("cz"), Value::Null)
    );
    assert!(of_type(&drain(&mut x).await, "awareness_update").is_empty());
}

#[tokio::test]
async fn redis_subscriptions_exist_exactly_while_there_is_local_interest() {
    let url = redis_url();
    let prefix = test_prefix();
    let a = instance(fleet_config(&prefix), &url).await;
    let doc = "interest-doc";
    let delta = format!("{prefix}delta:{doc}");
    let awareness = format!("{prefix}awareness:{doc}");
    wait_numsub(&url, &delta, 0).await;

    let mut c1 = Client::connect(&a.server, false).await;
    let mut c2 = Client::connect(&a.server, true).await;
    subscribe(&mut c1, doc).await;
    wait_numsub(&url, &delta, 1).await;
    wait_numsub(&url, &awareness, 1).await;
    subscribe(&mut c2, doc).await;
    c2.send(json!({"type":"awareness_subscribe","documentId":doc}))
        .await;
    c2.expect("awareness_state").await;
    // One Redis subscription per instance, however many local subscribers.
    wait_numsub(&url, &delta, 1).await;

    c1.send(json!({"type":"unsubscribe","documentId":doc}))
        .await;
    c1.assert_alive().await;
    wait_numsub(&url, &delta, 1).await;
    c2.send(json!({"type":"unsubscribe","documentId":doc}))
        .await;
    c2.assert_alive().await;
    // c2 still follows the awareness: the instance keeps listening.
    wait_numsub(&url, &delta, 1).await;
    c2.close_and_wait().await;
    wait_numsub(&url, &delta, 0).await;
    wait_numsub(&url, &awareness, 0).await;

    // Interest again after none: subscribed again.
    subscribe(&mut c1, doc).await;
    wait_numsub(&url, &delta, 1).await;
}

fn instance_statuses(stats: &Value) -> HashMap<String, String> {
    stats["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            (
                i["serverId"].as_str().expect("id").to_owned(),
                i["status"].as_str().expect("status").to_owned(),
            )
        })
        .collect()
}

async fn statuses(inst: &Instance) -> HashMap<String, String> {
    instance_statuses(&http(inst.admin, "GET", "/stats", &[], None).await.json())
}

#[tokio::test]
async fn presence_lists_the_fleet_and_shows_silent_and_stopped_instances_as_gone() {
    let url = redis_url();
    let prefix = test_prefix();
    let config_a = fleet_config(&prefix);
    let config_b = fleet_config(&prefix);
    let (id_a, id_b) = (
        config_a.sync.instance_id.clone(),
        config_b.sync.instance_id.clone(),
    );
    let a = instance(config_a, &url).await;
    let b = instance(config_b, &url).await;
    let mut client = Client::connect(&b.server, false).await;
    subscribe(&mut client, "presence-doc").await;

    let stats = poll(
        Duration::from_secs(5),
        "B with its connection on A",
        || async {
            let stats = http(a.admin, "GET", "/stats", &[], None).await.json();
            let online = instance_statuses(&stats).get(&id_b).map(String::as_str) == Some("online");
            if online && stats["instances"][1]["metadata"]["connections"] == 1 {
                Ok(stats)
            } else {
                Err(stats.to_string())
            }
        },
    )
    .await;
    assert_eq!(stats["instances"][0]["serverId"], id_a.as_str());
    assert_eq!(stats["instances"][0]["self"], true);
    let peer = &stats["instances"][1];
    assert_eq!(peer["metadata"]["documents"], 1, "heartbeat stats: {peer}");
    assert_eq!(peer["metadata"]["heartbeatIntervalMs"], 200);
    assert_eq!(
        statuses(&b).await.get(&id_a).map(String::as_str),
        Some("online")
    );

    // A peer that stops heartbeating without a goodbye (played here) is gone after
    // three periods.
    let presence = format!("{prefix}presence");
    let ghost = json!({"type":"server_heartbeat","serverId":"ghost","timestamp":1,"metadata":{"connections":0,"heartbeatIntervalMs":200}});
    publish_raw(&url, &presence, &ghost.to_string()).await;
    wait_status(&a, "ghost", "online").await;
    wait_status(&a, "ghost", "gone").await;

    // A stopped instance says goodbye.
    b.server.shutdown.cancel();
    assert!(b.server.done.await.expect("B stops"));
    wait_status(&a, &id_b, "offline").await;
}

async fn wait_status(inst: &Instance, id: &str, status: &str) {
    poll(
        Duration::from_secs(5),
        &format!("{id} {status}"),
        || async {
            let s = statuses(inst).await;
            match s.get(id) {
                Some(got) if got == status => Ok(()),
                _ => Err(format!("{s:?}")),
            }
        },
    )
    .await
}

#[tokio::test]
async fn while_redis_is_down_publishes_are_dropped_and_counted_then_channels_come_back() {
    let mut redis = OwnedRedis::start().await;
    let url = redis.url();
    let prefix = test_prefix();
    let a = instance(fleet_config(&prefix), &url).await;
    let b = instance(fleet_config(&prefix), &url).await;
    let doc = "outage-doc";
    let channel = format!("{prefix}delta:{doc}");
    let mut writer = Client::connect(&a.server, false).await;
    let mut reader = Client::connect(&b.server, true).await;
    subscribe(&mut writer, doc).await;
    subscribe(&mut reader, doc).await;
    wait_numsub(&url, &channel, 2).await;
    writer.send(write(doc, "f", json!(1), "m1")).await;
    assert_eq!(reader.expect("delta").await["value"], 1);
    writer.collect_until(&["ack", "delta"]).await;

    redis.kill();
    eventually(Duration::from_secs(5), "A to notice", || {
        a.pubsub.state() == PubSubState::Disconnected
    })
    .await;
    let ready = http(a.admin, "GET", "/health/ready", &[], None).await;
    assert_eq!(ready.status, 200);
    let ready = ready.json();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["pubsub"]["state"], "disconnected");
    assert_eq!(ready["pubsub"]["pingMs"], Value::Null);

    // Local clients are still served; the publish is dropped and counted.
    let before = a.pubsub.health().dropped;
    writer.send(write(doc, "f", json!(2), "m2")).await;
    let got = writer.collect_until(&["ack", "delta"]).await;
    assert_eq!(of_type(&got, "delta")[0]["value"], 2);
    eventually(Duration::from_secs(2), "a counted drop", || {
        a.pubsub.health().dropped > before
    })
    .await;
    let stats = http(a.admin, "GET", "/stats", &[], None).await.json();
    assert!(
        stats["pubsub"]["dropped"].as_u64() > Some(0),
        "{}",
        stats["pubsub"]
    );
    let metrics = http(a.admin, "GET", "/metrics", &[], None).await.body;
    assert!(metrics.contains("synckit_pubsub_connected 0"), "{metrics}");
    assert!(!metrics.contains("synckit_pubsub_dropped_total 0\n"));

    redis.restart().await;
    for inst in [&a, &b] {
        common::redis::wait_connected(&inst.pubsub).await;
        assert_eq!(inst.pubsub.health().reconnects, 1);
    }
    // Both instances subscribed their channel again.
    wait_numsub(&url, &channel, 2).await;
    let ready = http(a.admin, "GET", "/health/ready", &[], None)
        .await
        .json();
    assert_eq!(ready["status"], "healthy", "{ready}");
    eventually(Duration::from_secs(2), "a PING", || {
        a.pubsub.health().ping_ms.is_some()
    })
    .await;

    writer.send(write(doc, "g", json!(3), "m3")).await;
    let got = reader.collect_until(&["delta"]).await;
    let (values, _) = deltas(&got);
    assert_eq!(values.get("g"), Some(&json!(3)), "traffic resumes: {got:?}");
    // Without shared storage, what was missed during the outage stays missed until
    // the field is written again (README, "Running several instances").
    assert!(!values.contains_key("f") || values["f"] != json!(2));
}

#[tokio::test]
async fn published_ids_mark_echoes_only_on_messages_without_origin() {
    let url = redis_url();
    let prefix = test_prefix();
    let a = instance(fleet_config(&prefix), &url).await;
    let doc = "ids-doc";
    let channel = format!("{prefix}delta:{doc}");
    let mut c = Client::connect(&a.server, false).await;
    subscribe(&mut c, doc).await;
    let client = ::redis::Client::open(url.as_str()).expect("url");
    let mut spy = client.get_async_pubsub().await.expect("spy");
    spy.subscribe(&channel).await.expect("subscribe");
    wait_numsub(&url, &channel, 2).await;

    c.send(write(doc, "f", json!(1), "m1")).await;
    c.collect_until(&["ack", "delta"]).await;
    let published: Value = {
        let mut stream = spy.on_message();
        let msg = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut stream),
        )
        .await
        .expect("A publishes its flush")
        .expect("message");
        serde_json::from_slice(msg.get_payload_bytes()).expect("json")
    };
    assert_eq!(published["delta"], json!({"f": 1}));
    assert!(
        published["origin"].is_string() && published["id"].is_string(),
        "{published}"
    );

    // Ids are unique per instance only: a peer (another process) may reuse one of
    // ours, and its message must still apply.
    let mut peer = published.clone();
    peer["origin"] = json!("another-instance");
    peer["delta"] = json!({"f": 2});
    publish_raw(&url, &channel, &peer.to_string()).await;
    assert_eq!(c.expect("delta").await["value"], 2);

    // Without an origin (C#'s messages), a known id is our own echo.
    let mut echo = published.clone();
    echo.as_object_mut().expect("object").remove("origin");
    echo["delta"] = json!({"f": 3});
    publish_raw(&url, &channel, &echo.to_string()).await;
    // A C# message with its own id applies.
    let csharp = json!({"type": "delta", "id": "b1f0c7e2-csharp", "timestamp": 1, "documentId": doc,
                        "delta": {"f": 4}, "vectorClock": {"cs": 1}});
    publish_raw(&url, &channel, &csharp.to_string()).await;
    let got = drain(&mut c).await;
    let values: Vec<&Value> = of_type(&got, "delta").iter().map(|d| &d["value"]).collect();
    assert_eq!(values, vec![&json!(4)], "the echo is dropped: {got:?}");
}
