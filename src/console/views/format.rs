//! Compact text for narrow columns: ages, sizes, rates, clock times. Every function
//! takes "now" explicitly so snapshots do not depend on the wall clock.

use chrono::{TimeZone, Utc};

/// `42s`, `5m`, `3h`, `2d` (no sign); `-` when unknown (0).
pub(crate) fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// How long ago `then` was.
pub(crate) fn ago(now_ms: i64, then_ms: i64) -> String {
    if then_ms <= 0 {
        return "-".into();
    }
    format!("{} ago", span(now_ms - then_ms))
}

/// How long until `then`.
pub(crate) fn until(now_ms: i64, then_ms: Option<i64>) -> String {
    match then_ms {
        Some(t) if t >= now_ms => format!("in {}", span(t - now_ms)),
        Some(t) => format!("{} late", span(now_ms - t)),
        None => "-".into(),
    }
}

/// `812B`, `4.2K`, `1.5M`.
pub(crate) fn bytes(n: u64) -> String {
    match n {
        0..=1023 => format!("{n}B"),
        1024..=1_048_575 => format!("{:.1}K", n as f64 / 1024.0),
        _ => format!("{:.1}M", n as f64 / 1_048_576.0),
    }
}

/// `950`, `12k`, `100k`, `1.5M`: row counts in narrow columns.
pub(crate) fn count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{}k", n / 1000),
        _ => format!("{:.1}M", n as f64 / 1_000_000.0),
    }
}

/// Messages per second with one decimal under 10.
pub(crate) fn rate(per_second: f64) -> String {
    if per_second < 10.0 {
        format!("{per_second:.1}")
    } else {
        format!("{per_second:.0}")
    }
}

/// A count, or `?` when the instance did not say (never a made-up 0).
pub(crate) fn known<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

/// A rate, or `-` before there are two polls to derive it from.
pub(crate) fn rate_or_dash(per_second: Option<f64>) -> String {
    per_second.map_or_else(|| "-".to_owned(), rate)
}

/// `HH:MM:SS` UTC.
pub(crate) fn clock(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map_or_else(|| "-".into(), |t| t.format("%H:%M:%S").to_string())
}

/// `MM-DD HH:MM` UTC.
pub(crate) fn date_time(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map_or_else(|| "-".into(), |t| t.format("%m-%d %H:%M").to_string())
}

/// Uptime like `3d4h`, `5h12m`, `7m`.
pub(crate) fn uptime(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else {
        format!("{m}m{}s", s % 60)
    }
}

/// First `max` characters of a one-line rendering, with `…` when cut.
pub(crate) fn preview(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_compact() {
        assert_eq!(span(59_999), "59s");
        assert_eq!(span(3_600_000), "1h");
        assert_eq!(ago(10_000, 0), "-");
        assert_eq!(until(0, Some(90_000)), "in 1m");
        assert_eq!(until(90_000, Some(0)), "1m late");
        assert_eq!(bytes(2048), "2.0K");
        assert_eq!(count(100_000), "100k");
        assert_eq!(rate(3.25), "3.2");
        assert_eq!(uptime(3700.0), "1h1m");
        assert_eq!(preview("abcdef", 4), "abc…");
        assert_eq!(clock(0), "00:00:00");
    }
}
