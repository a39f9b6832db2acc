//! `synckit console`: flags and wiring for the operator console (src/console): the
//! terminal set-up and restore, the log file, and `--once`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::duration::parse_duration;
use crate::auth::{Authenticator, JwtSettings};
use crate::console::credential::Credential;
use crate::console::feed::FeedConfig;
use crate::console::{self, Options};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct ConsoleArgs {
    /// Admin API of an instance (repeat or comma-separate for several); the rest of
    /// the fleet is discovered through Redis presence.
    #[arg(
        long = "server",
        env = "SYNCKIT_CONSOLE_SERVERS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:9091"
    )]
    pub(crate) servers: Vec<String>,
    /// PostgreSQL (documents, sessions, awareness, maintenance runs); empty = off.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// Redis (sampled pub/sub tap and fleet presence); empty = off.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub(crate) redis_url: Option<String>,
    /// Channel prefix the servers publish under.
    #[arg(long, env = "REDIS_CHANNEL_PREFIX", default_value = "synckit:")]
    pub(crate) channel_prefix: String,
    /// How often to poll (+/- change it live).
    #[arg(long, env = "SYNCKIT_CONSOLE_REFRESH", default_value = "1s", value_parser = parse_duration)]
    pub(crate) refresh: Duration,
    /// Enable the actions (cleanup, prune awareness, disconnect, delete), each behind
    /// a confirmation dialog. Read-only without it.
    #[arg(long)]
    pub(crate) allow_actions: bool,
    /// Admin bearer token for reads and actions (a JWT with isAdmin, or an API key).
    #[arg(long, env = "SYNCKIT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Without --admin-token, reads and actions use short-lived admin tokens signed
    /// with the servers' secret (the same env file as `serve`).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub(crate) jwt_secret: Option<String>,
    /// The `iss` claim of minted admin tokens: set it when the servers require one
    /// (their JWT_ISSUER).
    #[arg(long, env = "JWT_ISSUER")]
    pub(crate) jwt_issuer: Option<String>,
    /// The `aud` claim of minted admin tokens: set it when the servers require one
    /// (their JWT_AUDIENCE).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub(crate) jwt_audience: Option<String>,
    /// Print the current state of every view and exit: 0 when every configured
    /// source answered, 3 PostgreSQL unreachable, 5 Redis unreachable, 6 an
    /// instance's admin API unreachable, 7 several of those.
    #[arg(long)]
    pub(crate) once: bool,
    /// Output of --once.
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: Format,
    /// Log file (the console never logs to the terminal it draws on).
    #[arg(long, env = "SYNCKIT_CONSOLE_LOG")]
    log_file: Option<PathBuf>,
}

/// Tokens minted per action live this long: enough for one request.
const MINTED_TOKEN_TTL: Duration = Duration::from_secs(300);

impl ConsoleArgs {
    fn options(&self) -> Options {
        let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let minter = non_empty(&self.jwt_secret).map(|secret| {
            Arc::new(Authenticator::new(JwtSettings {
                secret,
                issuer: self.jwt_issuer.clone(),
                audience: self.jwt_audience.clone(),
                access_ttl: MINTED_TOKEN_TTL,
                refresh_ttl: MINTED_TOKEN_TTL,
                api_keys: Vec::new(),
            }))
        });
        Options {
            feed: FeedConfig {
                servers: self
                    .servers
                    .iter()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect(),
                database_url: non_empty(&self.database_url),
                redis_url: non_empty(&self.redis_url),
                channel_prefix: self.channel_prefix.clone(),
                credential: Credential::new(non_empty(&self.admin_token), minter),
            },
            refresh: self.refresh.max(Duration::from_millis(100)),
            allow_actions: self.allow_actions,
        }
    }
}

fn init_log(path: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = path.unwrap_or_else(|| std::env::temp_dir().join("synckit-console.log"));
    let mut open = std::fs::OpenOptions::new();
    open.create(true).append(true);
    // The log names servers, sessions and errors: readable by its owner only.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let file = open
        .open(&path)
        .with_context(|| format!("cannot open the log file {}", path.display()))?;
    // An older, wider file is narrowed too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init()
        .map_err(|e| anyhow::anyhow!("could not install the logger: {e}"))?;
    Ok(path)
}

pub(crate) fn run(args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    let log = init_log(args.log_file.clone())?;
    let options = args.options();
    tracing::info!(servers = ?options.feed.servers, database = options.feed.database_url.is_some(), redis = options.feed.redis_url.is_some(), allow_actions = options.allow_actions, "console starting");
    if args.once {
        let app = super::block_on(async {
            Ok(console::snapshot(&options, console::event::now_ms()).await)
        })?;
        match args.format {
            Format::Text => print!("{}", console::once::text(&app)),
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&console::once::json(&app))?
            ),
        }
        let code = console::once::exit_code(&app);
        if code != 0 {
            tracing::warn!(code, "console --once: a source is down");
        }
        return Ok(ExitCode::from(code));
    }
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let result = super::block_on(async {
        console::run(&mut terminal, options)
            .await
            .context("terminal I/O failed")
    });
    ratatui::restore();
    result?;
    eprintln!("synckit console: log in {}", log.display());
    Ok(ExitCode::SUCCESS)
}
