//! View 1, Overview / health: every instance of the fleet however it was heard of
//! (status up/online/offline/gone/DOWN, uptime, connections, documents, smoothed
//! message rates, errors, write backlog; host, id, version, pub/sub and storage at
//! 120 columns and more), the sources with latency and every error in full, the
//! scheduler's next and last runs, the newest events, and — when there is room —
//! the charts.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Widget, Wrap};

use super::format::{ago, clock, count, known, rate_or_dash, until, uptime};
use super::widgets::{render_empty, render_selectable};
use super::{block, source_style, theme};
use crate::console::app::{App, View};
use crate::console::model::{SourceState, Stats};
use crate::console::rows::{self, short_instance, FleetRow, MemberStatus};

/// Width from which the Overview shows every column and the charts.
const WIDE: u16 = 120;

pub(crate) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let fleet = rows::fleet(app);
    let table_height = (fleet.len().max(1) as u16 + 3).min(area.height / 3).max(4);
    let sources = source_lines(app, &fleet);
    // Room for every source line as wrapped in half the width (errors in full),
    // within a bound that leaves the rest of the view.
    let inner = usize::from((area.width / 2).saturating_sub(2)).max(1);
    let wrapped: usize = sources
        .iter()
        .map(|l| l.width().max(1).div_ceil(inner))
        .sum();
    let middle_height = (wrapped as u16 + 2).clamp(7, (area.height / 2).max(7));
    let [instances, middle, rest] = Layout::vertical([
        Constraint::Length(table_height),
        Constraint::Length(middle_height),
        Constraint::Min(0),
    ])
    .areas(area);
    render_fleet(app, &fleet, instances, buf);
    let [sources_area, scheduler] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(middle);
    render_sources(app, sources, sources_area, buf);
    render_scheduler(app, scheduler, buf);
    if area.width >= WIDE && rest.height >= 24 {
        let [charts, events] =
            Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(rest);
        super::charts::render_row(app, charts, buf);
        render_events(app, events, buf);
    } else {
        render_events(app, rest, buf);
    }
}

fn number_style(n: Option<u64>) -> Style {
    if n.is_some_and(|n| n > 0) {
        theme::warn()
    } else {
        Style::new()
    }
}

/// The status cell: health for an instance that answers, else how it is known.
fn status(row: &FleetRow) -> (String, Style) {
    match (&row.stats, row.status) {
        (Some(s), _) => match (s.persistence.degraded, s.persistence.backlog) {
            (Some(true), _) => ("degraded".into(), theme::bad()),
            (_, Some(b)) if b > 0 => ("backlog".into(), theme::warn()),
            (Some(false), _) => ("ok".into(), theme::ok()),
            _ => ("?".into(), theme::dim()),
        },
        (None, MemberStatus::Online) => ("online".into(), theme::ok()),
        (None, MemberStatus::Offline) => ("offline".into(), theme::dim()),
        (None, MemberStatus::Gone) => ("gone".into(), theme::warn()),
        (None, MemberStatus::Unreachable) => ("DOWN".into(), theme::bad()),
        (None, _) => ("?".into(), theme::dim()),
    }
}

fn render_fleet(app: &App, fleet: &[FleetRow], area: Rect, buf: &mut Buffer) {
    let wide = area.width >= WIDE;
    let rows: Vec<Row> = fleet.iter().map(|r| fleet_row(app, r, wide)).collect();
    let title = format!("Instances ({})", fleet.len());
    if rows.is_empty() {
        render_empty(
            " no admin API configured or answering (--server)",
            title,
            area,
            buf,
        );
        return;
    }
    render_selectable(
        app,
        View::Overview,
        title,
        &fleet_columns(wide),
        rows,
        area,
        buf,
    );
}

