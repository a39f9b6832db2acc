//! View 1, Overview / health: every instance (uptime, connections, documents,
//! message rates, errors, write backlog), the PostgreSQL and Redis sources with
//! latency, the scheduler's next and last runs, and sparklines of message rates.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Sparkline, Widget};

use super::format::{ago, count, rate, until, uptime};
use super::widgets::{render_empty, render_selectable};
use super::{block, source_style, theme};
use crate::console::app::{App, View};
use crate::console::model::SourceState;
use crate::console::rows::{self, short_instance};

pub fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let table_height = (app.instances.len().max(1) as u16 + 3).min(area.height / 2);
    let [instances, middle, sparks] = Layout::vertical([
        Constraint::Length(table_height),
        Constraint::Length(6),
        Constraint::Min(0),
    ])
    .areas(area);
    render_instances(app, instances, buf);
    let [sources, scheduler] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(middle);
    render_sources(app, sources, buf);
    render_scheduler(app, scheduler, buf);
    render_sparklines(app, sparks, buf);
}

fn render_instances(app: &App, area: Rect, buf: &mut Buffer) {
    let rows: Vec<Row> = app
        .instances
        .iter()
        .map(|i| match &i.report.stats {
            Some(s) if i.report.state.is_up() => {
                let (state, style) = if s.degraded {
                    ("degraded", theme::bad())
                } else if s.backlog > 0 {
                    ("backlog", theme::warn())
                } else {
                    ("ok", theme::ok())
                };
                Row::new(vec![
                    Span::raw(short_instance(&s.instance_id)),
                    Span::raw(uptime(s.uptime_seconds)),
                    Span::raw(s.connections.to_string()),
                    Span::raw(s.documents.to_string()),
                    Span::raw(rate(i.rate_in)),
                    Span::raw(rate(i.rate_out)),
                    Span::styled(
                        s.errors.to_string(),
                        if s.errors > 0 {
                            theme::warn()
                        } else {
                            Style::new()
                        },
                    ),
                    Span::styled(
                        s.backlog.to_string(),
                        if s.backlog > 0 {
                            theme::warn()
                        } else {
                            Style::new()
                        },
                    ),
                    Span::styled(state, style),
                ])
            }
            _ => {
                let why = match &i.report.state {
                    SourceState::Down { error } => error.clone(),
                    _ => "no answer yet".into(),
                };
                let address = i.report.address.trim_start_matches("http://").to_owned();
                let mut cells = vec![Span::raw(address)];
                cells.extend((0..7).map(|_| Span::styled("-", theme::dim())));
                cells.push(Span::styled(format!("DOWN: {why}"), theme::bad()));
                Row::new(cells)
            }
        })
        .collect();
    let title = format!("Instances ({})", app.instances.len());
    if rows.is_empty() {
        render_empty(
            " no admin API configured or answering (--server)",
            title,
            area,
            buf,
        );
        return;
    }
    let columns = [
        ("Instance", Constraint::Length(15)),
        ("Uptime", Constraint::Length(7)),
        ("Conns", Constraint::Length(6)),
        ("Docs", Constraint::Length(6)),
        ("In/s", Constraint::Length(6)),
        ("Out/s", Constraint::Length(6)),
        ("Errors", Constraint::Length(6)),
        ("Backlog", Constraint::Length(7)),
        ("State", Constraint::Min(5)),
    ];
    render_selectable(app, View::Overview, title, columns, rows, area, buf);
}

fn source_line(name: &str, state: &SourceState, extra: String) -> Line<'static> {
    let detail = match state {
        SourceState::Down { error } => error.clone(),
        _ => extra,
    };
    Line::from(vec![
        Span::raw(format!("{name:<10} ")),
        Span::styled(format!("{:<9}", state.label()), source_style(state)),
        Span::raw(detail),
    ])
}

fn render_sources(app: &App, area: Rect, buf: &mut Buffer) {
    let db = &app.database;
    let online = app.redis.fleet.iter().filter(|m| m.online).count();
    let up = app
        .instances
        .iter()
        .filter(|i| i.report.state.is_up())
        .count();
    let api_state = if app.instances.is_empty() {
        SourceState::Off
    } else if up > 0 {
        SourceState::Up { latency_ms: 0 }
    } else {
        SourceState::Down {
            error: "no instance answers".into(),
        }
    };
    let lines = vec![
        Line::from(vec![
            Span::raw(format!("{:<10} ", "Admin API")),
            Span::styled(
                format!("{up}/{} up", app.instances.len()),
                source_style(&api_state),
            ),
        ]),
        source_line(
            "PostgreSQL",
            &db.state,
            format!(
                "{} docs {} sess",
                count(db.documents_total),
                count(db.sessions_total)
            ),
        ),
        source_line("Redis", &app.redis.state, format!("fleet {online} online")),
    ];
    let title = if db.state.is_up() {
        format!("Sources · queries {}ms", db.query_ms)
    } else {
        "Sources".into()
    };
    Paragraph::new(lines).block(block(title)).render(area, buf);
}

fn render_scheduler(app: &App, area: Rect, buf: &mut Buffer) {
    let runs = rows::runs(app);
    let mut jobs = rows::jobs(app);
    // One line per job name: the soonest next run across the fleet.
    jobs.sort_by(|a, b| a.name.cmp(&b.name).then(a.next_run_ms.cmp(&b.next_run_ms)));
    jobs.dedup_by(|a, b| a.name == b.name);
    let lines: Vec<Line> = if jobs.is_empty() {
        vec![Line::styled("no scheduler reported", theme::dim())]
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
        .block(block("Scheduler (next, last)".into()))
        .render(area, buf);
}

/// Sum of every instance's history, aligned on the newest sample.
fn fleet_history(app: &App, inbound: bool) -> Vec<u64> {
    let longest = app
        .instances
        .iter()
        .map(|i| i.history_in.len())
        .max()
        .unwrap_or(0);
    let mut sum = vec![0u64; longest];
    for i in &app.instances {
        let h = if inbound {
            &i.history_in
        } else {
            &i.history_out
        };
        let skip = longest - h.len();
        for (k, v) in h.iter().enumerate() {
            sum[skip + k] += v;
        }
    }
    sum
}

fn render_sparklines(app: &App, area: Rect, buf: &mut Buffer) {
    if area.height < 4 {
        return;
    }
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    for (inbound, area, style) in [(true, top, theme::accent()), (false, bottom, theme::ok())] {
        let history = fleet_history(app, inbound);
        // The newest samples that fit, right-aligned like a strip chart.
        let width = area.width.saturating_sub(2) as usize;
        let shown = &history[history.len().saturating_sub(width)..];
        // A fold from 0.0: an empty float sum is -0.0, which would print "-0.0".
        let now = app
            .instances
            .iter()
            .map(|i| if inbound { i.rate_in } else { i.rate_out })
            .fold(0.0, |a, b| a + b);
        let peak = shown.iter().copied().max().unwrap_or(0);
        let title = format!(
            "Messages {} /s: {} (peak {peak})",
            if inbound { "in" } else { "out" },
            rate(now)
        );
        Sparkline::default()
            .block(block(title))
            .data(shown)
            .style(style)
            .render(area, buf);
    }
}
