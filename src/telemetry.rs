//! Structured logging with tracing, to stderr: `pretty` for humans, `json` for
//! collectors.

use tracing_subscriber::EnvFilter;

/// Validate a filter and format without installing anything (`check-config`).
pub fn check(filter: &str, format: &str) -> anyhow::Result<()> {
    parse_filter(filter)?;
    match format {
        "json" | "pretty" | "text" => Ok(()),
        other => anyhow::bail!("LOG_FORMAT must be pretty or json, not {other:?}"),
    }
}

fn parse_filter(filter: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid log filter {filter:?} (RUST_LOG/LOG_LEVEL): {e}"))
}

pub fn init(filter: &str, format: &str) -> anyhow::Result<()> {
    let filter = parse_filter(filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        "json" => builder.json().try_init(),
        "pretty" | "text" => builder.try_init(),
        other => anyhow::bail!("LOG_FORMAT must be pretty or json, not {other:?}"),
    };
    result.map_err(|e| anyhow::anyhow!("could not install the logger: {e}"))
}
