//! The `?` overlay: every key, and what is enabled (actions, pause).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use super::widgets::popup;
use super::{block, theme};
use crate::console::app::App;

/// Every key binding, as shown (also the README's table).
pub(crate) const KEYS: [(&str, &str); 17] = [
    ("1-8 Tab S-Tab", "switch view"),
    (": Tab Enter", "command line (:docs, :events, :cleanup…)"),
    ("j/k ↓/↑", "move (scroll in a document)"),
    ("PgDn/PgUp g/G", "page, first, last"),
    ("Enter", "open the document / show a message"),
    ("Esc", "back / clear the filter"),
    ("/", "filter the view (Enter keeps, Esc clears)"),
    ("s / S", "next sort column / reverse it"),
    ("p", "pause / resume updates"),
    ("+ / -", "refresh faster / slower"),
    ("?", "this help"),
    ("q Ctrl-C", "quit"),
    ("c", "run a cleanup now *"),
    ("a", "prune awareness now *"),
    ("d", "disconnect session / delete document *"),
    ("y / n", "confirm / cancel a dialog"),
    ("*", "--allow-actions + admin credential; confirmed"),
];

pub(crate) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let area = popup(64, KEYS.len() as u16 + 3, area, buf);
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
        match app.actions_unavailable() {
            None => " actions enabled".to_owned(),
            Some(why) => format!(" {why}"),
        },
        theme::dim(),
    ));
    Paragraph::new(lines)
        .wrap(ratatui::widgets::Wrap { trim: false })
        .block(block("Keys · ? or Esc closes".into()))
        .render(area, buf);
}
