//! Runs broadcast flushes when their batch window ends. The window is the same for
//! every document, so due times arrive in order and a FIFO queue is enough.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::sync::hub::{FlushQueue, Hub};

/// Flush batches as they come due; on cancellation flush everything still pending.
pub(crate) async fn run(hub: Arc<Hub>, mut rx: FlushQueue, cancel: CancellationToken) {
    let mut queue = VecDeque::new();
    loop {
        let next_due = queue.front().map(|(_, due)| *due);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            item = rx.recv() => match item {
                Some(item) => queue.push_back(item),
                None => break,
            },
            _ = async {
                if let Some(due) = next_due {
                    tokio::time::sleep_until(due).await;
                }
            }, if next_due.is_some() => {
                let now = tokio::time::Instant::now();
                while queue.front().is_some_and(|(_, due)| *due <= now) {
                    if let Some((entry, _)) = queue.pop_front() {
                        hub.flush(&entry);
                    }
                }
            }
        }
    }
    rx.close();
    while let Ok((entry, _)) = rx.try_recv() {
        hub.flush(&entry);
    }
    for (entry, _) in queue {
        hub.flush(&entry);
    }
    hub.flush_all();
}
