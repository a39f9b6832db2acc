//! Durations on the command line: humantime (`30s`, `24h`, `1h 30m`) or a plain number
//! of milliseconds, which is what the upstream servers' env vars use (`30000`).

use std::time::Duration;

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|e| format!("invalid number of milliseconds {s:?}: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| {
        format!(
            "invalid duration {s:?}: {e} (use e.g. 30s, 5m, 24h, 7d, or milliseconds like 30000)"
        )
    })
}

/// A retention period: a plain number counts in `unit` (hours for
/// `--sessions-hours`, days for `--deltas-days`), anything else is humantime
/// (`36h`, `2w`). Zero disables the step it configures.
fn parse_retention(s: &str, unit: Duration, unit_name: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let n: u32 = s
            .parse()
            .map_err(|e| format!("invalid number of {unit_name} {s:?}: {e}"))?;
        return Ok(unit * n);
    }
    humantime::parse_duration(s).map_err(|e| {
        format!(
            "invalid period {s:?}: {e} (a number of {unit_name}, or e.g. 36h, 7d, 2w; 0 disables)"
        )
    })
}

pub(crate) fn parse_hours(s: &str) -> Result<Duration, String> {
    parse_retention(s, Duration::from_secs(3600), "hours")
}

pub(crate) fn parse_days(s: &str) -> Result<Duration, String> {
    parse_retention(s, Duration::from_secs(86_400), "days")
}

/// Booleans the way operators write them: true/1/yes/on and false/0/no/off.
pub(crate) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!(
            "invalid boolean {other:?}: use true/false, 1/0, yes/no or on/off"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_periods() {
        assert_eq!(parse_hours("24"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_hours("0"), Ok(Duration::ZERO));
        assert_eq!(parse_hours("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_days("30"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_days("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(parse_days("-1").is_err());
        assert!(parse_days("soon").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30000"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn booleans() {
        for t in ["true", "1", "YES", "on"] {
            assert_eq!(parse_bool(t), Ok(true));
        }
        for f in ["false", "0", "no", "Off"] {
            assert_eq!(parse_bool(f), Ok(false));
        }
        assert!(parse_bool("maybe").is_err());
    }
}
