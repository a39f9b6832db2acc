//! Durations on the command line: humantime (`30s`, `24h`, `1h 30m`) or a plain number
//! of milliseconds, which is what the upstream servers' env vars use (`30000`).

use std::time::Duration;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
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

/// Booleans the way operators write them: true/1/yes/on and false/0/no/off.
pub fn parse_bool(s: &str) -> Result<bool, String> {
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
