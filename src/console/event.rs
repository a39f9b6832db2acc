//! Terminal events and clock ticks, turned into [`Action`]s. The only place the
//! console reads the wall clock for display; the reducer receives time as data.

use std::time::Duration;

use crossterm::event::{Event, EventStream, KeyEventKind};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::action::Action;

/// Ages on screen are whole seconds: a tick a second keeps them current.
const TICK: Duration = Duration::from_secs(1);

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Forward key presses and resizes, and tick, until cancelled or the receiver is
/// gone.
pub(crate) async fn run(tx: mpsc::Sender<Action>, cancel: CancellationToken) {
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let action = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => Action::Tick(now_ms()),
            event = events.next() => match event {
                // Key repeat and release events would double every key on
                // terminals that report them.
                Some(Ok(Event::Key(key))) if key.kind == KeyEventKind::Press => Action::Key(key),
                Some(Ok(Event::Resize(..))) => Action::Resize,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "console: terminal input failed");
                    return;
                }
                None => return,
            },
        };
        if tx.send(action).await.is_err() {
            return;
        }
    }
}
