//! View 5, Traffic: a live, sampled feed of the fleet's pub/sub messages (channel,
//! type, document, size, origin) under per-channel rates. `p` pauses, `/` filters.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Span;
use ratatui::widgets::Row;

use super::format::{bytes, clock, preview, rate};
use super::widgets::{render_empty, render_selectable, render_table};
use super::{block, source_style, theme};
use crate::console::app::{App, View};
use crate::console::model::SourceState;
use crate::console::rows::{self, short_instance};

pub(crate) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let rates_height = (app.redis.rates.len().max(1) as u16 + 3).min(8);
    let [rates, feed] =
        Layout::vertical([Constraint::Length(rates_height), Constraint::Min(0)]).areas(area);
    render_rates(app, rates, buf);
    render_feed(app, feed, buf);
}

fn render_rates(app: &App, area: Rect, buf: &mut Buffer) {
    let title = format!("Pub/sub rates · redis {}", app.redis.state.label());
    if app.redis.rates.is_empty() {
        let why = match &app.redis.state {
            SourceState::Off => {
                " Redis not configured (REDIS_URL): no fleet traffic to sample".to_owned()
            }
            SourceState::Down { error } => format!(" Redis unreachable: {error}"),
            SourceState::Up { .. } => " no pub/sub traffic yet".to_owned(),
        };
        render_empty(&why, title, area, buf);
        return;
    }
    let rows: Vec<Row> = app
        .redis
        .rates
        .iter()
        .map(|r| {
            Row::new(vec![
                r.kind.clone(),
                rate(r.per_second),
                r.total.to_string(),
            ])
        })
        .collect();
    let columns = [
        ("Channel", Constraint::Length(16)),
        ("Msgs/s", Constraint::Length(8)),
        ("Total", Constraint::Min(8)),
    ];
    let block = block(title).border_style(source_style(&app.redis.state));
    render_table(&columns, rows, block, area, buf);
}

fn render_feed(app: &App, area: Rect, buf: &mut Buffer) {
    let samples = rows::traffic(app);
    let title = format!(
        "Sampled messages ({}){}",
        samples.len(),
        if app.paused {
            " · PAUSED (p resumes)"
        } else {
            " · p pauses"
        }
    ) + " · Enter shows the payload";
    if samples.is_empty() {
        render_empty(" nothing sampled", title, area, buf);
        return;
    }
    let wide = area.width >= 120;
    let doc_width = if wide { 40 } else { 20 };
    let origin_width = if wide { 14 } else { 8 };
    let rows: Vec<Row> = samples
        .iter()
        .map(|t| {
            let kind_style = match t.kind.as_str() {
                "delta" => theme::accent(),
                "presence" => theme::warn(),
                _ => theme::ok(),
            };
            Row::new(vec![
                Span::raw(clock(t.at_ms)),
                Span::styled(t.kind.clone(), kind_style),
                Span::raw(preview(t.document.as_deref().unwrap_or("-"), doc_width)),
                Span::raw(bytes(t.size as u64)),
                Span::raw(t.origin.as_deref().map_or("-".into(), |o| {
                    if wide {
                        preview(o, origin_width)
                    } else {
                        short_instance(o)
                    }
                })),
                Span::styled(t.channel.clone(), theme::dim()),
            ])
        })
        .collect();
    let columns = [
        ("Time", Constraint::Length(8)),
        ("Type", Constraint::Length(if wide { 18 } else { 9 })),
        ("Document", Constraint::Length(doc_width as u16)),
        ("Size", Constraint::Length(6)),
        ("Origin", Constraint::Length(origin_width as u16)),
        ("Channel", Constraint::Min(10)),
    ];
    render_selectable(app, View::Traffic, title, &columns, rows, area, buf);
}
