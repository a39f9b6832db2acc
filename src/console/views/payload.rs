//! The payload of a sampled Traffic message (Enter): pretty JSON with long values
//! cut, scrolled with j/k; Esc or Enter closes.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::widgets::{Paragraph, Widget};

use super::format::{bytes, clock};
use super::widgets::popup;
use super::{block, theme};
use crate::console::app::App;
use crate::console::model::TrafficSample;

pub(crate) fn render(app: &App, sample: &TrafficSample, area: Rect, buf: &mut Buffer) {
    let area = popup(
        area.width.saturating_sub(4),
        area.height.saturating_sub(2),
        area,
        buf,
    );
    let title = format!(
        "{} {} · {} · {} · Esc closes · j/k scroll",
        clock(sample.at_ms),
        sample.kind,
        sample.channel,
        bytes(sample.size as u64)
    );
    let text = match &sample.payload {
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        None => "(not JSON, or too large to parse: only its size is known)".into(),
    };
    Paragraph::new(text)
        .wrap(ratatui::widgets::Wrap { trim: false })
        .scroll((app.overlay_scroll, 0))
        .block(block(title).border_style(theme::accent()))
        .render(area, buf);
}
