//! SIGINT and SIGTERM → one cancellation. A second signal exits at once.

use tokio_util::sync::CancellationToken;

async fn any_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Cancel `token` on the first signal; exit the process on the second.
pub(crate) async fn on_signal(token: CancellationToken) {
    any_signal().await;
    tracing::info!("signal received: draining (send again to exit immediately)");
    token.cancel();
    any_signal().await;
    tracing::warn!("second signal: exiting immediately");
    std::process::exit(130);
}
