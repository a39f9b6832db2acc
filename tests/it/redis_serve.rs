//! `synckit serve` processes with `REDIS_URL`: two of them on one Redis act as one
//! service, a server whose Redis is down starts anyway and connects once Redis
//! appears, and a malformed `REDIS_URL` stops the start with a message that does
//! not leak the password.

use crate::common;

use std::time::Duration;

use common::redis::{connection, poll, redis_url, test_prefix, wait_numsub, OwnedRedis};
use common::{http, spawn_serve, subscribe, Client, TestServer};
use serde_json::{json, Value};

async fn ready(server: &TestServer) -> Value {
    http(server.addr, "GET", "/health/ready", &[], None)
        .await
        .json()
}

#[tokio::test]
async fn two_serve_processes_on_one_redis_act_as_one_service() {
    let url = redis_url();
    let prefix = test_prefix();
    let env = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_CHANNEL_PREFIX", prefix.as_str()),
        ("SYNCKIT_PRESENCE_INTERVAL", "200ms"),
        ("SYNCKIT_PUBLIC_STATS", "true"),
    ];
    let (_a_proc, a) = spawn_serve(&env).await;
    let (_b_proc, b) = spawn_serve(&env).await;
    let doc = "serve-doc";
    let mut writer = Client::connect(&a, false).await;
    let mut reader = Client::connect(&b, true).await;
    subscribe(&mut writer, doc).await;
    subscribe(&mut reader, doc).await;
    wait_numsub(&url, &format!("{prefix}delta:{doc}"), 2).await;

    writer
        .send(
            json!({"type":"delta","documentId":doc,"field":"title","value":"hi",
                     "clock":{"w":1},"clientId":"w","timestamp":1,"messageId":"m1"}),
        )
        .await;
    let m = reader.expect("delta").await;
    assert_eq!(
        (m["field"].clone(), m["value"].clone()),
        (json!("title"), json!("hi"))
    );

    // Each lists the other.
    let stats = poll(Duration::from_secs(5), "B listed on A", || async {
        let stats = http(a.addr, "GET", "/stats", &[], None).await.json();
        match stats["instances"].as_array() {
            Some(i) if i.len() == 2 && i[1]["status"] == "online" => Ok(stats),
            _ => Err(stats.to_string()),
        }
    })
    .await;
    assert_eq!(stats["pubsub"]["backend"], "redis");
    let r = ready(&a).await;
    assert_eq!(r["status"], "healthy", "{r}");
    assert_eq!(r["pubsub"]["state"], "connected");
    assert!(r["pubsub"]["pingMs"].is_number(), "{r}");
}

#[tokio::test]
async fn serve_starts_while_redis_is_down_and_connects_when_it_appears() {
    let mut redis = OwnedRedis::start().await;
    redis.kill();
    let url = redis.url();
    let (_proc, server) = spawn_serve(&[("REDIS_URL", url.as_str())]).await;
    // Serving: a client is answered while Redis is unreachable.
    let mut c = Client::connect(&server, false).await;
    subscribe(&mut c, "alone").await;
    let r = ready(&server).await;
    assert_eq!(r["status"], "degraded", "{r}");
    assert_eq!(r["pubsub"]["state"], "disconnected");
    assert!(r["pubsub"]["lastError"].is_string(), "{r}");

    redis.restart().await;
    let r = poll(Duration::from_secs(10), "ready to say healthy", || async {
        let r = ready(&server).await;
        if r["status"] == "healthy" {
            Ok(r)
        } else {
            Err(r.to_string())
        }
    })
    .await;
    assert_eq!(r["pubsub"]["state"], "connected");
    // The live document's channel was subscribed on connecting.
    wait_numsub(&url, "synckit:delta:alone", 1).await;
}

#[tokio::test]
async fn a_malformed_redis_url_stops_the_start_without_echoing_the_password() {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_synckit"))
            .arg("serve")
            .env_remove("DATABASE_URL")
            .env("REDIS_URL", "redis://user:hunter2@cache:notaport")
            .env("PORT", "0")
            .env("SYNCKIT_ADMIN_LISTEN", "off")
            .output(),
    )
    .await
    .expect("exits promptly")
    .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("REDIS_URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test]
async fn the_redis_awareness_store_is_shared_by_the_fleet() {
    let url = redis_url();
    let prefix = test_prefix();
    let env = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_CHANNEL_PREFIX", prefix.as_str()),
        ("SYNCKIT_AWARENESS_STORE", "redis"),
    ];
    let (_a_proc, a) = spawn_serve(&env).await;
    let (_b_proc, b) = spawn_serve(&env).await;
    let doc = format!("aw-{}", uuid::Uuid::new_v4());
    let mut alice = Client::connect(&a, false).await;
    alice
        .send(
            json!({"type":"awareness_update","documentId":doc,"clientId":"alice",
                     "state":{"name":"Alice"},"clock":1}),
        )
        .await;
    // The entry is in Redis under the C# layout, so B (and C#) read the same state,
    // under the fleet's prefix like every channel: two fleets on one Redis never
    // share presence.
    let mut conn = connection(&url).await;
    let key = format!("{prefix}awareness:{doc}");
    let stored: Option<String> = poll(Duration::from_secs(5), "entry in Redis", || {
        let key = key.clone();
        let mut conn = conn.clone();
        async move {
            let v: Option<String> = redis::cmd("HGET")
                .arg(&key)
                .arg("alice")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            v.map(Some).ok_or_else(|| "not yet".to_string())
        }
    })
    .await;
    let entry: Value = serde_json::from_str(&stored.expect("entry")).expect("json");
    assert_eq!(entry["state"]["state"], json!({"name": "Alice"}));
    let default = format!("synckit:awareness:{doc}");
    let stray: i64 = redis::cmd("EXISTS")
        .arg(&default)
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert_eq!(stray, 0, "an awareness key outside the prefix: {default}");
    let mut bob = Client::connect(&b, false).await;
    bob.send(json!({"type":"awareness_subscribe","documentId":doc}))
        .await;
    let st = bob.expect("awareness_state").await;
    assert_eq!(st["states"][0]["clientId"], "alice", "{st}");
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("cleanup");
}
