//! View 7, Events: the notable events of every instance (storage degraded and
//! recovered, Redis lost and back, peers online/offline/gone, refusals summarised,
//! failed maintenance, shutdowns), newest first across the fleet; `/` filters.
//! Events stay listed after their instance has gone.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Widget, Wrap};

use super::format::{clock, date_time, preview};
use super::theme;
use super::widgets::{render_empty, render_selectable};
use crate::admin_api::Severity;
use crate::console::app::{App, FleetEvent, View};
use crate::console::rows;

pub(crate) fn severity_style(e: &FleetEvent) -> Style {
    match e.event.severity {
        Severity::Info => Style::new(),
        Severity::Warn => theme::warn(),
        Severity::Error => theme::bad(),
    }
}

pub(crate) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let events = rows::events(app);
    let title = format!("Events ({}) · newest first across the fleet", events.len());
    if events.is_empty() {
        let why = if app.filter().is_empty() {
            " no events reported by any instance"
        } else {
            " no event matches the filter"
        };
        render_empty(why, title, area, buf);
        return;
    }
    // The selected event in full, wrapped: the table cuts long messages.
    let [area, detail] = Layout::vertical([Constraint::Min(0), Constraint::Length(4)]).areas(area);
    if let Some(e) = super::selection(app, View::Events, events.len()).and_then(|i| events.get(i)) {
        Paragraph::new(Line::styled(e.event.message.clone(), severity_style(e)))
            .wrap(Wrap { trim: false })
            .block(super::block(format!(
                "{} · {} · {}",
                e.event.kind.name(),
                e.instance,
                date_time(e.event.at_ms)
            )))
            .render(detail, buf);
    }
    let wide = area.width >= 120;
    let message_width = usize::from(area.width.saturating_sub(if wide { 64 } else { 50 }));
    let names = rows::names_by_id(&rows::fleet(app));
    let rows: Vec<Row> = events
        .iter()
        .map(|e| {
            let name = names.get(&e.instance_id).unwrap_or(&e.instance);
            let when = if wide {
                date_time(e.event.at_ms) + &clock(e.event.at_ms)[5..]
            } else {
                clock(e.event.at_ms)
            };
            let count = if e.event.count > 1 {
                format!(" ×{}", e.event.count)
            } else {
                String::new()
            };
            Row::new(vec![
                Span::raw(when),
                Span::raw(preview(name, if wide { 20 } else { 12 })),
                Span::styled(
                    format!("{:?}", e.event.severity).to_lowercase(),
                    severity_style(e),
                ),
                Span::raw(e.event.kind.name()),
                Span::styled(
                    preview(
                        &format!("{}{count}", e.event.message),
                        message_width.max(10),
                    ),
                    severity_style(e),
                ),
            ])
        })
        .collect();
    let columns: Vec<(&str, Constraint)> = vec![
        ("Time", Constraint::Length(if wide { 14 } else { 8 })),
        ("Instance", Constraint::Length(if wide { 20 } else { 12 })),
        ("Level", Constraint::Length(5)),
        ("Kind", Constraint::Length(18)),
        ("Message", Constraint::Min(10)),
    ];
    render_selectable(app, View::Events, title, &columns, rows, area, buf);
}
