//! Structured logging with tracing, to stderr: `pretty` for humans, `json` for
//! collectors.

use tracing_subscriber::EnvFilter;

pub fn init(filter: &str, format: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid log filter {filter:?} (RUST_LOG/LOG_LEVEL): {e}"))?;
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
