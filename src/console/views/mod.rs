//! Drawing: `impl Widget for &App` lays out the tab bar, the current view, the
//! status line and any overlay. One file per tab; nothing here mutates the app or
//! reads a clock, so any `Backend` (a terminal or `TestBackend`) draws the same.
//!
//! Colours are the terminal's own palette (green/yellow/red/cyan) plus bold, dim and
//! reversed — no fixed backgrounds — so the console reads on dark and light themes.

pub(crate) mod awareness;
pub(crate) mod charts;
mod confirm;
pub(crate) mod documents;
pub(crate) mod events;
pub(crate) mod format;
pub(crate) mod help;
pub(crate) mod maintenance;
pub(crate) mod overview;
pub(crate) mod payload;
pub(crate) mod sessions;
pub(crate) mod traffic;
pub(crate) mod widgets;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs, Widget};

use super::app::{App, Overlay, View};
use super::model::SourceState;
use super::rows;
use super::update::{completions, human_ms};

/// Styles shared by the views.
mod theme {
    use ratatui::style::{Color, Modifier, Style};

    pub(crate) fn header() -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
    pub(crate) fn selected() -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }
    pub(crate) fn ok() -> Style {
        Style::new().fg(Color::Green)
    }
    pub(crate) fn warn() -> Style {
        Style::new().fg(Color::Yellow)
    }
    pub(crate) fn bad() -> Style {
        Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
    }
    pub(crate) fn dim() -> Style {
        Style::new().add_modifier(Modifier::DIM)
    }
    pub(crate) fn accent() -> Style {
        Style::new().fg(Color::Cyan)
    }
}

/// Style of a source's state.
fn source_style(state: &SourceState) -> Style {
    match state {
        SourceState::Off => theme::dim(),
        SourceState::Up { .. } => theme::ok(),
        SourceState::Down { .. } => theme::bad(),
    }
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let [tabs, header, body, status] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Min(0),
            Constraint::Length(1),
        ])
        .areas(area);
        render_tabs(self, tabs, buf);
        render_header(self, header, buf);
        match self.view {
            View::Overview => overview::render(self, body, buf),
            View::Documents => documents::render(self, body, buf),
            View::Sessions => sessions::render(self, body, buf),
            View::Awareness => awareness::render(self, body, buf),
            View::Traffic => traffic::render(self, body, buf),
            View::Maintenance => maintenance::render(self, body, buf),
            View::Events => events::render(self, body, buf),
            View::Charts => charts::render(self, body, buf),
        }
        render_status(self, status, buf);
        match &self.overlay {
            Overlay::None => {}
            Overlay::Help => help::render(self, body, buf),
            Overlay::Confirm(action) => confirm::render(action, body, buf),
            Overlay::Payload(sample) => payload::render(self, sample, body, buf),
        }
    }
}

fn render_tabs(app: &App, area: Rect, buf: &mut Buffer) {
    let narrow = area.width < 100;
    let titles: Vec<Line> = View::ALL
        .iter()
        .map(|v| {
            let title = if narrow { v.short_title() } else { v.title() };
            Line::from(format!("{} {title}", v.index() + 1))
        })
        .collect();
    let highlight = theme::selected().add_modifier(Modifier::BOLD);
    // Below 100 columns the name goes, the tabs lose their padding and some titles
    // shorten, so all eight fit on 80.
    if narrow {
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

/// The context line under the tabs: the fleet (size, who is up, versions), the
/// shared backends, and the fleet's live totals.
fn render_header(app: &App, area: Rect, buf: &mut Buffer) {
    let fleet = rows::fleet(app);
    let sum = rows::summary(&fleet);
    let mut spans: Vec<Span> = Vec::new();
    let style = if sum.members > 0 && sum.running == sum.members {
        theme::ok()
    } else if sum.running == 0 {
        theme::bad()
    } else {
        theme::warn()
    };
    let mut parts = vec![format!("{} up", sum.running)];
    for (n, what) in [
        (sum.offline, "offline"),
        (sum.gone, "gone"),
        (sum.unreachable, "down"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    spans.push(Span::styled(
        format!("fleet {} ({})", sum.members, parts.join(", ")),
        style,
    ));
    if !sum.versions.is_empty() {
        let versions = sum.versions.join(",");
        let style = if sum.versions.len() > 1 {
            theme::warn()
        } else {
            theme::dim()
        };
        spans.push(Span::raw(" · "));
        spans.push(Span::styled(format!("v{versions}"), style));
    }
    spans.push(Span::raw(" · "));
    spans.push(Span::styled(
        format!("pg {}", app.database.state.label()),
        source_style(&app.database.state),
    ));
    spans.push(Span::raw(" · "));
    spans.push(Span::styled(
        format!("redis {}", app.redis.state.label()),
        source_style(&app.redis.state),
    ));
    if let Some(conns) = sum.connections {
        spans.push(Span::raw(format!(" · {conns} conns")));
    }
    if let (Some(i), Some(o), true) = (sum.rate_in, sum.rate_out, area.width >= 100) {
        spans.push(Span::raw(format!(
            " · {}/{} msg/s",
            format::rate(i),
            format::rate(o)
        )));
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
}

fn render_status(app: &App, area: Rect, buf: &mut Buffer) {
    let mut spans: Vec<Span> = Vec::new();
    if let Some(typed) = &app.command {
        spans.push(Span::styled(":", theme::accent()));
        spans.push(Span::raw(typed.clone()));
        spans.push(Span::styled("▏", theme::accent()));
        let candidates = completions(typed);
        let hint = if candidates.is_empty() {
            "  no such command · Esc".to_owned()
        } else {
            format!("  {} · Tab completes", candidates.join(" "))
        };
        spans.push(Span::styled(hint, theme::dim()));
        Paragraph::new(Line::from(spans)).render(area, buf);
        return;
    }
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
    } else if !app.has_credential {
        spans.push(Span::styled(" no credential", theme::warn()));
    }
    if !app.filter().is_empty() {
        spans.push(Span::styled(format!(" /{}", app.filter()), theme::accent()));
    }
    match &app.notice {
        Some((text, true)) => spans.push(Span::styled(format!(" │ {text}"), theme::bad())),
        Some((text, false)) => spans.push(Span::raw(format!(" │ {text}"))),
        None => spans.push(Span::styled(" │ ? help  : command  q quit", theme::dim())),
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
}
/// A bordered block with a bold title.
pub(crate) fn block(title: String) -> ratatui::widgets::Block<'static> {
    ratatui::widgets::Block::bordered().title(Span::styled(title, theme::header()))
}

/// The `(no data: <why>)` line for empty tables.
fn empty_note(text: &str) -> Paragraph<'static> {
    Paragraph::new(Line::from(text.to_owned()).dim())
}

/// The selected row index for a table of `len` rows.
pub(crate) fn selection(app: &App, view: View, len: usize) -> Option<usize> {
    (len > 0).then(|| app.selected[view.index()].min(len - 1))
}
