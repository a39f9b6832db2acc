//! The reducer: `update(&mut App, Action)` changes the model and returns what the
//! runtime should do next. Pure — no I/O, no clock — so every key in every view is
//! unit-tested (tests/it/console_update.rs).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::action::{Action, Effect, OperatorAction};
use super::app::{
    sort_columns, App, FleetEvent, InstanceView, Overlay, Point, View, EVENTS_LEN, HISTORY_LEN,
    HISTORY_MS, RATE_WINDOW_MS, REFRESH_STEPS_MS, TRAFFIC_LEN,
};
use super::model::InstanceReport;
use super::rows;

/// Rows a PageUp/PageDown moves.
const PAGE: usize = 10;

/// The `:` commands, with what each does (the help and completion show them).
const COMMANDS: [(&str, &str); 17] = [
    ("overview", "view 1"),
    ("documents", "view 2 (also :docs)"),
    ("docs", "view 2"),
    ("sessions", "view 3"),
    ("awareness", "view 4"),
    ("traffic", "view 5"),
    ("maintenance", "view 6 (also :jobs)"),
    ("jobs", "view 6"),
    ("events", "view 7"),
    ("charts", "view 8"),
    ("cleanup", "run a cleanup now"),
    ("prune", "prune awareness now"),
    ("pause", "pause / resume"),
    ("sort", "next sort column"),
    ("reverse", "reverse the sort"),
    ("help", "the keys"),
    ("quit", "quit (also :q)"),
];

