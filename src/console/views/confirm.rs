//! The confirmation dialog every operator action goes through: it names what will
//! happen and where, and waits for `y` or `n`.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Widget, Wrap};

use super::{block, theme};
use crate::console::action::OperatorAction;

pub fn render(action: &OperatorAction, area: Rect, buf: &mut Buffer) {
    let width = 60.min(area.width);
    let height = 9.min(area.height);
    let [area] = Layout::vertical([Constraint::Length(height)])
        .flex(Flex::Center)
        .areas(area);
    let [area] = Layout::horizontal([Constraint::Length(width)])
        .flex(Flex::Center)
        .areas(area);
    Clear.render(area, buf);
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
