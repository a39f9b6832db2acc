//! The `?` overlay: every key, and what is enabled (actions, pause).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use super::widgets::popup;
use super::{block, theme};
use crate::console::app::App;

/// Every key binding, as shown (also the README's table).
pub const KEYS: [(&str, &str); 17] = [
    ("1-6 Tab S-Tab", "switch view"),
    ("j/k ↓/↑", "move (scroll in a document)"),
    ("PgDn/PgUp g/G", "page, first, last"),
    ("Enter", "open the selected document"),
    ("Esc", "back / clear the filter"),
    ("/", "filter the view (Enter keeps, Esc clears)"),
    ("s", "sort (documents, sessions)"),
    ("p", "pause / resume updates"),
    ("+ / -", "refresh faster / slower"),
    ("?", "this help"),
    ("q Ctrl-C", "quit"),
    ("c", "run a cleanup now *"),
    ("a", "prune awareness now *"),
    ("d", "disconnect session / delete document *"),
    ("y / n", "confirm / cancel a dialog"),
    ("", ""),
    ("*", "needs --allow-actions; always confirmed"),
];

pub fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let area = popup(62, KEYS.len() as u16 + 3, area, buf);
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::styled(format!(" {key:<15}"), theme::accent()),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::styled(
        if app.allow_actions {
            " actions enabled"
        } else {
            " read-only (no --allow-actions)"
        },
        theme::dim(),
    ));
    Paragraph::new(lines)
        .block(block("Keys · ? or Esc closes".into()))
        .render(area, buf);
}