pub fn update(app: &mut App, action: Action) -> Option<Effect> {
    match action {
        Action::Key(key) => on_key(app, key),
        Action::Tick(now_ms) => {
            app.now_ms = now_ms;
            None
        }
        Action::Resize => None,
        Action::Instances(reports) => {
            if app.paused {
                hold_events(app, reports);
            } else {
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
        Action::OperatorActionDone(result) => {
            app.notice = Some(match result {
                Ok(text) => (text, false),
                Err(text) => (text, true),
            });
            None
        }
    }
}

/// Fold new polls into the instance list: rates over a sliding window of the
/// cumulative counters, the chart history, and the new events.
fn merge_instances(app: &mut App, reports: Vec<InstanceReport>) {
    let mut previous = std::mem::take(&mut app.instances);
    for mut report in reports {
        let mut view = match previous
            .iter()
            .position(|p| p.report.address == report.address)
        {
            Some(i) => previous.swap_remove(i),
            None => InstanceView::default(),
        };
        let events = std::mem::take(&mut report.events);
        if let Some(stats) = report.stats.as_ref().filter(|_| report.state.is_up()) {
            if view.known_id.is_some() && view.known_id != stats.instance_id {
                // A restart resets the counters: start the window again.
                view.counters.clear();
                view.history.clear();
            }
            view.known_id = stats.instance_id.clone().or(view.known_id);
            let at = report.sampled_at_ms;
            if let (Some(i), Some(o)) = (stats.messages_in(), stats.messages_out()) {
                view.counters.push_back((at, i, o));
            }
            while view
                .counters
                .front()
                .is_some_and(|(t, ..)| at - t > RATE_WINDOW_MS)
                && view.counters.len() > 2
            {
                view.counters.pop_front();
            }
            let rates = match (view.counters.front(), view.counters.back()) {
                (Some(&(t0, i0, o0)), Some(&(t1, i1, o1))) if t1 > t0 => {
                    let seconds = (t1 - t0) as f64 / 1000.0;
                    Some((
                        i1.saturating_sub(i0) as f64 / seconds,
                        o1.saturating_sub(o0) as f64 / seconds,
                    ))
                }
                _ => None,
            };
            view.rate_in = rates.map(|r| r.0);
            view.rate_out = rates.map(|r| r.1);
            view.history.push_back(Point {
                at_ms: at,
                rate_in: view.rate_in.unwrap_or(0.0),
                rate_out: view.rate_out.unwrap_or(0.0),
                connections: stats.connections.open.unwrap_or(0) as f64,
                backlog: stats.persistence.backlog.unwrap_or(0) as f64,
            });
            while view.history.len() > HISTORY_LEN
                || view
                    .history
                    .front()
                    .is_some_and(|p| at - p.at_ms > HISTORY_MS)
            {
                view.history.pop_front();
            }
        } else {
            view.rate_in = None;
            view.rate_out = None;
        }
        view.report = report;
        if let Some(id) = view.known_id.clone() {
            let name = rows::instance_name(&view);
            add_events(app, &id, &name, events);
        }
        app.instances.push(view);
    }
}

/// Keep the events of polls that arrive while paused: each is sent once.
fn hold_events(app: &mut App, reports: Vec<InstanceReport>) {
    for report in reports {
        let Some(id) = report.stats.as_ref().and_then(|s| s.instance_id.clone()) else {
            continue;
        };
        let name = report
            .stats
            .as_ref()
            .and_then(|s| s.host.clone())
            .unwrap_or_else(|| rows::short_instance(&id));
        app.held_events
            .extend(report.events.into_iter().map(|event| FleetEvent {
                instance_id: id.clone(),
                instance: name.clone(),
                event,
            }));
    }
    let excess = app.held_events.len().saturating_sub(EVENTS_LEN);
    app.held_events.drain(..excess);
}

/// Add one instance's new events, keeping the fleet's list newest first, without
/// duplicates and bounded.
fn add_events(app: &mut App, instance_id: &str, name: &str, events: Vec<super::model::Event>) {
    let mut added = false;
    for event in events {
        let seen = app
            .events
            .iter()
            .any(|e| e.instance_id == instance_id && e.event.seq == event.seq);
        if !seen {
            app.events.push_back(FleetEvent {
                instance_id: instance_id.to_owned(),
                instance: name.to_owned(),
                event,
            });
            added = true;
        }
    }
    if added {
        app.events.make_contiguous().sort_by(|a, b| {
            b.event
                .at_ms
                .cmp(&a.event.at_ms)
                .then(b.event.seq.cmp(&a.event.seq))
        });
        app.events.truncate(EVENTS_LEN);
    }
}

fn clamp_selection(app: &mut App) {
    for view in View::ALL {
        let len = rows::len(app, view);
        let selected = &mut app.selected[view.index()];
        *selected = (*selected).min(len.saturating_sub(1));
    }
}

fn quit(app: &mut App) -> Option<Effect> {
    app.running = false;
    Some(Effect::Quit)
}

/// A key goes to the first that takes it: an open overlay, the command line, the
/// filter being edited, and only then the view.
fn on_key(app: &mut App, key: KeyEvent) -> Option<Effect> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return quit(app);
    }
    match &app.overlay {
        Overlay::Confirm(action) => {
            let action = action.clone();
            return on_confirm_key(app, action, key);
        }
        Overlay::Help => return on_help_key(app, key),
        Overlay::Payload(_) => return on_payload_key(app, key),
        Overlay::None => {}
    }
    if app.command.is_some() {
        return edit_command(app, key);
    }
    if app.editing_filter {
        edit_filter(app, key);
        return None;
    }
    on_view_key(app, key)
}

/// The confirmation of an action: yes runs it, no (or leaving) cancels it; any
/// other key keeps asking.
fn on_confirm_key(app: &mut App, action: OperatorAction, key: KeyEvent) -> Option<Effect> {
    match key.code {
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
    }
}

/// The help overlay: closed by the key that opened it or Esc.
fn on_help_key(app: &mut App, key: KeyEvent) -> Option<Effect> {
    match key.code {
        KeyCode::Char('?') | KeyCode::Esc => app.overlay = Overlay::None,
        KeyCode::Char('q') => return quit(app),
        _ => {}
    }
    None
}

