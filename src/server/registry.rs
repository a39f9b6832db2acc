//! Connection admission (docs/protocol.md §1): per-IP and total limits. An IPv6 client
//! is counted by its network (`SYNCKIT_IPV6_PREFIX_LEN`, /64 by default): one host
//! is usually handed a whole /64, so counting single addresses would let it open
//! 2^64 × the per-IP limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::config::ServerConfig;
use crate::protocol::errors::close;

#[derive(Default)]
pub(crate) struct ConnectionRegistry {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Releases the slot when the connection ends.
pub(crate) struct Admission {
    registry: Arc<ConnectionRegistry>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut map = self
            .registry
            .per_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl ConnectionRegistry {
    /// Take a slot, or say which close code and reason refuse the connection.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        config: &ServerConfig,
    ) -> Result<Admission, (u16, &'static str)> {
        let ip = client_key(ip, config.ipv6_prefix_len);
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let from_ip = map.get(&ip).copied().unwrap_or(0);
        if from_ip >= config.max_connections_per_ip {
            return Err((close::POLICY, close::TOO_MANY_FROM_IP));
        }
        let total: usize = map.values().sum();
        if total >= config.max_connections {
            return Err((close::POLICY, close::AT_CAPACITY));
        }
        *map.entry(ip).or_insert(0) += 1;
        Ok(Admission {
            registry: self.clone(),
            ip,
        })
    }

    pub(crate) fn total(&self) -> usize {
        self.per_ip.lock().map(|m| m.values().sum()).unwrap_or(0)
    }

    /// The `n` IPs with the most connections.
    pub(crate) fn top_ips(&self, n: usize) -> Vec<(IpAddr, usize)> {
        let mut v: Vec<(IpAddr, usize)> = self
            .per_ip
            .lock()
            .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

/// The key a client is counted under: an IPv4 address itself (also when it arrives
/// IPv4-mapped on a dual-stack socket), an IPv6 address truncated to its first
/// `prefix_len` bits.
pub(crate) fn client_key(ip: IpAddr, prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(prefix_len.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str, prefix: u8) -> String {
        client_key(ip.parse().expect("ip"), prefix).to_string()
    }

    #[test]
    fn ipv6_clients_are_counted_by_network() {
        assert_eq!(key("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:aaaa::1", 48), "2001:db8:1::");
        assert_eq!(key("2001:db8:1:2:aaaa::1", 128), "2001:db8:1:2:aaaa::1");
        assert_eq!(key("2001:db8::1", 0), "::");
        assert_eq!(key("::ffff:192.0.2.7", 64), "192.0.2.7");
        assert_eq!(key("192.0.2.7", 64), "192.0.2.7");
    }
}
