//! `REDIS_URL` parsing. Accepted forms:
//!
//! - `redis://[user][:password@]host[:port][/db]` and `rediss://…` (TLS), as the
//!   `redis` crate reads them (`#insecure` skips hostname checks, `?protocol=resp3`);
//! - the StackExchange.Redis configuration string the C# server takes,
//!   `host[:port][,option=value…]`, so one value can serve both servers. Options
//!   understood: `password`, `user`, `ssl`, `defaultDatabase`, `connectTimeout`
//!   (ms). Options that tune StackExchange itself (`abortConnect`, `keepAlive`, …)
//!   have no meaning here and are listed in [`RedisTarget::ignored`] so the caller
//!   can log them; a second endpoint is ignored the same way (we connect to one
//!   server).

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

/// StackExchange's default port, and its default when `ssl=true`.
const DEFAULT_PORT: u16 = 6379;
const DEFAULT_TLS_PORT: u16 = 6380;

/// Where and how to connect, parsed from `REDIS_URL`.
#[derive(Clone)]
pub struct RedisTarget {
    pub(crate) info: ConnectionInfo,
    /// From `connectTimeout`, when given.
    pub(crate) connect_timeout: Option<Duration>,
    /// Parts of a StackExchange string that were understood but not used.
    pub(crate) ignored: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisUrlError {
    #[error("REDIS_URL is empty")]
    Empty,
    /// The message never repeats the URL: it may hold a password.
    #[error("REDIS_URL is not a valid redis:// or rediss:// URL: {0}")]
    Url(String),
    #[error("REDIS_URL: unsupported scheme {0:?} (use redis://, rediss:// or host:port,options)")]
    Scheme(String),
    #[error("REDIS_URL: bad endpoint {0:?} (expected host or host:port)")]
    Endpoint(String),
    #[error("REDIS_URL: option {0} has a bad value")]
    Option(String),
}

impl RedisTarget {
    pub fn parse(input: &str) -> Result<RedisTarget, RedisUrlError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(RedisUrlError::Empty);
        }
        match input.split_once("://") {
            Some((scheme, _)) => parse_url(scheme, input),
            None => parse_stackexchange(input),
        }
    }

    /// `redis[s]://host:port/db`, with any credentials left out: safe to log.
    pub(crate) fn display(&self) -> String {
        let (scheme, host, port) = match self.info.addr() {
            ConnectionAddr::Tcp(h, p) => ("redis", h.as_str(), *p),
            ConnectionAddr::TcpTls { host, port, .. } => ("rediss", host.as_str(), *port),
            ConnectionAddr::Unix(path) => return format!("unix:{}", path.display()),
            _ => return "redis".into(),
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        format!(
            "{scheme}://{host}:{port}/{}",
            self.info.redis_settings().db()
        )
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("address", &self.display())
            .field(
                "password",
                &self.info.redis_settings().password().map(|_| "<redacted>"),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("ignored", &self.ignored)
            .finish()
    }
}

fn parse_url(scheme: &str, input: &str) -> Result<RedisTarget, RedisUrlError> {
    if !["redis", "rediss", "valkey", "valkeys"].contains(&scheme.to_ascii_lowercase().as_str()) {
        return Err(RedisUrlError::Scheme(scheme.to_owned()));
    }
    let info = input
        .into_connection_info()
        // The crate's message names the failing part, never the URL itself.
        .map_err(|e| RedisUrlError::Url(e.to_string()))?;
    Ok(RedisTarget {
        info,
        connect_timeout: None,
        ignored: Vec::new(),
    })
}

fn parse_stackexchange(input: &str) -> Result<RedisTarget, RedisUrlError> {
    let mut endpoints = Vec::new();
    let mut redis = RedisConnectionInfo::default();
    let mut tls = false;
    let mut connect_timeout = None;
    let mut ignored = Vec::new();
    for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            endpoints.push(part);
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key.to_ascii_lowercase().as_str() {
            "password" => redis = redis.set_password(value),
            "user" => redis = redis.set_username(value),
            "ssl" => tls = parse_bool(value).ok_or_else(|| RedisUrlError::Option(key.into()))?,
            "defaultdatabase" => {
                let db = value
                    .parse()
                    .map_err(|_| RedisUrlError::Option(key.into()))?;
                redis = redis.set_db(db);
            }
            "connecttimeout" => {
                let ms: u64 = value
                    .parse()
                    .map_err(|_| RedisUrlError::Option(key.into()))?;
                connect_timeout = Some(Duration::from_millis(ms));
            }
            // Never log the value: it may be a secret of some other option.
            _ => ignored.push(key.to_owned()),
        }
    }
    let (first, rest) = endpoints
        .split_first()
        .ok_or_else(|| RedisUrlError::Endpoint(String::new()))?;
    ignored.extend(rest.iter().map(|e| format!("endpoint {e}")));
    let default_port = if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT };
    let (host, port) = split_endpoint(first, default_port)?;
    let addr = if tls {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    };
    let info = addr
        .into_connection_info()
        .map_err(|e| RedisUrlError::Url(e.to_string()))?
        .set_redis_settings(redis);
    Ok(RedisTarget {
        info,
        connect_timeout,
        ignored,
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_endpoint(endpoint: &str, default_port: u16) -> Result<(String, u16), RedisUrlError> {
    let bad = || RedisUrlError::Endpoint(endpoint.to_owned());
    let port_of = |p: &str| p.parse::<u16>().map_err(|_| bad());
    let (host, port) = if let Some(rest) = endpoint.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (host, port_of(p)?),
            None if after.is_empty() => (host, default_port),
            None => return Err(bad()),
        }
    } else {
        match endpoint.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, port_of(p)?),
            Some(_) => return Err(bad()),
            None => (endpoint, default_port),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// StackExchange accepts `true`/`false` in any case.
fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(t: &RedisTarget) -> (bool, String, u16) {
        match t.info.addr() {
            ConnectionAddr::Tcp(h, p) => (false, h.clone(), *p),
            ConnectionAddr::TcpTls { host, port, .. } => (true, host.clone(), *port),
            other => panic!("unexpected address {other:?}"),
        }
    }

    #[test]
    fn redis_urls() {
        let t = RedisTarget::parse("redis://127.0.0.1:6390").expect("parse");
        assert_eq!(addr(&t), (false, "127.0.0.1".into(), 6390));
        assert_eq!(t.info.redis_settings().password(), None);
        assert_eq!(t.display(), "redis://127.0.0.1:6390/0");

        let t = RedisTarget::parse("redis://user:s%40cret@cache.internal/3").expect("parse");
        assert_eq!(addr(&t), (false, "cache.internal".into(), 6379));
        assert_eq!(t.info.redis_settings().username(), Some("user"));
        assert_eq!(t.info.redis_settings().password(), Some("s@cret"));
        assert_eq!(t.info.redis_settings().db(), 3);
        assert!(!t.display().contains("cret"), "{}", t.display());
        assert!(!format!("{t:?}").contains("cret"));

        let t = RedisTarget::parse("rediss://:pw@redis.example.com:6380").expect("parse");
        assert_eq!(addr(&t), (true, "redis.example.com".into(), 6380));
        assert_eq!(t.display(), "rediss://redis.example.com:6380/0");
    }

    #[test]
    fn bad_urls_are_errors_that_do_not_echo_the_url() {
        for bad in ["", "http://x:1", "redis://", "redis://h:notaport"] {
            assert!(RedisTarget::parse(bad).is_err(), "{bad} should not parse");
        }
        let e = RedisTarget::parse("redis://u:topsecret@h:99999").expect_err("port");
        assert!(!e.to_string().contains("topsecret"), "{e}");
    }

    #[test]
    fn stackexchange_strings() {
        let t = RedisTarget::parse("cache:6390,password=p=w,ssl=True,defaultDatabase=2,abortConnect=false,connectTimeout=1500")
            .expect("parse");
        assert_eq!(addr(&t), (true, "cache".into(), 6390));
        assert_eq!(t.info.redis_settings().password(), Some("p=w"));
        assert_eq!(t.info.redis_settings().db(), 2);
        assert_eq!(t.connect_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(t.ignored, vec!["abortConnect".to_string()]);

        let t = RedisTarget::parse("localhost").expect("parse");
        assert_eq!(addr(&t), (false, "localhost".into(), 6379));
        let t = RedisTarget::parse("redis.internal,ssl=true,user=app").expect("parse");
        assert_eq!(
            addr(&t),
            (true, "redis.internal".into(), 6380),
            "TLS default port"
        );
        assert_eq!(t.info.redis_settings().username(), Some("app"));

        let t = RedisTarget::parse("[::1]:7000,10.0.0.2:7001").expect("parse");
        assert_eq!(addr(&t), (false, "::1".into(), 7000));
        assert_eq!(t.display(), "redis://[::1]:7000/0");
        assert_eq!(t.ignored, vec!["endpoint 10.0.0.2:7001".to_string()]);
    }

    #[test]
    fn bad_stackexchange_strings() {
        for bad in [
            "host:port",
            "host:1:2",
            "password=x",
            "h,ssl=yes",
            "h,defaultDatabase=x",
            "h,connectTimeout=-1",
            "[::1",
            "[::1]x",
        ] {
            assert!(RedisTarget::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
