//! The client address behind reverse proxies: `X-Forwarded-For` / `X-Real-IP` are
//! believed only when the connection comes from a trusted proxy network, and then
//! the client is the right-most `X-Forwarded-For` entry that is not itself a trusted
//! proxy. Every proxy appends the address it received the request from, so entries
//! to the left of the last untrusted one were written by the client and prove
//! nothing; taking the first entry (what upstream servers do) lets any client pick
//! its own address and dodge the per-IP limit.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Parse `SYNCKIT_TRUSTED_PROXIES`: comma-separated CIDRs (`10.0.0.0/8`, `fd00::/8`)
/// or single addresses (`192.0.2.7`, taken as /32 or /128).
pub fn parse_networks(list: &str) -> Result<Vec<IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    format!("SYNCKIT_TRUSTED_PROXIES: {s:?} is not a network (e.g. 10.0.0.0/8) or an address")
                })
        })
        .collect()
}

/// Loopback in both families: a proxy on the same host (the default trusted set).
#[cfg(test)]
pub(crate) fn loopback_networks() -> Vec<IpNet> {
    parse_networks("127.0.0.0/8,::1/128").unwrap_or_default()
}

fn trusted(ip: IpAddr, networks: &[IpNet]) -> bool {
    // An IPv4 peer seen on a dual-stack socket arrives as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    networks.iter().any(|n| n.contains(&ip))
}

/// The client IP for per-IP limits and logs. Without `trust_proxy` (the default), or
/// when the peer is not a trusted proxy, it is the peer address. Otherwise the
/// right-most untrusted `X-Forwarded-For` entry (all entries of every header, in
/// order), else `X-Real-IP`, else the peer. An unparsable entry ends the walk: what
/// lies left of it cannot be attributed.
pub(crate) fn client_ip(
    headers: &HeaderMap,
    peer: SocketAddr,
    trust_proxy: bool,
    trusted_proxies: &[IpNet],
) -> IpAddr {
    let peer_ip = peer.ip();
    if !trust_proxy || !trusted(peer_ip, trusted_proxies) {
        return peer_ip;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = None;
    for entry in entries.iter().rev() {
        let Ok(ip) = entry.parse::<IpAddr>() else {
            break;
        };
        client = Some(ip);
        if !trusted(ip, trusted_proxies) {
            break;
        }
    }
    if let Some(ip) = client {
        return ip;
    }
    if entries.is_empty() {
        let real = headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        if let Some(ip) = real {
            return ip;
        }
    }
    peer_ip
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().expect("ip"), 40000)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn parses_networks_and_single_addresses() {
        let n = parse_networks(" 10.0.0.0/8, 192.0.2.7 ,fd00::/8,,::1").expect("valid");
        assert_eq!(n.len(), 4);
        assert!(trusted(ip("10.1.2.3"), &n));
        assert!(trusted(ip("192.0.2.7"), &n));
        assert!(!trusted(ip("192.0.2.8"), &n));
        assert!(trusted(ip("fd12::1"), &n));
        assert!(trusted(ip("::1"), &n));
        // Host bits are masked off rather than refused.
        assert_eq!(
            parse_networks("10.1.2.3/8").expect("valid")[0].to_string(),
            "10.0.0.0/8"
        );
        assert!(parse_networks("10.0.0.0/33").is_err());
        assert!(parse_networks("proxy.local").is_err());
        assert_eq!(parse_networks("").expect("empty"), vec![]);
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_networks() {
        assert!(trusted(ip("::ffff:127.0.0.1"), &loopback_networks()));
    }

    #[test]
    fn headers_are_ignored_unless_enabled_and_from_a_trusted_peer() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "5.6.7.8")]);
        let lo = loopback_networks();
        assert_eq!(
            client_ip(&h, peer("127.0.0.1"), false, &lo),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_ip(&h, peer("203.0.113.9"), true, &lo),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(&h, peer("127.0.0.1"), true, &lo), ip("1.2.3.4"));
    }

    #[test]
    fn the_right_most_untrusted_entry_is_the_client() {
        let trusted = parse_networks("127.0.0.0/8,10.0.0.0/8").expect("valid");
        let at = |xff: &[&str]| {
            let pairs: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
            client_ip(&headers(&pairs), peer("127.0.0.1"), true, &trusted)
        };
        // The client forged the first entry; the proxy appended the real address.
        assert_eq!(at(&["6.6.6.6, 198.51.100.1"]), ip("198.51.100.1"));
        // Inner proxies are skipped; several headers are one list.
        assert_eq!(
            at(&["198.51.100.1, 10.0.0.5", "10.0.0.6"]),
            ip("198.51.100.1")
        );
        // Only proxies: the left-most is as far as the chain goes.
        assert_eq!(at(&["10.0.0.1, 10.0.0.2"]), ip("10.0.0.1"));
        // Garbage stops the walk: the entry right of it is the client.
        assert_eq!(
            at(&["1.1.1.1, junk, 198.51.100.2, 10.0.0.2"]),
            ip("198.51.100.2")
        );
        assert_eq!(at(&["junk"]), ip("127.0.0.1"));
        // IPv6 entries.
        assert_eq!(at(&["2001:db8::1"]), ip("2001:db8::1"));
    }

    #[test]
    fn x_real_ip_only_without_forwarded_for() {
        let lo = loopback_networks();
        let h = headers(&[("x-real-ip", "198.51.100.3")]);
        assert_eq!(
            client_ip(&h, peer("127.0.0.1"), true, &lo),
            ip("198.51.100.3")
        );
        let both = headers(&[
            ("x-forwarded-for", "198.51.100.4"),
            ("x-real-ip", "6.6.6.6"),
        ]);
        assert_eq!(
            client_ip(&both, peer("127.0.0.1"), true, &lo),
            ip("198.51.100.4")
        );
    }
}
