//! Test harness: an in-process server on 127.0.0.1:0 and a tiny protocol client.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use synckit::server::{Backends, Server, ServerConfig};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub shutdown: CancellationToken,
    pub done: tokio::task::JoinHandle<bool>,
}

pub async fn start(config: ServerConfig) -> TestServer {
    let backends = Backends::in_memory(&config);
    start_on(config, backends).await
}

/// Start a server on the given backends (PostgreSQL tests).
pub async fn start_on(config: ServerConfig, backends: Backends) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let server = Server::new(config, backends);
    let done = tokio::spawn(server.run(listener, None, shutdown.clone()));
    TestServer {
        addr,
        shutdown,
        done,
    }
}

pub fn open_config() -> ServerConfig {
    ServerConfig::for_tests(false)
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub binary: bool,
}

/// Encode a binary frame: code, BE timestamp, BE length, JSON payload.
pub fn frame(code: u8, payload: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(payload).expect("json");
    let mut out = vec![code];
    out.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

pub fn code_name(code: u8) -> &'static str {
    match code {
        0x02 => "auth_success",
        0x03 => "auth_error",
        0x13 => "sync_response",
        0x15 => "sync_step2",
        0x20 => "delta",
        0x21 => "ack",
        0x31 => "pong",
        0x40 => "awareness_update",
        0x42 => "awareness_state",
        0x50 => "delta_batch",
        0xFF => "error",
        _ => "unknown",
    }
}

impl Client {
    pub async fn connect(server: &TestServer, binary: bool) -> Client {
        Self::connect_path(server, "/ws", binary).await
    }

    pub async fn connect_path(server: &TestServer, path: &str, binary: bool) -> Client {
        let url = format!("ws://{}{}", server.addr, path);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Client { ws, binary }
    }

    /// Send a logical message in this client's encoding.
    pub async fn send(&mut self, msg: Value) {
        if self.binary {
            let code = match msg["type"].as_str().expect("type") {
                "auth" => 0x01,
                "subscribe" => 0x10,
                "unsubscribe" => 0x11,
                "sync_request" => 0x12,
                "sync_step1" => 0x14,
                "delta" => 0x20,
                "ack" => 0x21,
                "delta_batch_chunk" => 0x23,
                "ping" => 0x30,
                "pong" => 0x31,
                "awareness_update" => 0x40,
                "awareness_subscribe" => 0x41,
                "delta_batch" => 0x50,
                "error" => 0xFF,
                other => panic!("no code for {other}"),
            };
            let mut payload = msg.clone();
            if let Some(m) = payload.as_object_mut() {
                m.remove("type");
            }
            self.ws
                .send(Message::Binary(frame(code, &payload).into()))
                .await
                .expect("send");
        } else {
            self.ws
                .send(Message::Text(msg.to_string().into()))
                .await
                .expect("send");
        }
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// Next data message as a logical JSON object (with `type`), or None on close.
    pub async fn recv_timeout(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let next = tokio::time::timeout(wait, self.ws.next()).await.ok()??;
            match next.ok()? {
                Message::Binary(b) => {
                    assert!(self.binary, "binary frame sent to a JSON-mode client");
                    assert!(b.len() >= 13, "short frame");
                    let len = u32::from_be_bytes([b[9], b[10], b[11], b[12]]) as usize;
                    let mut v: Value =
                        serde_json::from_slice(&b[13..13 + len]).expect("payload json");
                    assert!(
                        v.get("type").is_none(),
                        "binary payload must not carry type"
                    );
                    v["type"] = json!(code_name(b[0]));
                    return Some(v);
                }
                Message::Text(t) => {
                    assert!(!self.binary, "text frame sent to a binary-mode client");
                    return Some(serde_json::from_str(&t).expect("json"));
                }
                Message::Close(f) => {
                    return Some(
                        json!({"type": "__close", "code": f.as_ref().map(|f| u16::from(f.code)), "reason": f.map(|f| f.reason.to_string())}),
                    )
                }
                _ => continue,
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        self.recv_timeout(Duration::from_secs(5))
            .await
            .expect("a message within 5 s")
    }

    /// Receive until a message of `ty` arrives (others are skipped).
    pub async fn expect(&mut self, ty: &str) -> Value {
        loop {
            let m = self.recv().await;
            if m["type"] == ty {
                return m;
            }
            assert_ne!(m["type"], "__close", "closed while waiting for {ty}: {m}");
        }
    }

    /// Assert nothing arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(m) = self.recv_timeout(wait).await {
            panic!("expected silence, got {m}");
        }
    }
}
