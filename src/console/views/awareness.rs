//! View 4, Awareness: per document, each client with a preview of its state, its
//! clock and the time left before it expires.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::Row;

use super::format::{preview, span};
use super::theme;
use super::widgets::{render_empty, render_selectable};
use crate::console::app::{App, View};
use crate::console::rows;

pub(crate) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let rows = rows::awareness(app);
    let documents = {
        let mut ids: Vec<&str> = rows.iter().map(|a| a.document_id.as_str()).collect();
        ids.dedup();
        ids.len()
    };
    let title = format!("Awareness: {} clients in {documents} documents", rows.len());
    if rows.is_empty() {
        render_empty(" no presence", title, area, buf);
        return;
    }
    let state_width = usize::from(area.width.saturating_sub(52)).max(10);
    let mut previous_doc = "";
    let table_rows: Vec<Row> = rows
        .iter()
        .map(|a| {
            // The document is named once per group, like a tree.
            let doc = if a.document_id == previous_doc {
                String::new()
            } else {
                a.document_id.clone()
            };
            previous_doc = &a.document_id;
            let (expires, style) = match a.expires_in_ms {
                Some(ms) if ms < 5_000 => (span(ms), theme::warn()),
                Some(ms) => (span(ms), theme::ok()),
                None => ("-".into(), theme::dim()),
            };
            Row::new(vec![
                Span::raw(doc),
                Span::raw(preview(&a.client_id, 14)),
                Span::raw(a.clock.to_string()),
                Span::styled(expires, style),
                Span::styled(preview(&a.state.to_string(), state_width), theme::dim()),
            ])
        })
        .collect();
    let columns = [
        ("Document", Constraint::Length(18)),
        ("Client", Constraint::Length(14)),
        ("Clock", Constraint::Length(6)),
        ("Expires", Constraint::Length(7)),
        ("State", Constraint::Min(10)),
    ];
    render_selectable(app, View::Awareness, title, &columns, table_rows, area, buf);
}
