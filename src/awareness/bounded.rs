//! A shared awareness store (PostgreSQL, Redis) behind a deadline and a breaker, so a
//! backend outage never makes a connection wait (README "Running several instances",
//! docs/operations.md §4.4 `SYNCKIT_AWARENESS_STORE_TIMEOUT`).
//!
//! Every call gets `timeout`; a call that fails or runs out of time opens the breaker,
//! and while it is open calls fail at once with [`AwarenessError::Unavailable`]
//! instead of each waiting for the backend. One call per `retry_after` is let through
//! to find out whether the backend is back; its success closes the breaker. The
//! transitions are logged once each way.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{AwarenessEntry, AwarenessError, AwarenessStore, AwarenessUpdate, SetOutcome};

/// How long the breaker stays open before a probe tries the backend again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct BoundedAwarenessStore {
    inner: Arc<dyn AwarenessStore>,
    timeout: Duration,
    breaker: Arc<Breaker>,
}

/// Whether the backend is taken to be down, shared with the probe task.
struct Breaker {
    kind: &'static str,
    /// Process-local time base for `open_until_ms`.
    started: Instant,
    /// Milliseconds since `started` until which calls fail at once and no probe is
    /// started; 0 = closed (calls go to the backend).
    open_until_ms: AtomicU64,
    /// Whether the outage has been logged (so it is logged once, and its end too).
    down: AtomicBool,
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        duration_ms(self.started.elapsed())
    }

    fn succeeded(&self) {
        self.open_until_ms.store(0, Ordering::Release);
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!(store = self.kind, "awareness store answering again");
        }
    }

    fn failed(&self, error: &AwarenessError) {
        let until = self
            .now_ms()
            .saturating_add(duration_ms(RETRY_AFTER))
            .max(1);
        self.open_until_ms.store(until, Ordering::Release);
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                store = self.kind,
                error = %error,
                "awareness store not answering: presence calls fail at once until it is back"
            );
        }
    }

    fn record<T>(&self, result: &Result<T, AwarenessError>) {
        match result {
            Ok(_) => self.succeeded(),
            Err(e) => self.failed(e),
        }
    }
}

impl BoundedAwarenessStore {
    pub fn new(inner: Arc<dyn AwarenessStore>, timeout: Duration) -> Self {
        let breaker = Arc::new(Breaker {
            kind: inner.kind(),
            started: Instant::now(),
            open_until_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
        });
        Self {
            inner,
            timeout,
            breaker,
        }
    }

    /// Whether this call may go to the backend: only while the breaker is closed.
    /// While it is open, the first call past `RETRY_AFTER` starts one probe in the
    /// background (so no caller waits for it); its answer closes or re-opens it.
    fn admit(&self) -> bool {
        let until = self.breaker.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.breaker.now_ms();
        let probe_ends = now.saturating_add(duration_ms(self.timeout.saturating_add(RETRY_AFTER)));
        if now >= until
            && self
                .breaker
                .open_until_ms
                .compare_exchange(until, probe_ends, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let (inner, breaker, timeout) =
                (self.inner.clone(), self.breaker.clone(), self.timeout);
            tokio::spawn(async move {
                let answer = tokio::time::timeout(timeout, inner.count()).await;
                let result = answer.unwrap_or_else(|_| {
                    Err(AwarenessError::Unavailable("probe: no answer".into()))
                });
                breaker.record(&result);
            });
        }
        false
    }

    async fn call<T>(
        &self,
        what: &'static str,
        work: impl Future<Output = Result<T, AwarenessError>>,
    ) -> Result<T, AwarenessError> {
        if !self.admit() {
            return Err(AwarenessError::Unavailable(format!(
                "{} awareness store down (probed every {}s)",
                self.breaker.kind,
                RETRY_AFTER.as_secs()
            )));
        }
        let result = match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(AwarenessError::Unavailable(format!(
                "{what}: no answer from the {} awareness store within {:?}",
                self.breaker.kind, self.timeout
            ))),
        };
        self.breaker.record(&result);
        result
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl AwarenessStore for BoundedAwarenessStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    async fn set(&self, update: AwarenessUpdate) -> Result<SetOutcome, AwarenessError> {
        self.call("set", self.inner.set(update)).await
    }

