//! Running under systemd (`Type=notify`): READY/STOPPING/WATCHDOG through sd_notify,
//! and SIGHUP, which must never kill the server.
//!
//! Every function here is a no-op outside systemd: sd_notify does nothing when
//! `NOTIFY_SOCKET` is unset, and the watchdog only runs when `WATCHDOG_USEC` is set
//! (for this process). A failed notification is logged, never fatal: the service
//! manager, not the server, decides what a missing READY means.

use std::net::SocketAddr;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify the service manager (NOTIFY_SOCKET)");
    }
}

/// READY=1 with a status line: the listeners are bound and the storage decision
/// (connected, or serving from memory while retrying) is made.
pub(crate) fn ready(listen: SocketAddr) {
    let status = format!("listening on {listen}");
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// STOPPING=1 as soon as `shutdown` is cancelled, so `systemctl status` shows the
/// drain instead of a running service; and WATCHDOG=1 at half the interval systemd
/// asked for (`WatchdogSec=`) until the process exits.
///
/// The watchdog keeps beating while draining: a drain is bounded by
/// SHUTDOWN_TIMEOUT_MS and systemd's TimeoutStopSec, so a watchdog kill there would
/// only lose writes the drain was about to commit.
pub(crate) fn supervise(shutdown: CancellationToken) {
    tokio::spawn(async move {
        shutdown.cancelled().await;
        notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    });
    if let Some(interval) = sd_notify::watchdog_enabled() {
        // Half the interval, as sd_watchdog_enabled(3) recommends: one late tick
        // (a busy runtime, a slow disk) is not yet a missed deadline.
        let period = (interval / 2).max(Duration::from_millis(10));
        tracing::info!(?interval, "systemd watchdog enabled");
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                notify(&[NotifyState::Watchdog]);
            }
        });
    }
}

/// Take over SIGHUP (whose default action terminates the process) and answer it
/// with a log line: nothing is reloaded. Settings come from the environment, which
/// systemd reads (EnvironmentFile=) only when it starts the process, so a reload
/// could not see new values; a restart drains gracefully instead.
///
/// The handler is installed before this returns, so a SIGHUP arriving right after
/// READY is already caught.
pub(crate) fn ignore_hangup() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use anyhow::Context;
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup =
            signal(SignalKind::hangup()).context("could not install the SIGHUP handler")?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!(
                    "SIGHUP received: configuration reload is not supported, nothing changed; \
                     apply new settings with `systemctl restart synckit` (drains gracefully)"
                );
            }
        });
    }
    Ok(())
}
