//! Drawing: `impl Widget for &App` lays out the tab bar, the current view, the
//! status line and any overlay. One file per tab; nothing here mutates the app or
//! reads a clock, so any `Backend` (a terminal or `TestBackend`) draws the same.
//!
//! Colours are the terminal's own palette (green/yellow/red/cyan) plus bold, dim and
//! reversed — no fixed backgrounds — so the console reads on dark and light themes.

pub mod awareness;
pub mod confirm;
pub mod documents;
pub mod format;
pub mod help;
pub mod maintenance;
pub mod overview;
pub mod sessions;
pub mod traffic;
pub mod widgets;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs, Widget};

use super::app::{App, Overlay, View};
use super::model::SourceState;
use super::update::human_ms;

/// Styles shared by the views.
pub mod theme {
    use ratatui::style::{Color, Modifier, Style};

    pub fn header() -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
    pub fn selected() -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }
    pub fn ok() -> Style {
        Style::new().fg(Color::Green)
    }
    pub fn warn() -> Style {
        Style::new().fg(Color::Yellow)
    }
    pub fn bad() -> Style {
        Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
    }
    pub fn dim() -> Style {
        Style::new().add_modifier(Modifier::DIM)
    }
    pub fn accent() -> Style {
        Style::new().fg(Color::Cyan)
    }
}

/// Style of a source's state.
pub fn source_style(state: &SourceState) -> Style {
    match state {
        SourceState::Off => theme::dim(),
        SourceState::Up { .. } => theme::ok(),
        SourceState::Down { .. } => theme::bad(),
    }
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let [tabs, body, status] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(0),
            Constraint::Length(1),
        ])
        .areas(area);
        render_tabs(self, tabs, buf);
        match self.view {
            View::Overview => overview::render(self, body, buf),
            View::Documents => documents::render(self, body, buf),
            View::Sessions => sessions::render(self, body, buf),
            View::Awareness => awareness::render(self, body, buf),
            View::Traffic => traffic::render(self, body, buf),
            View::Maintenance => maintenance::render(self, body, buf),
        }
        render_status(self, status, buf);
        match &self.overlay {
            Overlay::None => {}
            Overlay::Help => help::render(self, body, buf),
            Overlay::Confirm(action) => confirm::render(action, body, buf),
        }
    }
}

fn render_tabs(app: &App, area: Rect, buf: &mut Buffer) {
    let titles: Vec<Line> = View::ALL
        .iter()
        .map(|v| Line::from(format!("{} {}", v.index() + 1, v.title())))
        .collect();
    let highlight = theme::selected().add_modifier(Modifier::BOLD);
    // Below 100 columns the name goes and the tabs lose their padding, so all six
    // full titles fit on 80.
    if area.width < 100 {
        Tabs::new(titles)
            .select(app.view.index())
            .highlight_style(highlight)
            .divider("│")
            .padding("", "")
            .render(area, buf);
        return;
    }
    let [name, tabs] = Layout::horizontal([Constraint::Length(16), Constraint::Min(0)]).areas(area);
    Paragraph::new(Line::from(vec![
        Span::styled("synckit console", theme::header()),
        Span::raw(" "),
    ]))
    .render(name, buf);
    Tabs::new(titles)
        .select(app.view.index())
        .highlight_style(highlight)
        .divider("│")
        .render(tabs, buf);
}

fn render_status(app: &App, area: Rect, buf: &mut Buffer) {
    let mut spans: Vec<Span> = Vec::new();
    if app.editing_filter {
        spans.push(Span::styled("/", theme::accent()));
        spans.push(Span::raw(app.filter().to_owned()));
        spans.push(Span::styled("▏", theme::accent()));
        spans.push(Span::styled("  Enter keep · Esc clear", theme::dim()));
        Paragraph::new(Line::from(spans)).render(area, buf);
        return;
    }
    let up = app
        .instances
        .iter()
        .filter(|i| i.report.state.is_up())
        .count();
    let instances_style = if up == app.instances.len() && up > 0 {
        theme::ok()
    } else if up == 0 {
        theme::bad()
    } else {
        theme::warn()
    };
    spans.push(Span::styled(
        format!("api {up}/{}", app.instances.len()),
        instances_style,
    ));
    spans.push(Span::raw(" "));
    spans.push(Span::styled(
        format!("pg {}", app.database.state.label()),
        source_style(&app.database.state),
    ));
    spans.push(Span::raw(" "));
    spans.push(Span::styled(
        format!("redis {}", app.redis.state.label()),
        source_style(&app.redis.state),
    ));
    spans.push(Span::raw(format!(" │ {}", human_ms(app.refresh_ms))));
    if app.paused {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(
            "PAUSED",
            theme::warn().add_modifier(Modifier::BOLD),
        ));
    }
    if !app.allow_actions {
        spans.push(Span::styled(" ro", theme::dim()));
    }
    if !app.filter().is_empty() {
        spans.push(Span::styled(format!(" /{}", app.filter()), theme::accent()));
    }
    match &app.notice {
        Some((text, true)) => spans.push(Span::styled(format!(" │ {text}"), theme::bad())),
        Some((text, false)) => spans.push(Span::raw(format!(" │ {text}"))),
        None => spans.push(Span::styled(" │ ? help  q quit", theme::dim())),
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
}

/// A bordered block with a bold title.
pub fn block(title: String) -> ratatui::widgets::Block<'static> {
    ratatui::widgets::Block::bordered().title(Span::styled(title, theme::header()))
}

/// "(no data: <why>)" line for empty tables.
pub fn empty_note(text: &str) -> Paragraph<'static> {
    Paragraph::new(Line::from(text.to_owned()).dim())
}

/// The selected row index for a table of `len` rows.
pub fn selection(app: &App, view: View, len: usize) -> Option<usize> {
    (len > 0).then(|| app.selected[view.index()].min(len - 1))
}