/// One instance's row: its stats when its admin API answered, else dashes (and
/// the uptime its presence heartbeat gives).
fn fleet_row(app: &App, r: &FleetRow, wide: bool) -> Row<'static> {
    let dash = || Span::styled("-", theme::dim());
    let (state, style) = status(r);
    let mut cells = vec![Span::raw(r.name.clone())];
    if wide {
        cells.push(Span::raw(
            r.id.as_deref().map_or("-".into(), short_instance),
        ));
        cells.push(Span::raw(r.version.clone().unwrap_or_else(|| "-".into())));
    }
    cells.push(Span::styled(state, style));
    match &r.stats {
        Some(s) => push_stats_cells(&mut cells, r, s, wide),
        None => {
            // Heard on presence only: its heartbeat says since when it runs.
            let up = r
                .started_at_ms
                .filter(|_| r.status == MemberStatus::Online)
                .map(|t| uptime((app.now_ms - t) as f64 / 1000.0));
            cells.push(up.map_or_else(dash, Span::raw));
            let n = if wide { 10 } else { 6 };
            cells.extend((0..n).map(|_| dash()));
        }
    }
    Row::new(cells)
}

/// The cells an instance's stats fill, in [`fleet_columns`] order after Status.
fn push_stats_cells(cells: &mut Vec<Span<'static>>, r: &FleetRow, s: &Stats, wide: bool) {
    let errors = s.errors_total();
    let backlog = s.persistence.backlog;
    cells.push(Span::raw(s.uptime_seconds.map_or("?".into(), uptime)));
    cells.push(Span::raw(known(s.connections.open)));
    if wide {
        cells.push(Span::raw(known(s.connections.users)));
    }
    cells.push(Span::raw(known(s.documents.cached)));
    if wide {
        cells.push(Span::raw(known(s.documents.subscriptions)));
    }
    cells.push(Span::raw(rate_or_dash(r.rate_in)));
    cells.push(Span::raw(rate_or_dash(r.rate_out)));
    cells.push(Span::styled(known(errors), number_style(errors)));
    cells.push(Span::styled(known(backlog), number_style(backlog)));
    if wide {
        cells.push(Span::raw(known(s.pubsub.state.clone())));
        cells.push(Span::raw(known(s.persistence.backend.clone())));
    }
}

/// The instance table's columns; a narrow terminal drops the ones a wide one adds.
fn fleet_columns(wide: bool) -> Vec<(&'static str, Constraint)> {
    if wide {
        vec![
            ("Instance", Constraint::Length(18)),
            ("ID", Constraint::Length(9)),
            ("Version", Constraint::Length(8)),
            ("Status", Constraint::Length(9)),
            ("Uptime", Constraint::Length(7)),
            ("Conns", Constraint::Length(6)),
            ("Users", Constraint::Length(6)),
            ("Docs", Constraint::Length(6)),
            ("Subs", Constraint::Length(6)),
            ("In/s", Constraint::Length(7)),
            ("Out/s", Constraint::Length(7)),
            ("Errors", Constraint::Length(7)),
            ("Backlog", Constraint::Length(8)),
            ("Pub/sub", Constraint::Length(13)),
            ("Storage", Constraint::Min(8)),
        ]
    } else {
        vec![
            ("Instance", Constraint::Length(14)),
            ("Status", Constraint::Length(8)),
            ("Uptime", Constraint::Length(6)),
            ("Conns", Constraint::Length(5)),
            ("Docs", Constraint::Length(5)),
            ("In/s", Constraint::Length(6)),
            ("Out/s", Constraint::Length(6)),
            ("Errors", Constraint::Length(6)),
            ("Backlog", Constraint::Min(7)),
        ]
    }
}

fn source_line(name: &str, state: &SourceState, extra: String) -> Vec<Line<'static>> {
    let mut lines = vec![Line::from(vec![
        Span::raw(format!("{name:<10} ")),
        Span::styled(format!("{:<9}", state.label()), source_style(state)),
        Span::raw(extra),
    ])];
    if let SourceState::Down { error } = state {
        lines.push(Line::styled(format!("  {error}"), theme::bad()));
    }
    lines
}