/// The payload overlay: scrolled like a view, closed by Esc or Enter.
fn on_payload_key(app: &mut App, key: KeyEvent) -> Option<Effect> {
    match key.code {
        KeyCode::Esc | KeyCode::Enter => {
            app.overlay = Overlay::None;
            app.overlay_scroll = 0;
        }
        KeyCode::Char('q') => return quit(app),
        KeyCode::Char('j') | KeyCode::Down => {
            app.overlay_scroll = app.overlay_scroll.saturating_add(1)
        }
        KeyCode::Char('k') | KeyCode::Up => {
            app.overlay_scroll = app.overlay_scroll.saturating_sub(1)
        }
        KeyCode::PageDown => app.overlay_scroll = app.overlay_scroll.saturating_add(10),
        KeyCode::PageUp => app.overlay_scroll = app.overlay_scroll.saturating_sub(10),
        _ => {}
    }
    None
}

/// A key acting on the current view: navigation, selection, refresh, sorting and
/// the actions (each asked for confirmation first).
fn on_view_key(app: &mut App, key: KeyEvent) -> Option<Effect> {
    match key.code {
        KeyCode::Char('q') => return quit(app),
        KeyCode::Char('?') => app.overlay = Overlay::Help,
        KeyCode::Char(':') => app.command = Some(String::new()),
        KeyCode::Char(c @ '1'..='8') => {
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
        KeyCode::Esc => back_out(app),
        KeyCode::Enter => open_selected(app),
        KeyCode::Char('p') => toggle_pause(app),
        KeyCode::Char('+') | KeyCode::Char('=') => step_refresh(app, -1),
        KeyCode::Char('-') => step_refresh(app, 1),
        KeyCode::Char('s') => next_sort(app),
        KeyCode::Char('S') => reverse_sort(app),
        KeyCode::Char('c') => ask_cleanup(app),
        KeyCode::Char('a') => ask_prune(app),
        KeyCode::Char('d') => {
            if let Some(target) = selected_target(app) {
                ask(app, target);
            }
        }
        _ => {}
    }
    None
}

/// Esc: out of a document's detail back to the list, else clear the view's filter.
fn back_out(app: &mut App) {
    if app.view == View::Documents && app.detail.is_some() {
        app.detail = None;
        app.detail_data = None;
        app.detail_scroll = 0;
    } else {
        app.filters[app.view.index()].clear();
    }
}

/// Enter: open the selected document's detail, or the selected traffic sample's
/// payload; elsewhere it does nothing.
fn open_selected(app: &mut App) {
    if app.view == View::Documents && app.detail.is_none() {
        let rows = rows::documents(app);
        if let Some(row) = rows.get(app.selected[View::Documents.index()]) {
            app.detail = Some(row.id.clone());
            app.detail_data = None;
            app.detail_scroll = 0;
        }
    } else if app.view == View::Traffic {
        let rows = rows::traffic(app);
        if let Some(sample) = rows.get(app.selected[View::Traffic.index()]) {
            app.overlay = Overlay::Payload(Box::new((*sample).clone()));
            app.overlay_scroll = 0;
        }
    }
}

fn toggle_pause(app: &mut App) {
    app.paused = !app.paused;
    if !app.paused {
        let held = std::mem::take(&mut app.held_events);
        let mut by_instance: Vec<(String, String, Vec<super::model::Event>)> = Vec::new();
        for e in held {
            match by_instance.iter_mut().find(|(id, ..)| *id == e.instance_id) {
                Some((_, _, events)) => events.push(e.event),
                None => by_instance.push((e.instance_id, e.instance, vec![e.event])),
            }
        }
        for (id, name, events) in by_instance {
            add_events(app, &id, &name, events);
        }
    }
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

fn next_sort(app: &mut App) {
    let columns = sort_columns(app.view);
    if columns.is_empty() {
        return;
    }
    let sort = &mut app.sorts[app.view.index()];
    sort.column = (sort.column + 1) % columns.len();
    sort.descending = columns[sort.column].descending;
}

fn reverse_sort(app: &mut App) {
    if sort_columns(app.view).is_empty() {
        return;
    }
    let sort = &mut app.sorts[app.view.index()];
    sort.descending = !sort.descending;
}

fn ask_cleanup(app: &mut App) {
    let action = app.first_up_instance().map(|i| OperatorAction::Cleanup {
        via: i.report.address.clone(),
        target: rows::instance_name(i),
        retention: i.report.cleanup,
    });
    ask(app, action);
}

fn ask_prune(app: &mut App) {
    let action = app
        .first_up_instance()
        .map(|i| OperatorAction::PruneAwareness {
            via: i.report.address.clone(),
            target: rows::instance_name(i),
        });
    ask(app, action);
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
                .or_else(|| app.first_up_instance().map(|i| i.report.address.clone()));
            Some(via.map(|via| OperatorAction::DeleteDocument { id, via }))
        }
        _ => None,
    }
}

