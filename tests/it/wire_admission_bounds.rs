//! The admission layer's second round over real sockets: the bounds a security
//! review found missing or wrong (a client that stops reading, clock sizes,
//! awareness, chunk ids, batches, upgrade requests). Each test shows the refusal,
//! that nothing of it was applied or broadcast, that it is counted in `/metrics` by
//! reason, and that a well-behaved client on the same server kept its acks.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{open_config, Client, TestServer};
use crate::wire_admission::{good_client, memory, metric, refusals, start, stop, write_acked};
use futures_util::{SinkExt, StreamExt};

/// Poll `series` until it equals `want` or `within` passes; returns the last value.
async fn wait_metric(
    admin: std::net::SocketAddr,
    series: &str,
    want: f64,
    within: Duration,
) -> Option<f64> {
    let until = Instant::now() + within;
    loop {
        let v = metric(admin, series).await;
        if v == Some(want) || Instant::now() >= until {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A WebSocket whose receive buffer is tiny, so the server's writes to it block as
/// soon as it stops reading.
async fn non_reading_socket(
    server: &TestServer,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(server.addr).await.expect("connect");
    let url = format!("ws://{}/ws", server.addr);
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("handshake");
    ws
}

// ---------------------------------------------------------------------------------
// A client that never reads

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_the_write_timeout() {
    let mut config = open_config();
    config.write_timeout = Duration::from_secs(1);
    let (server, admin) = start(config.clone(), memory(&config)).await;
    let mut good = good_client(&server, "other-doc").await;
    let mut writer = Client::connect(&server, false).await;
    write_acked(
        &mut writer,
        "big-doc",
        "big",
        json!("x".repeat(64 * 1024)),
        "w0",
    )
    .await;

    // Ask for the 64 KB document over and over and never read: the socket fills,
    // then the outbox, then the session would wait on its replies.
    let mut stuck = non_reading_socket(&server).await;
    let flood = tokio::spawn(async move {
        for i in 0..600 {
            let msg = json!({"type":"sync_request","id":format!("r{i}"),"documentId":"big-doc"});
            let sent = tokio::time::timeout(
                Duration::from_secs(5),
                stuck.send(Message::Text(msg.to_string().into())),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                break;
            }
        }
        stuck
    });
    let mut stuck = flood.await.expect("flood");

    // Closed within the write timeout (plus slack), while the good client is served.
    write_acked(&mut good, "other-doc", "good", json!("during"), "g1").await;
    let open = wait_metric(
        admin,
        "synckit_connections_open",
        2.0,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(open, Some(2.0), "the non-reading client is still connected");
    assert_eq!(refusals(admin, "slow_client").await, 1);
    // Its socket is gone: reading drains what the kernel holds, then ends.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = stuck.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stuck client's socket stayed open");
    write_acked(&mut good, "other-doc", "good", json!("after"), "g2").await;
    stop(server).await;
}