fn source_lines(app: &App, fleet: &[FleetRow]) -> Vec<Line<'static>> {
    let db = &app.database;
    let up = app
        .instances
        .iter()
        .filter(|i| i.report.state.is_up())
        .count();
    let api_state = if app.instances.is_empty() {
        SourceState::Off
    } else if up == app.instances.len() {
        SourceState::Up { latency_ms: 0 }
    } else {
        SourceState::Down {
            error: String::new(),
        }
    };
    let mut lines = vec![Line::from(vec![
        Span::raw(format!("{:<10} ", "Admin API")),
        Span::styled(
            format!("{up}/{} up", app.instances.len()),
            source_style(&api_state),
        ),
    ])];
    // Errors in full (wrapped): the operator acts on them.
    for r in fleet
        .iter()
        .filter(|r| r.status == MemberStatus::Unreachable)
    {
        if let Some(error) = &r.error {
            lines.push(Line::styled(format!("  {}: {error}", r.name), theme::bad()));
        }
    }
    for i in &app.instances {
        for p in &i.report.problems {
            lines.push(Line::styled(
                format!("  {}: {p}", rows::instance_name(i)),
                theme::warn(),
            ));
        }
    }
    lines.extend(source_line(
        "PostgreSQL",
        &db.state,
        format!(
            "{} docs {} sess",
            count(db.documents_total),
            count(db.sessions_total)
        ),
    ));
    let heard = app.redis.fleet.len();
    let online = app
        .redis
        .fleet
        .iter()
        .filter(|m| m.status == crate::console::model::PeerStatus::Online)
        .count();
    lines.extend(source_line(
        "Redis",
        &app.redis.state,
        format!("presence {online}/{heard} up"),
    ));
    lines
}

fn render_sources(app: &App, lines: Vec<Line<'static>>, area: Rect, buf: &mut Buffer) {
    let db = &app.database;
    let title = if db.state.is_up() {
        format!("Sources · queries {}ms", db.query_ms)
    } else {
        "Sources".into()
    };
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(block(title))
        .render(area, buf);
}

fn render_scheduler(app: &App, area: Rect, buf: &mut Buffer) {
    let runs = rows::runs(app);
    let mut jobs = rows::jobs(app);
    // One line per job name: the soonest next run across the fleet.
    jobs.sort_by(|a, b| a.name.cmp(&b.name).then(a.next_run_ms.cmp(&b.next_run_ms)));
    jobs.dedup_by(|a, b| a.name == b.name);
    let lines: Vec<Line> = if jobs.is_empty() {
        let why = if app.instances.iter().any(|i| i.report.state.is_up()) {
            "no jobs configured"
        } else {
            "no instance answers (its jobs are unknown)"
        };
        vec![Line::styled(why, theme::dim())]
    } else {
        jobs.iter()
            .map(|j| {
                let last = rows::last_run(&runs, &j.name);
                let (last_text, style) = match last {
                    Some(r) if r.outcome == "ok" => (
                        format!("ok {}", ago(app.now_ms, r.started_at_ms)),
                        theme::ok(),
                    ),
                    Some(r) if r.outcome == "running" => ("running".into(), theme::warn()),
                    Some(r) => (
                        format!("{} {}", r.outcome, ago(app.now_ms, r.started_at_ms)),
                        theme::bad(),
                    ),
                    None => ("never".into(), theme::dim()),
                };
                let next = if j.enabled {
                    until(app.now_ms, j.next_run_ms)
                } else {
                    "off".into()
                };
                Line::from(vec![
                    Span::raw(format!("{:<16}", j.name)),
                    Span::raw(format!("{next:<9}")),
                    Span::styled(last_text, style),
                ])
            })
            .collect()
    };
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(block("Scheduler (next, last)".into()))
        .render(area, buf);
}

/// The newest events of the fleet, one line each.
fn render_events(app: &App, area: Rect, buf: &mut Buffer) {
    if area.height < 3 {
        return;
    }
    let shown = usize::from(area.height.saturating_sub(2));
    let names = rows::names_by_id(&rows::fleet(app));
    let lines: Vec<Line> = if app.events.is_empty() {
        vec![Line::styled("no events", theme::dim())]
    } else {
        app.events
            .iter()
            .take(shown)
            .map(|e| {
                let name = names.get(&e.instance_id).unwrap_or(&e.instance);
                Line::from(vec![
                    Span::raw(format!("{} ", clock(e.event.at_ms))),
                    Span::styled(
                        format!("{:<12} ", super::format::preview(name, 12)),
                        theme::dim(),
                    ),
                    Span::styled(e.event.message.clone(), super::events::severity_style(e)),
                ])
            })
            .collect()
    };
    Paragraph::new(lines)
        .block(block(format!(
            "Latest events ({}) · 7 for all",
            app.events.len()
        )))
        .render(area, buf);
}
