//! Wire tests for authentication and RBAC (docs/protocol.md §5, §6, §12) over real sockets.

use crate::common;

use std::time::Duration;

use base64::Engine;
use common::{fugue, jwt, jwt_with, now_secs, start, user_token, Client, TestServer, TEST_SECRET};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use synckit::server::ServerConfig;
use synckit::testing::auth::{Authenticator, Identity, Permissions, TokenKind};

const ENCODINGS: [bool; 2] = [true, false];

fn auth_required() -> ServerConfig {
    ServerConfig::for_tests(true)
}

async fn auth(c: &mut Client, token: &str) -> Value {
    c.send(json!({"type":"auth","id":"a1","timestamp":1,"token":token}))
        .await;
    c.recv().await
}

/// Authenticate with `token` and assert `auth_success`.
async fn signed_in(server: &TestServer, binary: bool, token: &str) -> Client {
    let mut c = Client::connect(server, binary).await;
    let m = auth(&mut c, token).await;
    assert_eq!(m["type"], "auth_success", "{m}");
    c
}

async fn expect_error(c: &mut Client, error: &str, details: Value) {
    let m = c.recv().await;
    assert_eq!(m["type"], "error", "expected error {error:?}, got {m}");
    assert_eq!(m["error"], error, "{m}");
    assert_eq!(
        m.get("details").cloned().unwrap_or(Value::Null),
        details,
        "{m}"
    );
}

async fn expect_denied(c: &mut Client, document_id: &str) {
    expect_error(c, "Permission denied", json!({ "documentId": document_id })).await;
}

/// `sync_request` with an id, returning the matching `sync_response`.
async fn sync(c: &mut Client, document_id: &str, id: &str) -> Value {
    c.send(json!({"type":"sync_request","id":id,"timestamp":1,"documentId":document_id}))
        .await;
    let m = c.recv().await;
    assert_eq!(m["type"], "sync_response", "{m}");
    assert_eq!(m["requestId"], id, "{m}");
    assert_eq!(m["documentId"], document_id, "{m}");
    m
}

fn alg_none_token(claims: &Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims.to_string())
    )
}

fn issuer() -> Authenticator {
    Authenticator::new(auth_required().jwt)
}

