//! View 6, Maintenance: each job's schedule, next run and last outcome, and the run
//! history with counts and errors. `c` runs a cleanup, `a` prunes awareness (with
//! `--allow-actions`, after confirmation).

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Widget, Wrap};

use super::format::{ago, date_time, preview, until};
use super::widgets::{render_empty, render_selectable, render_table};
use super::{block, theme};
use crate::console::app::{App, View};
use crate::console::model::RunInfo;
use crate::console::rows::{self, short_instance};

pub(crate) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let jobs = rows::jobs(app);
    let runs = rows::runs(app);
    let jobs_height = (jobs.len().max(1) as u16 + 3).min(area.height / 2);
    let [jobs_area, runs_area] =
        Layout::vertical([Constraint::Length(jobs_height), Constraint::Min(0)]).areas(area);
    let actions = if app.actions_unavailable().is_none() {
        " · c cleanup · a prune awareness"
    } else {
        ""
    };
    let title = format!("Jobs ({}){actions}", jobs.len());
    if jobs.is_empty() {
        let why = if app.instances.iter().any(|i| i.report.state.is_up()) {
            " no jobs configured on the instances that answer"
        } else {
            " no instance answers: its scheduler is unknown"
        };
        render_empty(why, title, jobs_area, buf);
    } else {
        let rows: Vec<Row> = jobs
            .iter()
            .map(|j| {
                let (last, style) = match rows::last_run(&runs, &j.name) {
                    Some(r) => outcome(app, r),
                    None => ("never".into(), theme::dim()),
                };
                Row::new(vec![
                    Span::raw(j.name.clone()),
                    Span::raw(j.schedule.clone()),
                    Span::raw(short_instance(&j.instance)),
                    Span::raw(if j.enabled {
                        until(app.now_ms, j.next_run_ms)
                    } else {
                        "disabled".into()
                    }),
                    Span::styled(last, style),
                ])
            })
            .collect();
        let columns = [
            ("Job", Constraint::Length(16)),
            ("Schedule", Constraint::Length(14)),
            ("Instance", Constraint::Length(9)),
            ("Next run", Constraint::Length(10)),
            ("Last run", Constraint::Min(10)),
        ];
        render_table(&columns, rows, block(title), jobs_area, buf);
    }
    render_runs(app, &runs, runs_area, buf);
}

fn outcome(app: &App, run: &RunInfo) -> (String, ratatui::style::Style) {
    let when = ago(app.now_ms, run.started_at_ms);
    match run.outcome.as_str() {
        "ok" => (format!("ok {when}"), theme::ok()),
        "running" => (format!("running since {when}"), theme::warn()),
        other => (format!("{other} {when}"), theme::bad()),
    }
}

fn render_runs(app: &App, runs: &[RunInfo], area: Rect, buf: &mut Buffer) {
    let title = format!("Runs ({})", runs.len());
    if runs.is_empty() {
        render_empty(" no runs recorded", title, area, buf);
        return;
    }
    // The selected run's counts or error in full, wrapped: the table cuts them.
    let [table_area, detail_area] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(4)]).areas(area);
    let area = table_area;
    if let Some(r) = super::selection(app, View::Maintenance, runs.len()).and_then(|i| runs.get(i))
    {
        let (text, style) = match &r.error {
            Some(e) => (e.clone(), theme::bad()),
            None => (counts(&r.counts), ratatui::style::Style::new()),
        };
        Paragraph::new(Line::styled(text, style))
            .wrap(Wrap { trim: false })
            .block(block(format!(
                "Run #{} {} on {}",
                r.id,
                r.job,
                short_instance(&r.instance_id)
            )))
            .render(detail_area, buf);
    }
    let rows: Vec<Row> = runs
        .iter()
        .map(|r| {
            let (text, style) = match r.outcome.as_str() {
                "ok" => ("ok", theme::ok()),
                "running" => ("running", theme::warn()),
                // Stopped by a shutdown (docs/operations.md §6): not a failure.
                "interrupted" => ("interrupted", theme::warn()),
                _ => ("failed", theme::bad()),
            };
            let detail = match &r.error {
                Some(e) => e.clone(),
                None => counts(&r.counts),
            };
            Row::new(vec![
                Span::raw(r.id.to_string()),
                Span::raw(r.job.clone()),
                Span::raw(short_instance(&r.instance_id)),
                Span::raw(date_time(r.started_at_ms)),
                Span::raw(r.duration_ms().map_or("-".into(), |d| format!("{d}ms"))),
                Span::styled(text, style),
                Span::raw(preview(
                    &detail,
                    usize::from(area.width.saturating_sub(68)).max(20),
                )),
            ])
        })
        .collect();
    let columns = [
        ("#", Constraint::Length(4)),
        ("Job", Constraint::Length(15)),
        ("Instance", Constraint::Length(8)),
        ("Started", Constraint::Length(11)),
        ("Took", Constraint::Length(7)),
        ("Outcome", Constraint::Length(7)),
        ("Counts / error", Constraint::Min(10)),
    ];
    render_selectable(app, View::Maintenance, title, &columns, rows, area, buf);
}

/// `{"sessionsDeleted":3,"deltasDeleted":0}` as `sessionsDeleted 3 deltasDeleted 0`.
fn counts(value: &serde_json::Value) -> String {
    match value.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(" "),
        _ => "-".into(),
    }
}
