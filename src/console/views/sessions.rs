//! View 3, Sessions: live sessions of every instance and persisted `sessions` rows
//! no instance reported: user, client, instance, remote address, connected since,
//! last seen, subscriptions. `s` sorts, `/` filters, `d` disconnects (with
//! `--allow-actions`).

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::Row;

use super::format::{ago, preview};
use super::theme;
use super::widgets::{as_columns, render_empty, render_selectable, sorted_headers};
use crate::console::app::{App, View};
use crate::console::rows::{self, short_instance};

pub(crate) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let rows = rows::sessions(app);
    let live = rows.iter().filter(|s| s.live).count();
    let sort = app.sort(View::Sessions).label(View::Sessions);
    let title = format!(
        "Sessions {} ({live} live) · sort {} (s/S){}",
        rows.len(),
        sort.as_deref().unwrap_or("-"),
        if app.actions_unavailable().is_none() {
            " · d disconnects"
        } else {
            ""
        }
    );
    if rows.is_empty() {
        render_empty(" no sessions", title, area, buf);
        return;
    }
    let wide = area.width >= 120;
    let client_width = if wide { 28 } else { 8 };
    let table_rows: Vec<Row> = rows
        .iter()
        .map(|s| {
            let seen_style = if s.live { theme::ok() } else { theme::dim() };
            let subs = if s.subscriptions.is_empty() {
                "-".to_owned()
            } else {
                format!("{} {}", s.subscriptions.len(), s.subscriptions.join(","))
            };
            Row::new(vec![
                Span::raw(s.user.clone().unwrap_or_else(|| "(unauth)".into())),
                Span::raw(preview(s.client.as_deref().unwrap_or("-"), client_width)),
                Span::raw(s.instance.as_deref().map_or("-".into(), short_instance)),
                Span::raw(s.remote.clone().unwrap_or_else(|| "-".into())),
                Span::raw(ago(app.now_ms, s.connected_at_ms)),
                Span::styled(
                    if s.live {
                        ago(app.now_ms, s.last_seen_ms)
                    } else {
                        format!("{} db", ago(app.now_ms, s.last_seen_ms))
                    },
                    seen_style,
                ),
                Span::raw(subs),
            ])
        })
        .collect();
    let columns = [
        ("User", Constraint::Length(if wide { 24 } else { 10 })),
        ("Client", Constraint::Length(client_width as u16)),
        ("Instance", Constraint::Length(9)),
        ("Remote", Constraint::Length(15)),
        ("Since", Constraint::Length(8)),
        ("Seen", Constraint::Length(10)),
        ("Subscriptions", Constraint::Min(6)),
    ];
    let headers = sorted_headers(&columns, sort.as_deref());
    render_selectable(
        app,
        View::Sessions,
        title,
        &as_columns(&headers),
        table_rows,
        area,
        buf,
    );
}
