//! View 7, Events: the notable events of every instance (storage degraded and
//! recovered, Redis lost and back, peers online/offline/gone, refusals summarised,
//! failed maintenance, shutdowns), newest first across the fleet; `/` filters.
//! Events stay listed after their instance has gone.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::Span;
use ratatui::widgets::Row;

use super::format::{clock, date_time, preview};
use super::theme;
use super::widgets::{render_empty, render_selectable};
use crate::admin_api::Severity;
use crate::console::app::{App, FleetEvent, View};
use crate::console::rows;

pub fn severity_style(e: &FleetEvent) -> Style {
    match e.event.severity {
        Severity::Info => Style::new(),
        Severity::Warn => theme::warn(),
        Severity::Error => theme::bad(),
    }
}

pub fn render(app: &App, area: Rect, buf: &mut Buffer) {
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
    let wide = area.width >= 120;
    let message_width = usize::from(area.width.saturating_sub(if wide { 64 } else { 48 }));
    let rows: Vec<Row> = events
        .iter()
        .map(|e| {
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
                Span::raw(preview(&e.instance, if wide { 20 } else { 10 })),
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
        ("Instance", Constraint::Length(if wide { 20 } else { 10 })),
        ("Level", Constraint::Length(5)),
        ("Kind", Constraint::Length(18)),
        ("Message", Constraint::Min(10)),
    ];
    render_selectable(app, View::Events, title, &columns, rows, area, buf);
}
