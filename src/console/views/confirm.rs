//! The confirmation dialog every operator action goes through: it names what will
//! happen and where, and waits for `y` or `n`.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};

use super::widgets::popup;
use super::{block, theme};
use crate::console::action::OperatorAction;

pub(crate) fn render(action: &OperatorAction, area: Rect, buf: &mut Buffer) {
    let area = popup(60, 9, area, buf);
    let lines = vec![
        Line::from(action.describe()),
        Line::from(""),
        Line::from(vec![
            Span::styled(" y ", theme::bad().add_modifier(Modifier::REVERSED)),
            Span::raw(" do it    "),
            Span::styled(" n ", theme::selected()),
            Span::raw(" cancel (Esc)"),
        ]),
    ];
    Paragraph::new(lines)
        .wrap(Wrap { trim: true })
        .block(block(action.title().to_owned()).border_style(theme::warn()))
        .render(area, buf);
}