#[tokio::test]
async fn valid_tokens_in_every_hs_algorithm_and_both_encodings() {
    let server = start(auth_required()).await;
    for binary in ENCODINGS {
        for (alg, name) in [
            (Algorithm::HS256, "hs256"),
            (Algorithm::HS384, "hs384"),
            (Algorithm::HS512, "hs512"),
        ] {
            let user = format!("user-{name}-{binary}");
            let token = jwt_with(
                alg,
                &json!({
                    "userId": user,
                    "email": "a@example.com",
                    "permissions": {"canRead": ["doc-a"], "canWrite": ["doc-a"], "isAdmin": false},
                    "iat": now_secs(),
                    "exp": now_secs() + 60,
                }),
                TEST_SECRET,
            );
            let mut c = Client::connect(&server, binary).await;
            let m = auth(&mut c, &token).await;
            assert_eq!(m["type"], "auth_success", "{name}: {m}");
            assert_eq!(m["userId"], user.as_str());
            assert_eq!(
                m["permissions"],
                json!({"canRead": ["doc-a"], "canWrite": ["doc-a"], "isAdmin": false})
            );
            let sr = sync(&mut c, "doc-a", "r1").await;
            assert_eq!(sr["state"], json!({}));
        }
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn user_id_claim_then_sub_and_string_permissions() {
    let server = start(auth_required()).await;
    for binary in ENCODINGS {
        // C#-style: `sub` only, permissions as a JSON string, no exp.
        let token = jwt(&json!({
            "sub": "sub-user",
            "permissions": "{\"canRead\":[\"*\"],\"canWrite\":[],\"isAdmin\":false}",
        }));
        let mut c = Client::connect(&server, binary).await;
        let m = auth(&mut c, &token).await;
        assert_eq!(m["type"], "auth_success", "{m}");
        assert_eq!(m["userId"], "sub-user");
        assert_eq!(
            m["permissions"],
            json!({"canRead": ["*"], "canWrite": [], "isAdmin": false})
        );
        sync(&mut c, "any-doc", "r1").await;
        c.send(json!({"type":"delta","documentId":"any-doc","delta":{"f":1},"messageId":"m1"}))
            .await;
        expect_denied(&mut c, "any-doc").await;

        // `userId` wins over `sub` when both are present.
        let both = jwt(&json!({"userId": "ts-user", "sub": "cs-user"}));
        let mut c = Client::connect(&server, binary).await;
        let m = auth(&mut c, &both).await;
        assert_eq!(m["userId"], "ts-user", "{m}");
        // No permissions claim: nothing is granted (not a crash).
        assert_eq!(
            m["permissions"],
            json!({"canRead": [], "canWrite": [], "isAdmin": false})
        );
        c.send(json!({"type":"subscribe","documentId":"doc-a"}))
            .await;
        expect_denied(&mut c, "doc-a").await;
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn rejected_tokens_get_auth_error_then_close_1008() {
    let perms = json!({"canRead": ["*"], "canWrite": ["*"], "isAdmin": true});
    let refresh = issuer()
        .issue(
            &Identity {
                user_id: "u".into(),
                email: None,
                permissions: Permissions::admin(),
            },
            TokenKind::Refresh,
            now_secs(),
        )
        .expect("issue");
    let bad_tokens = [
        (
            "expired",
            jwt(&json!({"userId":"u","permissions":perms,"exp": now_secs() - 5})),
        ),
        (
            "not yet valid",
            jwt(&json!({"userId":"u","permissions":perms,"nbf": now_secs() + 60})),
        ),
        (
            "wrong secret",
            jwt_with(
                Algorithm::HS256,
                &json!({"userId":"u","permissions":perms}),
                "another-secret-that-is-long-enough-0123456789",
            ),
        ),
        (
            "alg none",
            alg_none_token(&json!({"userId":"u","permissions":perms})),
        ),
        ("garbage", "not-a-jwt".to_owned()),
        ("no subject", jwt(&json!({"permissions":perms}))),
        ("refresh token", refresh),
    ];
    for auth_required in [true, false] {
        let server = start(ServerConfig::for_tests(auth_required)).await;
        for binary in ENCODINGS {
            for (what, token) in &bad_tokens {
                let mut c = Client::connect(&server, binary).await;
                let m = auth(&mut c, token).await;
                assert_eq!(m["type"], "auth_error", "{what}: {m}");
                assert_eq!(m["error"], "Authentication failed", "{what}: {m}");
                c.expect_close(1008, "Authentication failed").await;
            }
        }
        server.shutdown.cancel();
    }
}

#[tokio::test]
async fn read_permission_gates_subscribe_sync_and_awareness() {
    let server = start(auth_required()).await;
    let token = user_token("reader", &["doc-r", "doc-rw"], &["doc-w", "doc-rw"], false);
    for binary in ENCODINGS {
        let mut c = signed_in(&server, binary, &token).await;
        c.send(json!({"type":"subscribe","documentId":"doc-x"}))
            .await;
        expect_denied(&mut c, "doc-x").await;
        // Write does not imply read.
        c.send(json!({"type":"subscribe","documentId":"doc-w"}))
            .await;
        expect_denied(&mut c, "doc-w").await;
        c.send(json!({"type":"sync_request","id":"s1","documentId":"doc-w"}))
            .await;
        expect_denied(&mut c, "doc-w").await;
        c.send(json!({"type":"sync_step1","documentId":"doc-x","stateVector":{}}))
            .await;
        expect_denied(&mut c, "doc-x").await;
        c.send(json!({"type":"awareness_subscribe","documentId":"doc-x"}))
            .await;
        expect_denied(&mut c, "doc-x").await;
        c.send(json!({"type":"awareness_update","documentId":"doc-x","clientId":"c1","state":{"name":"eve"},"clock":1}))
            .await;
        expect_denied(&mut c, "doc-x").await;
        // Allowed reads still work on the same connection.
        c.send(json!({"type":"subscribe","id":"s2","documentId":"doc-r"}))
            .await;
        let sr = c.recv().await;
        assert_eq!(sr["type"], "sync_response", "{sr}");
        assert_eq!(sr["documentId"], "doc-r");
        c.send(json!({"type":"awareness_subscribe","documentId":"doc-r"}))
            .await;
        let st = c.recv().await;
        assert_eq!(st["type"], "awareness_state", "{st}");
        assert_eq!(st["documentId"], "doc-r");
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn write_permission_gates_delta_and_delta_batch() {
    let server = start(auth_required()).await;
    let token = user_token("writer", &["doc-r", "doc-rw"], &["doc-w", "doc-rw"], false);
    for binary in ENCODINGS {
        let mut c = signed_in(&server, binary, &token).await;
        c.send(json!({"type":"delta","documentId":"doc-r","field":"f","value":1,"messageId":"m1"}))
            .await;
        expect_denied(&mut c, "doc-r").await;
        c.send(
            json!({"type":"delta","id":"d2","documentId":"doc-r","delta":{"g":2},"vectorClock":{}}),
        )
        .await;
        expect_denied(&mut c, "doc-r").await;
        c.send(json!({"type":"delta_batch","documentId":"doc-r","messageId":"b1","deltas":[{"type":"set","field":"h","value":3,"clock":{"c":1},"clientId":"c","timestamp":1}]}))
            .await;
        expect_denied(&mut c, "doc-r").await;
        // Nothing above was applied, and no ack was sent for it.
        let sr = sync(&mut c, "doc-r", "r1").await;
        assert_eq!(sr["state"], json!({}), "denied writes must not apply");
        // Allowed writes are acked.
        c.send(
            json!({"type":"delta","documentId":"doc-rw","field":"f","value":1,"messageId":"m-ok"}),
        )
        .await;
        let ack = c.expect("ack").await;
        assert_eq!(ack["messageId"], "m-ok");
        c.send(
            json!({"type":"delta","documentId":"doc-w","field":"f","value":1,"messageId":"m-w"}),
        )
        .await;
        let ack = c.expect("ack").await;
        assert_eq!(ack["messageId"], "m-w");
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn delta_batch_ops_cannot_write_into_other_documents() {
    let server = start(auth_required()).await;
    let token = user_token(
        "batcher",
        &["*"],
        &["doc-a-bin", "doc-b-bin", "doc-a-json", "doc-b-json"],
        false,
    );
    let admin = user_token("admin", &[], &[], true);
    for binary in ENCODINGS {
        let suffix = if binary { "bin" } else { "json" };
        let (a, b, secret) = (
            format!("doc-a-{suffix}"),
            format!("doc-b-{suffix}"),
            format!("doc-secret-{suffix}"),
        );
        let mut c = signed_in(&server, binary, &token).await;
        let secret_text = json!({"type":"text-state","documentId": secret,"state": fugue("c", "secret"),"clientId":"c","timestamp":5,"clock":{"c":1}});
        let b_text = json!({"type":"text-state","documentId": b,"state": fugue("c", "mine"),"clientId":"c","timestamp":6,"clock":{"c":2}});
        let field = json!({"type":"set","documentId": secret,"field": format!("f-{suffix}"),"value":1,"clientId":"c","timestamp":7,"clock":{"c":3}});
        // A text state for a document the token may not write refuses the whole
        // batch: nothing of it applies, in any document.
        c.send(json!({
            "type": "delta_batch",
            "documentId": a,
            "messageId": format!("refused-{suffix}"),
            "deltas": [secret_text, b_text.clone(), field.clone()],
        }))
        .await;
        expect_denied(&mut c, &secret).await;
        let mut adm = signed_in(&server, binary, &admin).await;
        for doc in [&secret, &b, &a] {
            let s = sync(&mut adm, doc, "r0").await;
            assert_eq!(s["state"], json!({}), "{doc}: {s}");
            assert!(s.get("textState").is_none(), "{doc}: {s}");
        }
        c.send(json!({
            "type": "delta_batch",
            "documentId": a,
            "messageId": format!("batch-{suffix}"),
            "deltas": [b_text, field],
        }))
        .await;
        let ack = c.expect("ack").await;
        assert_eq!(ack["messageId"], format!("batch-{suffix}"));

        // A fresh reader (the first one now receives these documents' relays).
        let mut adm = signed_in(&server, binary, &admin).await;
        let s = sync(&mut adm, &secret, "r1").await;
        assert_eq!(s["state"], json!({}), "{s}");
        assert!(
            s.get("textState").is_none(),
            "text state written into a document without write permission: {s}"
        );
        let sb = sync(&mut adm, &b, "r2").await;
        assert!(
            sb["textState"].is_string(),
            "permitted text-state op applies to its own documentId: {sb}"
        );
        // A field op applies to the batch document (TS), never to the op's documentId.
        let sa = sync(&mut adm, &a, "r3").await;
        assert_eq!(sa["state"][format!("f-{suffix}")], 1, "{sa}");
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn wildcard_is_exact_and_admin_grants_everything() {
    let server = start(auth_required()).await;
    for binary in ENCODINGS {
        let star = user_token("star", &["*"], &["*"], false);
        let mut c = signed_in(&server, binary, &star).await;
        sync(&mut c, "whatever-1", "r1").await;
        c.send(json!({"type":"delta","documentId":"whatever-2","field":"f","value":1,"messageId":"m1"}))
            .await;
        assert_eq!(c.expect("ack").await["messageId"], "m1");

        // Only the lone "*" is a wildcard: no prefix or glob matching.
        let glob = user_token("glob", &["doc-*", "doc-"], &["doc-*"], false);
        let mut c = signed_in(&server, binary, &glob).await;
        c.send(json!({"type":"subscribe","documentId":"doc-1"}))
            .await;
        expect_denied(&mut c, "doc-1").await;
        c.send(json!({"type":"delta","documentId":"doc-1","field":"f","value":1,"messageId":"m2"}))
            .await;
        expect_denied(&mut c, "doc-1").await;

        let admin = user_token("root", &[], &[], true);
        let mut c = Client::connect(&server, binary).await;
        let m = auth(&mut c, &admin).await;
        assert_eq!(
            m["permissions"],
            json!({"canRead": [], "canWrite": [], "isAdmin": true})
        );
        sync(&mut c, "secret-doc", "r2").await;
        c.send(json!({"type":"delta_batch","documentId":"secret-doc","messageId":"b1","deltas":[{"type":"set","field":"f","value":1,"clientId":"c","timestamp":1,"clock":{"c":1}}]}))
            .await;
        assert_eq!(c.expect("ack").await["messageId"], "b1");
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn api_keys_authenticate_as_admin() {
    let mut config = auth_required();
    config.jwt.api_keys = vec!["key-one".into(), "key-two".into()];
    let server = start(config).await;
    for binary in ENCODINGS {
        let mut c = Client::connect(&server, binary).await;
        c.send(json!({"type":"auth","id":"k1","timestamp":1,"apiKey":"key-two"}))
            .await;
        let m = c.recv().await;
        assert_eq!(m["type"], "auth_success", "{m}");
        assert_eq!(m["userId"], "api-key-user");
        assert_eq!(
            m["permissions"],
            json!({"canRead": [], "canWrite": [], "isAdmin": true})
        );
        sync(&mut c, "any-doc", "r1").await;

        for bad in [
            json!({"type":"auth","apiKey":"key-three"}),
            json!({"type":"auth","apiKey":"key-on"}),
            // A token, when present, is what is checked.
            json!({"type":"auth","token":"not-a-jwt","apiKey":"key-one"}),
        ] {
            let mut c = Client::connect(&server, binary).await;
            c.send(bad.clone()).await;
            let m = c.recv().await;
            assert_eq!(m["type"], "auth_error", "{bad}: {m}");
            assert_eq!(m["error"], "Authentication failed");
            c.expect_close(1008, "Authentication failed").await;
        }
        // An empty key is no credential at all (TS: falsy): auth required.
        let mut c = Client::connect(&server, binary).await;
        c.send(json!({"type":"auth","apiKey":"","token":""})).await;
        expect_error(
            &mut c,
            "Authentication required",
            json!({"code": "AUTH_REQUIRED"}),
        )
        .await;
        c.expect_close(1008, "Authentication required").await;
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn query_token_authenticates_silently_on_ws_and_root() {
    let server = start(auth_required()).await;
    let token = user_token("q-user", &["doc-q"], &["doc-q"], false);
    for path in ["/ws", "/"] {
        for binary in ENCODINGS {
            let mut c =
                Client::connect_path(&server, &format!("{path}?token={token}"), binary).await;
            c.expect_silence(Duration::from_millis(50)).await;
            let sr = sync(&mut c, "doc-q", "r1").await;
            assert_eq!(sr["state"], json!({}));
            // The identity is the token's: other documents are denied.
            c.send(json!({"type":"subscribe","documentId":"doc-other"}))
                .await;
            expect_denied(&mut c, "doc-other").await;
        }
        // Other query parameters are ignored.
        let mut c =
            Client::connect_path(&server, &format!("{path}?x=1&token={token}&y=2"), true).await;
        sync(&mut c, "doc-q", "r2").await;
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn invalid_query_token_closes_1008_before_any_message() {
    let server = start(auth_required()).await;
    let expired = jwt(&json!({"userId":"u","permissions":{"isAdmin":true},"exp": now_secs() - 5}));
    let none = alg_none_token(&json!({"userId":"u","permissions":{"isAdmin":true}}));
    for path in ["/ws", "/"] {
        for token in ["garbage", expired.as_str(), none.as_str()] {
            let mut c = Client::connect_path(&server, &format!("{path}?token={token}"), true).await;
            c.expect_close(1008, "Authentication failed").await;
        }
    }
    // An empty token is no token: the connection stays, unauthenticated.
    let mut c = Client::connect_path(&server, "/ws?token=", true).await;
    c.send(json!({"type":"subscribe","documentId":"d"})).await;
    expect_error(&mut c, "Not authenticated", Value::Null).await;
    server.shutdown.cancel();
}

#[tokio::test]
async fn auth_timeout_closes_only_unauthenticated_connections() {
    let timeout = Duration::from_millis(150);
    let mut config = auth_required();
    config.sync.auth_timeout = timeout;
    let server = start(config).await;
    let token = user_token("t-user", &["*"], &["*"], false);
    let started = std::time::Instant::now();
    let mut idle = Client::connect(&server, true).await;
    let mut authed = signed_in(&server, false, &token).await;
    let mut by_query = Client::connect_path(&server, &format!("/ws?token={token}"), true).await;
    // Pinging does not count as authenticating.
    let mut pinger = Client::connect(&server, false).await;
    pinger.assert_alive().await;
    idle.expect_close(1008, "Authentication timeout").await;
    pinger.expect_close(1008, "Authentication timeout").await;
    assert!(
        started.elapsed() >= timeout - Duration::from_millis(20),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    authed.expect_silence(timeout).await;
    authed.assert_alive().await;
    by_query.assert_alive().await;

    // With auth disabled there is no timeout.
    let mut open = ServerConfig::for_tests(false);
    open.sync.auth_timeout = timeout;
    let open_server = start(open).await;
    let mut anon = Client::connect(&open_server, true).await;
    anon.expect_silence(timeout * 2).await;
    anon.assert_alive().await;
    server.shutdown.cancel();
    open_server.shutdown.cancel();
}

#[tokio::test]
async fn unauthenticated_connections_may_only_auth_and_ping() {
    let server = start(auth_required()).await;
    for binary in ENCODINGS {
        let mut c = Client::connect(&server, binary).await;
        c.assert_alive().await;
        for msg in [
            json!({"type":"subscribe","documentId":"d"}),
            json!({"type":"sync_request","id":"r","documentId":"d"}),
            json!({"type":"sync_step1","documentId":"d","stateVector":{}}),
            json!({"type":"unsubscribe","documentId":"d"}),
            json!({"type":"delta","documentId":"d","delta":{"f":1},"vectorClock":{}}),
            json!({"type":"delta_batch","documentId":"d","messageId":"b","deltas":[{"type":"set","field":"f","value":1}]}),
            json!({"type":"awareness_subscribe","documentId":"d"}),
            json!({"type":"awareness_update","documentId":"d","clientId":"c","state":{},"clock":1}),
        ] {
            c.send(msg.clone()).await;
            let m = c.recv().await;
            assert_eq!(m["type"], "error", "{msg}: {m}");
            assert_eq!(m["error"], "Not authenticated", "{msg}: {m}");
        }
        // Shape validation of deltas comes before the auth check (TS order).
        c.send(json!({"type":"delta","documentId":"d","delta":{}}))
            .await;
        expect_error(
            &mut c,
            "Invalid delta message: missing or empty delta",
            Value::Null,
        )
        .await;
        c.send(json!({"type":"delta_batch","documentId":"d","deltas":[]}))
            .await;
        expect_error(
            &mut c,
            "Invalid delta batch: missing or empty deltas array",
            Value::Null,
        )
        .await;
        c.send(json!({"type":"pong"})).await;
        c.assert_alive().await;
        // `auth` without credentials while auth is required: error, then close.
        c.send(json!({"type":"auth","id":"a","timestamp":1})).await;
        expect_error(
            &mut c,
            "Authentication required",
            json!({"code": "AUTH_REQUIRED"}),
        )
        .await;
        c.expect_close(1008, "Authentication required").await;
    }
    server.shutdown.cancel();
}

#[tokio::test]
async fn token_auth_replaces_the_anonymous_identity_when_auth_is_disabled() {
    let server = start(ServerConfig::for_tests(false)).await;
    for binary in ENCODINGS {
        // Auto-authenticated at connect: works without any auth message.
        let mut c = Client::connect(&server, binary).await;
        sync(&mut c, "doc-open", "r0").await;
        c.send(json!({"type":"auth","id":"a0","timestamp":1})).await;
        let m = c.recv().await;
        assert_eq!(m["type"], "auth_success", "{m}");
        assert_eq!(m["userId"], "anonymous");
        assert_eq!(
            m["permissions"],
            json!({"canRead": ["*"], "canWrite": ["*"], "isAdmin": false})
        );
        let token = user_token("narrow", &["doc-a"], &[], false);
        let m = auth(&mut c, &token).await;
        assert_eq!(m["type"], "auth_success", "{m}");
        assert_eq!(m["userId"], "narrow");
        // The new token no longer reads doc-open: that subscription is dropped.
        let m = c.recv().await;
        assert_eq!(m["error"], "Subscription revoked: permission denied", "{m}");
        assert_eq!(
            m["details"],
            json!({"code": "SUBSCRIPTION_REVOKED", "documentId": "doc-open"})
        );
        sync(&mut c, "doc-a", "r1").await;
        c.send(json!({"type":"subscribe","documentId":"doc-open"}))
            .await;
        expect_denied(&mut c, "doc-open").await;
    }
    server.shutdown.cancel();
}

/// Write permission does not imply read: a write-only client's writes are acked,
/// but it is not auto-subscribed, so it never receives the document's broadcasts.
#[tokio::test]
async fn write_only_clients_are_not_auto_subscribed() {
    let server = start(auth_required()).await;
    let writer = user_token("w", &[], &["doc-w"], false);
    let reader = user_token("r", &["doc-w"], &["doc-w"], false);
    let mut w = signed_in(&server, true, &writer).await;
    let mut r = signed_in(&server, true, &reader).await;
    r.send(json!({"type":"subscribe","documentId":"doc-w"}))
        .await;
    r.expect("sync_response").await;
    w.send(json!({"type":"delta","documentId":"doc-w","field":"a","value":1,"messageId":"m1"}))
        .await;
    assert_eq!(w.expect("ack").await["messageId"], "m1");
    assert_eq!(r.expect("delta").await["field"], "a");
    r.send(json!({"type":"delta","documentId":"doc-w","field":"b","value":2,"messageId":"m2"}))
        .await;
    assert_eq!(r.expect("ack").await["messageId"], "m2");
    w.expect_silence(Duration::from_millis(200)).await;
}
