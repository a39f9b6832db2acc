//! View 2, Documents: id, subscribers, fields, size, last change, instances; `s`
//! sorts, `/` filters, Enter drills into one document (fields as pretty JSON,
//! vector clock, subscribers, awareness, recent deltas, snapshots), Esc goes back.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Widget, Wrap};

use super::format::{ago, bytes, clock, count, date_time, preview};
use super::widgets::{as_columns, render_empty, render_selectable, sorted_headers};
use super::{block, theme};
use crate::console::app::{App, View};
use crate::console::model::{DocumentDetail, SourceState};
use crate::console::rows::{self, DocumentRow};

pub(crate) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    match &app.detail {
        Some(id) => render_detail(app, id, area, buf),
        None => render_list(app, area, buf),
    }
}

fn render_list(app: &App, area: Rect, buf: &mut Buffer) {
    let rows = rows::documents(app);
    // The table's size is a planner estimate; the list is one page of it.
    let total = if app.database.state.is_up() {
        format!(" · ≈{} stored", count(app.database.documents_total))
    } else {
        String::new()
    };
    let sort = app.sort(View::Documents).label(View::Documents);
    let title = format!(
        "Documents {}{total} · sort {} (s/S) · Enter opens",
        rows.len(),
        sort.as_deref().unwrap_or("-")
    );
    if rows.is_empty() {
        render_empty(&why_empty(app), title, area, buf);
        return;
    }
    let wide = area.width >= 120;
    let table_rows: Vec<Row> = rows.iter().map(|r| document_row(app, r, wide)).collect();
    let columns = list_columns(wide);
    let headers = sorted_headers(&columns, sort.as_deref());
    render_selectable(
        app,
        View::Documents,
        title,
        &as_columns(&headers),
        table_rows,
        area,
        buf,
    );
}

/// Why the list is empty: the filter, or what the database's state leaves out.
fn why_empty(app: &App) -> String {
    if !app.filter().is_empty() {
        return " no document matches the filter".to_owned();
    }
    match &app.database.state {
        SourceState::Up { .. } => " no documents stored and none live".to_owned(),
        SourceState::Off => {
            " no live documents (PostgreSQL not configured: stored ones are not listed)".to_owned()
        }
        SourceState::Down { error } => {
            format!(" no live documents; PostgreSQL unreachable: {error}")
        }
    }
}

/// One document's row, in [`list_columns`] order.
fn document_row(app: &App, r: &DocumentRow, wide: bool) -> Row<'static> {
    let subs = if r.subscribers > 0 {
        Span::styled(r.subscribers.to_string(), theme::ok())
    } else {
        Span::styled("0", theme::dim())
    };
    let mut cells = vec![Span::raw(r.id.clone()), subs];
    if wide {
        cells.push(Span::raw(r.awareness_subscribers.to_string()));
    }
    cells.push(Span::raw(r.fields.to_string()));
    cells.push(Span::raw(bytes(r.size_bytes)));
    if wide {
        cells.push(Span::raw(r.version.map_or("-".into(), |v| v.to_string())));
    }
    cells.push(Span::raw(ago(app.now_ms, r.last_change_ms)));
    cells.push(Span::raw(if r.instances.is_empty() {
        "-".to_owned()
    } else {
        r.instances.join(",")
    }));
    Row::new(cells)
}

/// The list's columns; a narrow terminal drops the ones a wide one adds.
fn list_columns(wide: bool) -> Vec<(&'static str, Constraint)> {
    if wide {
        vec![
            ("Document", Constraint::Min(20)),
            ("Subs", Constraint::Length(5)),
            ("Aware", Constraint::Length(5)),
            ("Fields", Constraint::Length(6)),
            ("Size", Constraint::Length(7)),
            ("Version", Constraint::Length(8)),
            ("Last change", Constraint::Length(12)),
            ("Instance", Constraint::Length(40)),
        ]
    } else {
        vec![
            ("Document", Constraint::Min(20)),
            ("Subs", Constraint::Length(5)),
            ("Fields", Constraint::Length(6)),
            ("Size", Constraint::Length(7)),
            ("Last change", Constraint::Length(12)),
            ("Instance", Constraint::Length(17)),
        ]
    }
}

fn render_detail(app: &App, id: &str, area: Rect, buf: &mut Buffer) {
    let title = format!("Document {id} · Esc back · j/k scroll");
    let Some(detail) = &app.detail_data else {
        render_empty(" loading…", title, area, buf);
        return;
    };
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(area);
    let [fields, side] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(top);
    let pretty = serde_json::to_string_pretty(&detail.fields).unwrap_or_default();
    Paragraph::new(pretty)
        .scroll((app.detail_scroll, 0))
        .block(block(format!("{title} · fields")))
        .render(fields, buf);
    Paragraph::new(side_lines(detail))
        .wrap(Wrap { trim: true })
        .block(block("Clock · subscribers · awareness".into()))
        .render(side, buf);
    let [deltas, snapshots] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(bottom);
    let delta_lines: Vec<Line> = if detail.deltas.is_empty() {
        vec![Line::styled("none stored", theme::dim())]
    } else {
        detail
            .deltas
            .iter()
            .map(|d| {
                let value = d.value.as_ref().map_or("-".into(), |v| v.to_string());
                Line::from(format!(
                    "{} {} {} {}={}",
                    clock(d.at_ms),
                    d.operation,
                    preview(&d.client_id, 12),
                    d.field,
                    preview(&value, 24)
                ))
            })
            .collect()
    };
    Paragraph::new(delta_lines)
        .block(block(format!("Recent deltas ({})", detail.deltas.len())))
        .render(deltas, buf);
    let snapshot_lines: Vec<Line> = if detail.snapshots.is_empty() {
        vec![Line::styled("none", theme::dim())]
    } else {
        detail
            .snapshots
            .iter()
            .map(|s| {
                Line::from(format!(
                    "{} {} {}",
                    date_time(s.created_at_ms),
                    bytes(s.size_bytes.max(0) as u64),
                    preview(&s.id, 8)
                ))
            })
            .collect()
    };
    Paragraph::new(snapshot_lines)
        .block(block(format!("Snapshots ({})", detail.snapshots.len())))
        .render(snapshots, buf);
}

fn side_lines(detail: &DocumentDetail) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    lines.push(Line::styled("Vector clock", theme::header()));
    if detail.clock.is_empty() {
        lines.push(Line::styled(" empty", theme::dim()));
    }
    for (writer, value) in &detail.clock {
        lines.push(Line::from(format!(" {} = {value}", preview(writer, 24))));
    }
    lines.push(Line::styled(
        format!("Subscribers ({})", detail.subscribers.len()),
        theme::header(),
    ));
    for s in &detail.subscribers {
        lines.push(Line::from(format!(" {s}")));
    }
    lines.push(Line::styled(
        format!("Awareness ({})", detail.awareness.len()),
        theme::header(),
    ));
    for a in &detail.awareness {
        lines.push(Line::from(vec![
            Span::raw(format!(" {} ", preview(&a.client_id, 12))),
            Span::styled(preview(&a.state.to_string(), 30), theme::dim()),
        ]));
    }
    if !detail.loaded_on.is_empty() {
        lines.push(Line::from(format!(
            "Loaded on {}",
            detail.loaded_on.join(", ")
        )));
    }
    for p in &detail.problems {
        lines.push(Line::styled(p.clone(), theme::bad()));
    }
    lines
}
