//! The reducer: `update(&mut App, Action)` changes the model and returns what the
//! runtime should do next. Pure — no I/O, no clock — so every key in every view is
//! unit-tested (tests/console_update.rs).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::action::{Action, Effect, OperatorAction};
use super::app::{App, InstanceView, Overlay, View, HISTORY_LEN, REFRESH_STEPS_MS, TRAFFIC_LEN};
use super::model::InstanceReport;
use super::rows;

/// Rows a PageUp/PageDown moves.
const PAGE: usize = 10;

pub fn update(app: &mut App, action: Action) -> Option<Effect> {
    match action {
        Action::Key(key) => on_key(app, key),
        Action::Tick(now_ms) => {
            app.now_ms = now_ms;
            None
        }
        Action::Resize => None,
        Action::Instances(reports) => {
            if !app.paused {
                merge_instances(app, reports);
                clamp_selection(app);
            }
            None
        }
        Action::Database(report) => {
            if !app.paused {
                app.database = *report;
                clamp_selection(app);
            }
            None
        }
        Action::Redis(report) => {
            if !app.paused {
                let report = *report;
                app.traffic.extend(report.samples.iter().cloned());
                while app.traffic.len() > TRAFFIC_LEN {
                    app.traffic.pop_front();
                }
                app.redis = report;
                // Samples live in `traffic`; the report keeps rates, fleet, state.
                app.redis.samples.clear();
                clamp_selection(app);
            }
            None
        }
        Action::Detail(detail) => {
            if app.detail.as_deref() == Some(detail.id.as_str()) {
                app.detail_data = Some(*detail);
            }
            None
        }
        Action::ActionDone(result) => {
            app.notice = Some(match result {
                Ok(text) => (text, false),
                Err(text) => (text, true),
            });
            None
        }
    }
}

/// Fold new polls into the instance list, deriving message rates from the
/// difference with the previous poll of the same address.
fn merge_instances(app: &mut App, reports: Vec<InstanceReport>) {
    let mut previous = std::mem::take(&mut app.instances);
    for report in reports {
        let mut view = match previous
            .iter()
            .position(|p| p.report.address == report.address)
        {
            Some(i) => previous.swap_remove(i),
            None => InstanceView::default(),
        };
        if let (Some(old), Some(new)) = (&view.report.stats, &report.stats) {
            let seconds = (report.sampled_at_ms - view.report.sampled_at_ms) as f64 / 1000.0;
            // A restart resets the counters: show 0 rather than a negative rate.
            if seconds > 0.0 && new.instance_id == old.instance_id {
                view.rate_in = new.messages_in.saturating_sub(old.messages_in) as f64 / seconds;
                view.rate_out = new.messages_out.saturating_sub(old.messages_out) as f64 / seconds;
            } else {
                view.rate_in = 0.0;
                view.rate_out = 0.0;
            }
            push_bounded(&mut view.history_in, view.rate_in.round() as u64);
            push_bounded(&mut view.history_out, view.rate_out.round() as u64);
        }
        view.report = report;
        app.instances.push(view);
    }
}

fn push_bounded(history: &mut std::collections::VecDeque<u64>, value: u64) {
    history.push_back(value);
    while history.len() > HISTORY_LEN {
        history.pop_front();
    }
}

fn clamp_selection(app: &mut App) {
    for view in View::ALL {
        let len = rows::len(app, view);
        let selected = &mut app.selected[view.index()];
        *selected = (*selected).min(len.saturating_sub(1));
    }
}

