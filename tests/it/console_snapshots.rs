//! Snapshots of every console view, the overlays (help, confirmation dialogs, a
//! message's payload), the command line and the unavailable-actions state, at 80×24
//! and 160×48, drawn with `TestBackend` from the fixed fixture (time injected).
//! They live in `snapshots/` at the repository root; CI (`CI=true`,
//! `INSTA_UPDATE=no`) fails on a missing or changed snapshot instead of writing it.
//! Review changes with `cargo insta review` (or accept with `INSTA_UPDATE=always`).

use crate::console_fixture;

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use synckit::console::action::{Action, OperatorAction};
use synckit::console::app::{App, Overlay, View};
use synckit::console::update::update;

const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

fn draw(app: &App, width: u16, height: u16) -> TestBackend {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal
        .draw(|f| f.render_widget(app, f.area()))
        .expect("draw");
    terminal.backend().clone()
}

fn snapshot(name: &str, app: &App) {
    for (width, height) in SIZES {
        insta::with_settings!({
            snapshot_path => "../../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("{name}_{width}x{height}"), draw(app, width, height));
        });
    }
}

fn in_view(view: View) -> App {
    let mut app = console_fixture::app();
    app.view = view;
    app
}

fn key(app: &mut App, code: KeyCode) {
    update(app, Action::Key(KeyEvent::from(code)));
}

#[test]
fn overview() {
    snapshot("overview", &in_view(View::Overview));
}

#[test]
fn overview_without_sources() {
    snapshot(
        "overview_no_sources",
        &App::new(console_fixture::NOW, 1000, false),
    );
}

#[test]
fn documents() {
    snapshot("documents", &in_view(View::Documents));
}

#[test]
fn documents_filtered_by_size() {
    let mut app = in_view(View::Documents);
    for c in "/al".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Char('s'));
    key(&mut app, KeyCode::Char('s'));
    snapshot("documents_filtered", &app);
}

#[test]
fn document_detail() {
    let mut app = in_view(View::Documents);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.detail.as_deref(), Some("wordwall"));
    update(
        &mut app,
        Action::Detail(Box::new(console_fixture::detail())),
    );
    snapshot("document_detail", &app);
}

#[test]
fn sessions() {
    snapshot("sessions", &in_view(View::Sessions));
}

#[test]
fn awareness() {
    snapshot("awareness", &in_view(View::Awareness));
}

#[test]
fn traffic() {
    snapshot("traffic", &in_view(View::Traffic));
}

#[test]
fn traffic_paused_while_typing_a_filter() {
    let mut app = in_view(View::Traffic);
    key(&mut app, KeyCode::Char('p'));
    for c in "/lobby".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    snapshot("traffic_paused_filtering", &app);
}

#[test]
fn maintenance() {
    snapshot("maintenance", &in_view(View::Maintenance));
}

#[test]
fn help_overlay() {
    let mut app = in_view(View::Sessions);
    key(&mut app, KeyCode::Char('?'));
    assert_eq!(app.overlay, Overlay::Help);
    snapshot("help", &app);
}

#[test]
fn confirmation_dialog() {
    let mut app = in_view(View::Sessions);
    key(&mut app, KeyCode::Char('d'));
    assert!(matches!(
        app.overlay,
        Overlay::Confirm(OperatorAction::Disconnect { .. })
    ));
    snapshot("confirm_disconnect", &app);
}

#[test]
fn events() {
    snapshot("events", &in_view(View::Events));
}

#[test]
fn events_filtered() {
    let mut app = in_view(View::Events);
    for c in "/web-3".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    snapshot("events_filtered", &app);
}

#[test]
fn charts() {
    snapshot("charts", &in_view(View::Charts));
}

#[test]
fn documents_sorted_by_size_reversed() {
    let mut app = in_view(View::Documents);
    key(&mut app, KeyCode::Char('s'));
    key(&mut app, KeyCode::Char('s'));
    key(&mut app, KeyCode::Char('S'));
    snapshot("documents_size_ascending", &app);
}

#[test]
fn sessions_sorted_by_user() {
    let mut app = in_view(View::Sessions);
    key(&mut app, KeyCode::Char('s'));
    snapshot("sessions_by_user", &app);
}

#[test]
fn command_line_completing() {
    let mut app = in_view(View::Overview);
    for c in ":d".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Tab);
    snapshot("command_line", &app);
}

#[test]
fn traffic_payload() {
    let mut app = in_view(View::Traffic);
    key(&mut app, KeyCode::Enter);
    assert!(matches!(app.overlay, Overlay::Payload(_)));
    snapshot("traffic_payload", &app);
}

#[test]
fn cleanup_dialog_with_retention() {
    let mut app = in_view(View::Maintenance);
    key(&mut app, KeyCode::Char('c'));
    assert!(matches!(
        app.overlay,
        Overlay::Confirm(OperatorAction::Cleanup { .. })
    ));
    snapshot("confirm_cleanup", &app);
}

#[test]
fn actions_unavailable_without_a_credential() {
    let mut app = in_view(View::Maintenance);
    app.has_credential = false;
    key(&mut app, KeyCode::Char('c'));
    assert_eq!(app.overlay, Overlay::None);
    snapshot("actions_unavailable", &app);
}

#[test]
fn overview_with_a_degraded_instance_and_long_errors() {
    let mut app = in_view(View::Overview);
    if let Some(stats) = app.instances[0].report.stats.as_mut() {
        stats.persistence.degraded = Some(true);
        stats.persistence.backlog = Some(1200);
        stats.connections.users = None;
    }
    app.database.state = synckit::console::model::SourceState::Down {
        error: "error communicating with database: Connection refused (os error 111) while connecting to 10.0.0.9:5432".into(),
    };
    snapshot("overview_degraded", &app);
}

#[test]
fn documents_empty_says_why() {
    let mut app = App::new(console_fixture::NOW, 1000, false);
    app.view = View::Documents;
    app.database.state = synckit::console::model::SourceState::Up { latency_ms: 1 };
    snapshot("documents_empty_pg_up", &app);
    app.database.state = synckit::console::model::SourceState::Down {
        error: "connection refused".into(),
    };
    snapshot("documents_empty_pg_down", &app);
}