/// Open the confirmation dialog, or say why not — before any dialog.
fn ask(app: &mut App, action: Option<OperatorAction>) {
    if let Some(why) = app.actions_unavailable() {
        app.notice = Some((why.into(), true));
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

/// The commands starting with what was typed.
pub fn completions(typed: &str) -> Vec<&'static str> {
    let typed = typed.trim();
    COMMANDS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| name.starts_with(typed))
        .collect()
}

fn common_prefix(words: &[&str]) -> String {
    let Some(first) = words.first() else {
        return String::new();
    };
    let mut prefix = first.to_string();
    for w in &words[1..] {
        while !w.starts_with(&prefix) {
            prefix.pop();
        }
    }
    prefix
}

fn edit_command(app: &mut App, key: KeyEvent) -> Option<Effect> {
    let typed = app.command.as_mut()?;
    match key.code {
        KeyCode::Esc => app.command = None,
        // Backspace on an empty line closes it, as in vi.
        KeyCode::Backspace if typed.pop().is_none() => app.command = None,
        KeyCode::Tab => {
            let candidates = completions(typed);
            match candidates.as_slice() {
                [] => {}
                [one] => *typed = (*one).to_owned(),
                many => *typed = common_prefix(many),
            }
        }
        KeyCode::Enter => {
            let typed = app.command.take().unwrap_or_default();
            return run_command(app, typed.trim());
        }
        KeyCode::Char(c) => typed.push(c),
        _ => {}
    }
    None
}

fn run_command(app: &mut App, command: &str) -> Option<Effect> {
    // A unique prefix is enough (`:ev` is `:events`).
    let name = match completions(command).as_slice() {
        _ if COMMANDS.iter().any(|(n, _)| *n == command) => command.to_owned(),
        [one] => (*one).to_owned(),
        _ if command == "q" => "quit".to_owned(),
        [] => {
            app.notice = Some((format!("unknown command :{command} (Tab completes)"), true));
            return None;
        }
        many => {
            app.notice = Some((format!(":{command} is ambiguous: {}", many.join(" ")), true));
            return None;
        }
    };
    let view = |v: View| Some(v);
    let target = match name.as_str() {
        "overview" => view(View::Overview),
        "documents" | "docs" => view(View::Documents),
        "sessions" => view(View::Sessions),
        "awareness" => view(View::Awareness),
        "traffic" => view(View::Traffic),
        "maintenance" | "jobs" => view(View::Maintenance),
        "events" => view(View::Events),
        "charts" => view(View::Charts),
        _ => None,
    };
    if let Some(v) = target {
        app.view = v;
        return None;
    }
    match name.as_str() {
        "cleanup" => ask_cleanup(app),
        "prune" => ask_prune(app),
        "pause" => toggle_pause(app),
        "sort" => next_sort(app),
        "reverse" => reverse_sort(app),
        "help" => app.overlay = Overlay::Help,
        "quit" => return quit(app),
        _ => {}
    }
    None
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
pub(crate) fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1000)
    }
}
