//! View 3, Sessions: live sessions of every instance and persisted `sessions` rows
//! no instance reported: user, client, instance, remote address, connected since,
//! last seen, subscriptions. `s` sorts, `/` filters, `d` disconnects (with
//! `--allow-actions`).

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Row, StatefulWidget, Table, TableState, Widget};

use super::format::{ago, preview};
use super::{block, selection, theme};
use crate::console::app::{App, View};
use crate::console::rows::{self, short_instance};

pub fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let rows = rows::sessions(app);
    let live = rows.iter().filter(|s| s.live).count();
    let title = format!(
        "Sessions {} ({live} live) · sort {} (s){}",
        rows.len(),
        app.session_sort.label(),
        if app.allow_actions {
            " · d disconnects"
        } else {
            ""
        }
    );
    if rows.is_empty() {
        super::empty_note(" no sessions")
            .block(block(title))
            .render(area, buf);
        return;
    }
    let wide = area.width >= 120;
    let header = Row::new([
        "User",
        "Client",
        "Instance",
        "Remote",
        "Since",
        "Seen",
        "Subscriptions",
    ])
    .style(theme::header());
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
    let widths = [
        Constraint::Length(if wide { 24 } else { 10 }),
        Constraint::Length(client_width as u16),
        Constraint::Length(8),
        Constraint::Length(15),
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Min(6),
    ];
    let mut state =
        TableState::new().with_selected(selection(app, View::Sessions, table_rows.len()));
    StatefulWidget::render(
        Table::new(table_rows, widths)
            .header(header)
            .block(block(title))
            .row_highlight_style(theme::selected())
            .highlight_symbol(">"),
        area,
        buf,
        &mut state,
    );
}
