//! A TCP proxy the test owns, in front of a backend (PostgreSQL): cutting it drops
//! every proxied connection and refuses new ones, the way a database that went away
//! looks to the server — without touching the shared service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub port: u16,
    cut: Arc<Mutex<CancellationToken>>,
    refusing: Arc<AtomicBool>,
}

impl Proxy {
    /// Listen on a free loopback port and forward to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(Mutex::new(CancellationToken::new()));
        let refusing = Arc::new(AtomicBool::new(false));
        let (cut2, refusing2) = (cut.clone(), refusing.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if refusing2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let token = cut2.lock().expect("lock").clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            cut,
            refusing,
        }
    }

    /// A proxy in front of the PostgreSQL `pool` connects to.
    pub async fn for_pool(pool: &sqlx::PgPool) -> Proxy {
        let direct = pool.connect_options();
        Proxy::start(format!("{}:{}", direct.get_host(), direct.get_port())).await
    }

    /// Drop every proxied connection and refuse new ones.
    pub fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        let mut token = self.cut.lock().expect("lock");
        token.cancel();
        *token = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }
}
