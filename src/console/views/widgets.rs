//! Pieces every view draws the same way: a bordered table with a bold header row
//! and the selected row highlighted, the "(no data)" note in its block, and a
//! cleared box centred over the view for the overlays.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::widgets::{Block, Clear, Row, StatefulWidget, Table, TableState, Widget};

use super::{block, empty_note, selection, theme};
use crate::console::app::{App, View};

/// A table's columns: each header with its width.
pub(crate) type Columns<'a> = [(&'a str, Constraint)];

fn table<'a>(columns: &Columns<'_>, rows: Vec<Row<'a>>) -> Table<'a> {
    Table::new(rows, columns.iter().map(|(_, width)| *width))
        .header(Row::new(columns.iter().map(|(title, _)| title.to_string())).style(theme::header()))
}

/// `columns` with the sorted one's header marked with its direction (`Size▼`).
pub(crate) fn sorted_headers(
    columns: &Columns<'_>,
    sorted: Option<&str>,
) -> Vec<(String, Constraint)> {
    columns
        .iter()
        .map(|(title, width)| {
            let marked = sorted
                .filter(|s| s.trim_end_matches(['▼', '▲']) == *title)
                .map_or_else(|| title.to_string(), str::to_owned);
            (marked, *width)
        })
        .collect()
}

/// Borrow owned headers as [`Columns`].
pub(crate) fn as_columns(headers: &[(String, Constraint)]) -> Vec<(&str, Constraint)> {
    headers.iter().map(|(t, w)| (t.as_str(), *w)).collect()
}

/// `text` as an empty-table note inside a block titled `title`.
pub(crate) fn render_empty(text: &str, title: String, area: Rect, buf: &mut Buffer) {
    empty_note(text).block(block(title)).render(area, buf);
}

/// A table without a selection, in `block`.
pub(crate) fn render_table(
    columns: &Columns<'_>,
    rows: Vec<Row>,
    block: Block,
    area: Rect,
    buf: &mut Buffer,
) {
    Widget::render(table(columns, rows).block(block), area, buf);
}

/// A table whose selected row (the one `view` remembers) is highlighted with `>`.
pub(crate) fn render_selectable(
    app: &App,
    view: View,
    title: String,
    columns: &Columns<'_>,
    rows: Vec<Row>,
    area: Rect,
    buf: &mut Buffer,
) {
    let mut state = TableState::new().with_selected(selection(app, view, rows.len()));
    StatefulWidget::render(
        table(columns, rows)
            .block(block(title))
            .row_highlight_style(theme::selected())
            .highlight_symbol(">"),
        area,
        buf,
        &mut state,
    );
}

/// A `width` × `height` box centred in `area` (both clamped to it), cleared.
pub(crate) fn popup(width: u16, height: u16, area: Rect, buf: &mut Buffer) -> Rect {
    let [area] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [area] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(area);
    Clear.render(area, buf);
    area
}
