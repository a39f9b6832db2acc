//! `synckit console`: the operator's live terminal console, in The Elm Architecture.
//!
//! - [`app`]: the model (pure data), [`model`]: what sources report.
//! - [`action`]: messages, [`update`]: the pure reducer, [`rows`]: derived rows.
//! - `views`: `impl Widget for &App`, one file per tab; drawn on any `Backend`.
//! - [`feed`]: the only I/O (admin API, PostgreSQL, Redis), `event`: keys + ticks.
//! - `once`: `--once` output.
//!
//! The console logs to a file, never to the terminal it draws on.

pub mod action;
pub mod app;
pub mod credential;
pub(crate) mod event;
pub mod feed;
pub mod model;
pub(crate) mod once;
pub mod rows;
pub mod update;
mod views;

use std::time::Duration;

use ratatui::backend::Backend;
use ratatui::Terminal;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use action::{Action, Effect};
use app::App;
use feed::FeedConfig;

/// Actions queued between the sources and the reducer; the feed waits when full
/// (a slow terminal slows polling rather than growing memory).
const ACTION_QUEUE: usize = 256;

/// How the console runs.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) feed: FeedConfig,
    pub(crate) refresh: Duration,
    pub(crate) allow_actions: bool,
}

impl Options {
    /// Whether reads and actions can be authorised at all (a token, or a secret to
    /// mint one).
    fn has_credential(&self) -> bool {
        self.feed.credential.is_some()
    }

    /// The bearer token for one action (the same credential the feed reads with).
    pub(crate) fn token(&self) -> Option<String> {
        self.feed.credential.bearer()
    }
}

/// Run the interactive console on `terminal` until the operator quits.
pub(crate) async fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    options: Options,
) -> std::io::Result<()> {
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(ACTION_QUEUE);
    let refresh_ms = u64::try_from(options.refresh.as_millis()).unwrap_or(1000);
    let mut app = App::new(event::now_ms(), refresh_ms, options.allow_actions);
    app.has_credential = options.has_credential();
    let (request_tx, request_rx) = watch::channel(app.feed_request());
    let feed = tokio::spawn(feed::run(
        options.feed.clone(),
        request_rx,
        tx.clone(),
        cancel.clone(),
    ));
    let events = tokio::spawn(event::run(tx.clone(), cancel.clone()));
    terminal.draw(|f| f.render_widget(&app, f.area()))?;
    while app.running {
        let Some(first) = rx.recv().await else { break };
        // Apply everything already queued, then draw once: no redraw storms.
        let mut next = Some(first);
        while let Some(action) = next {
            if let Some(effect) = update::update(&mut app, action) {
                carry_out(effect, &options, &tx);
            }
            next = rx.try_recv().ok();
        }
        let request = app.feed_request();
        if *request_tx.borrow() != request {
            request_tx.send_replace(request);
        }
        if app.running {
            terminal.draw(|f| f.render_widget(&app, f.area()))?;
        }
    }
    cancel.cancel();
    drop(rx);
    let _ = events.await;
    let _ = feed.await;
    Ok(())
}

fn carry_out(effect: Effect, options: &Options, tx: &mpsc::Sender<Action>) {
    match effect {
        Effect::Quit => {}
        Effect::Perform(action) => {
            let token = options.token();
            let tx = tx.clone();
            tokio::spawn(async move {
                let result = feed::admin::perform(&action, token.as_deref()).await;
                let _ = tx.send(Action::OperatorActionDone(result)).await;
            });
        }
    }
}

/// `--once`: poll every source once and build the app they describe.
pub(crate) async fn snapshot(options: &Options, now_ms: i64) -> App {
    let refresh_ms = u64::try_from(options.refresh.as_millis()).unwrap_or(1000);
    let mut app = App::new(now_ms, refresh_ms, options.allow_actions);
    app.has_credential = options.has_credential();
    for action in feed::once(options.feed.clone(), "", options.refresh).await {
        update::update(&mut app, action);
    }
    app
}
