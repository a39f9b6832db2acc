//! `synckit console --once`: every view's current state, printed once, as text (the
//! views drawn off-screen, for mails and tickets) or JSON (the rows, for scripts),
//! and the exit code that says which source was down (for cron and checks).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::widgets::Widget;
use serde_json::{json, Value};

use super::app::{App, View};
use super::model::SourceState;
use super::rows;

/// Width of the text rendering: wide enough for every column.
const TEXT_WIDTH: u16 = 140;

/// Every view, drawn one after the other with only as many rows as it needs.
pub(crate) fn text(app: &App) -> String {
    let mut out = String::new();
    // Charts need a history; one poll has none.
    for view in View::ALL.into_iter().filter(|v| *v != View::Charts) {
        let mut app = app.clone();
        app.view = view;
        app.notice = None;
        // Tabs + borders + header + rows + status, within a sane bound.
        let rows = match view {
            View::Overview => 20,
            View::Documents => rows::documents(&app).len(),
            View::Sessions => rows::sessions(&app).len(),
            View::Awareness => rows::awareness(&app).len(),
            View::Traffic => rows::traffic(&app).len() + app.redis.rates.len() + 3,
            View::Maintenance => rows::runs(&app).len() + rows::jobs(&app).len() + 3,
            View::Events => rows::events(&app).len(),
            View::Charts => 0,
        };
        let height = u16::try_from(rows + 7).unwrap_or(u16::MAX).clamp(10, 200);
        let area = Rect::new(0, 0, TEXT_WIDTH, height);
        let mut buf = Buffer::empty(area);
        (&app).render(area, &mut buf);
        out.push_str(&format!("== {} ==\n", view.title()));
        // Skip the tab bar and status line: the heading says which view this is.
        for y in 1..height.saturating_sub(1) {
            let line: String = (0..TEXT_WIDTH)
                .map(|x| buf[(x, y)].symbol().to_owned())
                .collect();
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// The rows of every view and the state of every source.
pub(crate) fn json(app: &App) -> Value {
    let instances: Vec<Value> = app
        .instances
        .iter()
        .map(|i| {
            json!({
                "address": i.report.address,
                "state": i.report.state,
                "stats": i.report.stats,
                "rateIn": i.rate_in,
                "rateOut": i.rate_out,
                "problems": i.report.problems,
            })
        })
        .collect();
    json!({
        "generatedAtMs": app.now_ms,
        "sources": {
            "instances": instances,
            "postgres": app.database.state,
            "redis": app.redis.state,
        },
        "overview": {
            "documentsTotal": app.database.documents_total,
            "sessionsTotal": app.database.sessions_total,
            "queryMs": app.database.query_ms,
            "fleet": rows::fleet(app),
            "presence": app.redis.fleet,
        },
        "documents": rows::documents(app),
        "sessions": rows::sessions(app),
        "awareness": rows::awareness(app),
        "traffic": {"rates": app.redis.rates, "samples": rows::traffic(app)},
        "maintenance": {"jobs": rows::jobs(app), "runs": rows::runs(app)},
        "events": rows::events(app),
        "exitCode": exit_code(app),
    })
}

/// `--once` exit codes (README): 0 every configured source answered; 3 PostgreSQL
/// unreachable, 5 Redis unreachable (as `check-config`); 6 an instance's admin API
/// unreachable; 7 more than one of those. Sources not configured do not count.
const EXIT_DATABASE: u8 = crate::exit::Failure::DatabaseUnreachable as u8;
const EXIT_REDIS: u8 = crate::exit::Failure::RedisUnreachable as u8;
const EXIT_INSTANCE: u8 = crate::exit::INSTANCE_UNREACHABLE;
const EXIT_SEVERAL: u8 = crate::exit::SEVERAL_UNREACHABLE;

pub(crate) fn exit_code(app: &App) -> u8 {
    let down = |s: &SourceState| matches!(s, SourceState::Down { .. });
    let failures: Vec<u8> = [
        (
            app.instances.iter().any(|i| down(&i.report.state)),
            EXIT_INSTANCE,
        ),
        (down(&app.database.state), EXIT_DATABASE),
        (down(&app.redis.state), EXIT_REDIS),
    ]
    .into_iter()
    .filter_map(|(failed, code)| failed.then_some(code))
    .collect();
    match failures.as_slice() {
        [] => 0,
        [one] => *one,
        _ => EXIT_SEVERAL,
    }
}