    async fn get_all(
        &self,
        document_id: &str,
        now_ms: i64,
    ) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        self.call("get_all", self.inner.get_all(document_id, now_ms))
            .await
    }

    async fn remove_connection(
        &self,
        connection_id: &str,
    ) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        self.call(
            "remove_connection",
            self.inner.remove_connection(connection_id),
        )
        .await
    }

    #[cfg(any(test, feature = "test-util"))]
    async fn expired(&self, now_ms: i64) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        self.call("expired", self.inner.expired(now_ms)).await
    }

    async fn prune_expired(&self, now_ms: i64) -> Result<Vec<AwarenessEntry>, AwarenessError> {
        self.call("prune_expired", self.inner.prune_expired(now_ms))
            .await
    }

    async fn count(&self) -> Result<usize, AwarenessError> {
        self.call("count", self.inner.count()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A backend that either answers at once or never (behind a cut connection),
    /// counting the calls that reach it.
    #[derive(Default)]
    struct Switch {
        up: AtomicBool,
        calls: AtomicUsize,
    }

    impl Switch {
        async fn answer<T>(&self, value: T) -> Result<T, AwarenessError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.up.load(Ordering::SeqCst) {
                Ok(value)
            } else {
                std::future::pending().await
            }
        }
    }

    #[async_trait]
    impl AwarenessStore for Switch {
        fn kind(&self) -> &'static str {
            "switch"
        }
        fn is_shared(&self) -> bool {
            true
        }
        async fn set(&self, _: AwarenessUpdate) -> Result<SetOutcome, AwarenessError> {
            self.answer(SetOutcome::Accepted).await
        }
        async fn get_all(&self, _: &str, _: i64) -> Result<Vec<AwarenessEntry>, AwarenessError> {
            self.answer(Vec::new()).await
        }
        async fn remove_connection(&self, _: &str) -> Result<Vec<AwarenessEntry>, AwarenessError> {
            self.answer(Vec::new()).await
        }
        async fn expired(&self, _: i64) -> Result<Vec<AwarenessEntry>, AwarenessError> {
            self.answer(Vec::new()).await
        }
        async fn prune_expired(&self, _: i64) -> Result<Vec<AwarenessEntry>, AwarenessError> {
            self.answer(Vec::new()).await
        }
        async fn count(&self) -> Result<usize, AwarenessError> {
            self.answer(7).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_costs_one_timeout_then_calls_fail_at_once_and_a_probe_finds_the_store_back()
    {
        let inner = Arc::new(Switch::default());
        let store = BoundedAwarenessStore::new(inner.clone(), Duration::from_millis(300));

        // The first call finds the outage: it waits for its deadline.
        let started = Instant::now();
        assert!(store.get_all("d", 0).await.is_err());
        assert_eq!(started.elapsed(), Duration::from_millis(300));

        // Open: no wait, and the backend is not called.
        let started = Instant::now();
        for _ in 0..50 {
            assert!(store.remove_connection("c").await.is_err());
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);

        // Past RETRY_AFTER a call still fails at once but starts one probe, which
        // times out in the background: still open.
        tokio::time::sleep(RETRY_AFTER).await;
        let started = Instant::now();
        assert!(store.set(update()).await.is_err());
        assert!(store.set(update()).await.is_err());
        assert_eq!(started.elapsed(), Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2, "one probe");
        assert!(store.count().await.is_err());

        // Back: the next probe closes the breaker, and calls reach the store again.
        inner.up.store(true, Ordering::SeqCst);
        tokio::time::sleep(RETRY_AFTER + Duration::from_millis(400)).await;
        assert!(store.count().await.is_err(), "this call starts the probe");
        tokio::task::yield_now().await;
        assert_eq!(store.count().await.ok(), Some(7));
        assert_eq!(store.set(update()).await.ok(), Some(SetOutcome::Accepted));
    }

    fn update() -> AwarenessUpdate {
        AwarenessUpdate {
            document_id: "d".into(),
            client_id: "c".into(),
            connection_id: "k".into(),
            user_id: "u".into(),
            state: None,
            clock: 1,
            now_ms: 0,
        }
    }
}