fn on_key(app: &mut App, key: KeyEvent) -> Option<Effect> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        app.running = false;
        return Some(Effect::Quit);
    }
    match &app.overlay {
        Overlay::Confirm(action) => {
            let action = action.clone();
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => {
                    app.overlay = Overlay::None;
                    app.notice = Some((format!("running: {}", action.title()), false));
                    Some(Effect::Perform(action))
                }
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc | KeyCode::Char('q') => {
                    app.overlay = Overlay::None;
                    app.notice = Some(("cancelled".into(), false));
                    None
                }
                _ => None,
            };
        }
        Overlay::Help => {
            match key.code {
                KeyCode::Char('?') | KeyCode::Esc => app.overlay = Overlay::None,
                KeyCode::Char('q') => {
                    app.running = false;
                    return Some(Effect::Quit);
                }
                _ => {}
            }
            return None;
        }
        Overlay::None => {}
    }
    if app.editing_filter {
        edit_filter(app, key);
        return None;
    }
    match key.code {
        KeyCode::Char('q') => {
            app.running = false;
            return Some(Effect::Quit);
        }
        KeyCode::Char('?') => app.overlay = Overlay::Help,
        KeyCode::Char(c @ '1'..='6') => {
            let index = usize::from(c as u8 - b'1');
            app.view = View::ALL[index];
        }
        KeyCode::Tab => app.view = app.view.next(),
        KeyCode::BackTab => app.view = app.view.previous(),
        KeyCode::Char('j') | KeyCode::Down => move_selection(app, 1),
        KeyCode::Char('k') | KeyCode::Up => move_selection(app, -1),
        KeyCode::PageDown => move_selection(app, PAGE as isize),
        KeyCode::PageUp => move_selection(app, -(PAGE as isize)),
        KeyCode::Char('g') | KeyCode::Home => move_selection(app, isize::MIN / 2),
        KeyCode::Char('G') | KeyCode::End => move_selection(app, isize::MAX / 2),
        KeyCode::Char('/') => {
            app.editing_filter = true;
        }
        KeyCode::Esc => {
            if app.view == View::Documents && app.detail.is_some() {
                app.detail = None;
                app.detail_data = None;
                app.detail_scroll = 0;
            } else {
                app.filters[app.view.index()].clear();
            }
        }
        KeyCode::Enter if app.view == View::Documents && app.detail.is_none() => {
            let rows = rows::documents(app);
            if let Some(row) = rows.get(app.selected[View::Documents.index()]) {
                app.detail = Some(row.id.clone());
                app.detail_data = None;
                app.detail_scroll = 0;
            }
        }
        KeyCode::Char('p') => {
            app.paused = !app.paused;
            app.notice = Some((
                if app.paused {
                    "paused: the screen holds still"
                } else {
                    "resumed"
                }
                .into(),
                false,
            ));
        }
        KeyCode::Char('+') | KeyCode::Char('=') => step_refresh(app, -1),
        KeyCode::Char('-') => step_refresh(app, 1),
        KeyCode::Char('s') => match app.view {
            View::Documents => app.document_sort = app.document_sort.next(),
            View::Sessions => app.session_sort = app.session_sort.next(),
            _ => {}
        },
        KeyCode::Char('c') => {
            let via = app.first_up_instance().map(str::to_owned);
            ask(app, via.map(|via| OperatorAction::Cleanup { via }));
        }
        KeyCode::Char('a') => {
            let via = app.first_up_instance().map(str::to_owned);
            ask(app, via.map(|via| OperatorAction::PruneAwareness { via }));
        }
        KeyCode::Char('d') => {
            let target = selected_target(app);
            if let Some(target) = target {
                ask(app, target);
            }
        }
        _ => {}
    }
    None
}

/// The action `d` means on the current view's selection: `Some(None)` when the view
/// has a target kind but no instance can carry it out.
fn selected_target(app: &App) -> Option<Option<OperatorAction>> {
    match app.view {
        View::Sessions => {
            let rows = rows::sessions(app);
            let row = rows.get(app.selected[View::Sessions.index()])?;
            Some(
                row.via
                    .clone()
                    .filter(|_| row.live)
                    .map(|via| OperatorAction::Disconnect {
                        session: row.id.clone(),
                        user: row.user.clone().unwrap_or_else(|| "-".into()),
                        via,
                    }),
            )
        }
        View::Documents => {
            let id = match &app.detail {
                Some(id) => id.clone(),
                None => rows::documents(app)
                    .get(app.selected[View::Documents.index()])?
                    .id
                    .clone(),
            };
            let via = rows::documents(app)
                .into_iter()
                .find(|r| r.id == id)
                .and_then(|r| r.via)
                .or_else(|| app.first_up_instance().map(str::to_owned));
            Some(via.map(|via| OperatorAction::DeleteDocument { id, via }))
        }
        _ => None,
    }
}

/// Open the confirmation dialog, or say why not.
fn ask(app: &mut App, action: Option<OperatorAction>) {
    if !app.allow_actions {
        app.notice = Some(("read-only (start with --allow-actions)".into(), true));
        return;
    }
    match action {
        Some(action) => app.overlay = Overlay::Confirm(action),
        None => {
            app.notice = Some((
                "no instance can carry this out (is its admin API answering? is the session live?)"
                    .into(),
                true,
            ))
        }
    }
}

fn edit_filter(app: &mut App, key: KeyEvent) {
    let index = app.view.index();
    match key.code {
        KeyCode::Esc => {
            app.filters[index].clear();
            app.editing_filter = false;
        }
        KeyCode::Enter => app.editing_filter = false,
        KeyCode::Backspace => {
            app.filters[index].pop();
        }
        KeyCode::Char(c) => {
            app.filters[index].push(c);
        }
        _ => return,
    }
    app.selected[index] = 0;
}

fn move_selection(app: &mut App, by: isize) {
    if app.view == View::Documents && app.detail.is_some() {
        let scroll = i64::from(app.detail_scroll) + by.clamp(-1000, 1000) as i64;
        app.detail_scroll = u16::try_from(scroll.max(0)).unwrap_or(u16::MAX);
        return;
    }
    let len = rows::len(app, app.view);
    let selected = &mut app.selected[app.view.index()];
    let target = (*selected as isize).saturating_add(by);
    *selected = target.clamp(0, len.saturating_sub(1) as isize) as usize;
}

/// `direction` -1 refreshes more often, +1 less often.
fn step_refresh(app: &mut App, direction: isize) {
    let current = REFRESH_STEPS_MS
        .iter()
        .position(|ms| *ms >= app.refresh_ms)
        .unwrap_or(REFRESH_STEPS_MS.len() - 1);
    let next = (current as isize + direction).clamp(0, REFRESH_STEPS_MS.len() as isize - 1);
    app.refresh_ms = REFRESH_STEPS_MS[next as usize];
    app.notice = Some((format!("refresh every {}", human_ms(app.refresh_ms)), false));
}

/// `250ms`, `1s`, `30s`.
pub fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1000)
    }
}
