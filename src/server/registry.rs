//! Connection admission (PROTOCOL.md §1): per-IP and total limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::config::ServerConfig;
use crate::protocol::errors::close;

#[derive(Default)]
pub struct ConnectionRegistry {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Releases the slot when the connection ends.
pub struct Admission {
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
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        config: &ServerConfig,
    ) -> Result<Admission, (u16, &'static str)> {
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

    pub fn total(&self) -> usize {
        self.per_ip.lock().map(|m| m.values().sum()).unwrap_or(0)
    }

    /// The `n` IPs with the most connections.
    pub fn top_ips(&self, n: usize) -> Vec<(IpAddr, usize)> {
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
