//! Structured logging with tracing, to stderr: `pretty` for humans (ANSI colours only
//! when stderr is a terminal, so files and the journal stay plain), `json` for
//! collectors (one object per line, field values typed: numbers, booleans, and
//! objects or arrays as JSON rather than as strings holding JSON).
//!
//! Logging never stops or blocks the server: every line goes through a bounded queue
//! that one writer thread drains to stderr. When the queue is full, or stderr is
//! gone (a pipe whose reader exited, journald restarting), lines are dropped and
//! counted (`synckit_log_lines_dropped_total` in /metrics), and signal handling and
//! the drain carry on.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Lines waiting for the writer thread. A burst beyond this (stderr slower than the
/// server logs) is dropped rather than waited for.
const QUEUE_LINES: usize = 4096;

/// PostgreSQL NOTICEs (e.g. "relation _sqlx_migrations already exists, skipping"
/// on every start) are chatter, not news: hidden unless the filter names sqlx.
const QUIET_SQLX_NOTICES: &str = "sqlx::postgres::notice=warn";

static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines queued and not yet written (or dropped by the writer), for [`flush`].
static PENDING: AtomicU64 = AtomicU64::new(0);
static QUEUE: OnceLock<SyncSender<Vec<u8>>> = OnceLock::new();

/// Log lines lost so far: the queue was full or stderr could not be written.
pub(crate) fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    // Variant docs would turn every help into the long layout, so these are
    // plain comments. For humans; `text` is accepted too.
    #[value(alias = "text")]
    Pretty,
    // One JSON object per line, for collectors.
    Json,
}

/// Validate a filter without installing anything (`check-config`).
pub(crate) fn check(filter: &str) -> anyhow::Result<()> {
    parse_filter(filter).map(|_| ())
}

fn parse_filter(filter: &str) -> anyhow::Result<EnvFilter> {
    let parsed = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid log filter {filter:?} (RUST_LOG/LOG_LEVEL): {e}"))?;
    if filter.contains("sqlx") {
        return Ok(parsed);
    }
    Ok(parsed.add_directive(
        QUIET_SQLX_NOTICES
            .parse()
            .map_err(|e| anyhow::anyhow!("internal log directive: {e}"))?,
    ))
}

/// Install the logger: `filter` is an EnvFilter expression.
pub(crate) fn init(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = parse_filter(filter)?;
    let queue = queue()?;
    let make_writer = move || QueueWriter(queue.clone());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(make_writer);
    let result = if format == LogFormat::Json {
        builder.event_format(JsonLines).try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    result.map_err(|e| anyhow::anyhow!("could not install the logger: {e}"))
}

/// Wait (at most `budget`) until every queued line is written: a one-shot command
/// or a stopping server calls this before it exits, so its last lines are not lost.
pub fn flush(budget: Duration) {
    let deadline = Instant::now() + budget;
    while PENDING.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The queue's sending side; the writer thread starts with the first call.
fn queue() -> anyhow::Result<SyncSender<Vec<u8>>> {
    if let Some(queue) = QUEUE.get() {
        return Ok(queue.clone());
    }
    let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE_LINES);
    std::thread::Builder::new()
        .name("synckit-log".into())
        .spawn(move || {
            let mut stderr = std::io::stderr();
            for line in rx {
                if stderr.write_all(&line).is_err() {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
                PENDING.fetch_sub(1, Ordering::AcqRel);
            }
        })
        .map_err(|e| anyhow::anyhow!("could not start the log writer thread: {e}"))?;
    Ok(QUEUE.get_or_init(|| tx).clone())
}

/// What the formatter writes into: each `write` is one formatted event (the fmt
/// layer writes a whole line at once), handed to the queue without waiting.
struct QueueWriter(SyncSender<Vec<u8>>);

impl Write for QueueWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        PENDING.fetch_add(1, Ordering::AcqRel);
        if self.0.try_send(line.to_vec()).is_err() {
            PENDING.fetch_sub(1, Ordering::AcqRel);
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One JSON object per event: `timestamp`, `level`, `target`, and `fields` holding
/// the message and every field with its own JSON type.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let metadata = event.metadata();
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::String(metadata.level().to_string()));
        line.insert(
            "target".into(),
            Value::String(
                fields
                    .target
                    .unwrap_or_else(|| metadata.target().to_owned()),
            ),
        );
        line.insert("fields".into(), Value::Object(fields.fields));
        writeln!(writer, "{}", Value::Object(line))
    }
}

#[derive(Default)]
struct JsonFields {
    fields: Map<String, Value>,
    /// A record bridged from the `log` crate names its real target in a field.
    target: Option<String>,
}

impl JsonFields {
    fn insert(&mut self, field: &Field, value: Value) {
        self.fields.insert(field.name().to_owned(), value);
    }
}

/// A `%value` or `?value` whose text is a JSON object or array (a job's counts, a
/// list of names) is carried as that JSON; anything else is a string.
fn formatted(text: String) -> Value {
    if text.starts_with('{') || text.starts_with('[') {
        if let Ok(value @ (Value::Object(_) | Value::Array(_))) = serde_json::from_str(&text) {
            return value;
        }
    }
    Value::String(text)
}

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let number = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.insert(field, number);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "log.target" => self.target = Some(value.to_owned()),
            name if name.starts_with("log.") => {}
            _ => self.insert(field, Value::String(value.to_owned())),
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name().starts_with("log.") {
            return;
        }
        let text = format!("{value:?}");
        let value = if field.name() == "message" {
            Value::String(text)
        } else {
            formatted(text)
        };
        self.insert(field, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_is_carried_as_json_and_the_rest_as_strings() {
        assert_eq!(
            formatted(r#"{"expired":0}"#.into()),
            serde_json::json!({"expired": 0})
        );
        assert_eq!(
            formatted(r#"["a","b"]"#.into()),
            serde_json::json!(["a", "b"])
        );
        assert_eq!(
            formatted("{not json".into()),
            Value::String("{not json".into())
        );
        assert_eq!(
            formatted("127.0.0.1:9091".into()),
            Value::String("127.0.0.1:9091".into())
        );
    }

    #[test]
    fn sqlx_notices_are_quiet_unless_asked_for() {
        assert!(parse_filter("info")
            .unwrap()
            .to_string()
            .contains(QUIET_SQLX_NOTICES));
        assert!(!parse_filter("info,sqlx=info")
            .unwrap()
            .to_string()
            .contains(QUIET_SQLX_NOTICES));
    }
}
