//! View 8, Charts: per instance over the last minutes — messages per second (in
//! and out), open connections, and the write backlog — as line charts (the same
//! row is on the Overview at 120 columns and more).

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::Span;
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Widget};

use super::format::{count, rate};
use super::{block, theme};
use crate::console::app::{App, Point, HISTORY_MS};
use crate::console::rows;

/// One colour per instance, from the terminal's palette.
const COLOURS: [Color; 6] = [
    Color::Cyan,
    Color::Green,
    Color::Yellow,
    Color::Magenta,
    Color::Blue,
    Color::Red,
];

/// The three charts stacked (the Charts view).
pub(crate) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    render_all(app, Layout::vertical(THIRDS).areas(area), buf);
}

/// The three charts side by side (the wide Overview).
pub(crate) fn render_row(app: &App, area: Rect, buf: &mut Buffer) {
    render_all(app, Layout::horizontal(THIRDS).areas(area), buf);
}

const THIRDS: [Constraint; 3] = [
    Constraint::Ratio(1, 3),
    Constraint::Ratio(1, 3),
    Constraint::Ratio(1, 3),
];

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// Each instance's history of one measure, x in seconds before now.
fn series(app: &App, value: fn(&Point) -> f64) -> Vec<Series> {
    app.instances
        .iter()
        .filter(|i| !i.history.is_empty())
        .map(|i| Series {
            name: rows::instance_name(i),
            points: i
                .history
                .iter()
                .map(|p| ((p.at_ms - app.now_ms) as f64 / 1000.0, value(p)))
                .collect(),
        })
        .collect()
}

/// A chart: its title, the measure it plots, how its values read.
type ChartDef = (&'static str, fn(&Point) -> f64, fn(f64) -> String);

fn render_all(app: &App, areas: [Rect; 3], buf: &mut Buffer) {
    let charts: [ChartDef; 3] = [
        ("Messages in /s", |p| p.rate_in, rate),
        ("Connections", |p| p.connections, |v| count(v as u64)),
        ("Write backlog", |p| p.backlog, |v| count(v as u64)),
    ];
    for ((title, value, label), area) in charts.into_iter().zip(areas) {
        let data = series(app, value);
        chart(title, &data, label, area, buf);
    }
}

fn chart(title: &str, data: &[Series], label: fn(f64) -> String, area: Rect, buf: &mut Buffer) {
    let peak = data
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let top = if peak <= 0.0 { 1.0 } else { peak * 1.1 };
    let oldest = data
        .iter()
        .flat_map(|s| s.points.first())
        .map(|p| p.0)
        .fold(0.0f64, f64::min)
        .max(-(HISTORY_MS as f64) / 1000.0)
        .min(-60.0);
    let now: f64 = data.iter().flat_map(|s| s.points.last()).map(|p| p.1).sum();
    let title = format!("{title}: {} now, peak {}", label(now), label(peak));
    if data.is_empty() {
        super::empty_note(" no samples yet (an instance must answer)")
            .block(block(title))
            .render(area, buf);
        return;
    }
    let datasets: Vec<Dataset> = data
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Dataset::default()
                .name(s.name.clone())
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(COLOURS[i % COLOURS.len()]))
                .data(&s.points)
        })
        .collect();
    let minutes = (-oldest / 60.0).round();
    let x_labels = vec![
        Span::styled(format!("-{minutes}m"), theme::dim()),
        Span::styled("now", theme::dim()),
    ];
    let y_labels = vec![Span::raw("0"), Span::raw(label(top))];
    Chart::new(datasets)
        .block(block(title))
        .x_axis(Axis::default().bounds([oldest, 0.0]).labels(x_labels))
        .y_axis(Axis::default().bounds([0.0, top]).labels(y_labels))
        .hidden_legend_constraints((Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)))
        .render(area, buf);
}
