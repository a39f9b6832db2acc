//! The standard `process_*` metrics (CPU, memory, file descriptors, threads, start
//! time), read from `/proc/self` at scrape time. Off Linux they are left out.

/// One reading; a value the system does not offer is `None`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProcessStats {
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) resident_bytes: Option<f64>,
    pub(crate) virtual_bytes: Option<f64>,
    pub(crate) open_fds: Option<f64>,
    pub(crate) max_fds: Option<f64>,
    pub(crate) threads: Option<f64>,
    pub(crate) start_time_seconds: Option<f64>,
}

/// `/proc` reports times in USER_HZ ticks, which Linux fixes at 100 for userspace.
const TICKS_PER_SECOND: f64 = 100.0;

pub(crate) fn read() -> ProcessStats {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // Fields after the command name (which may hold spaces and parentheses).
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // `fields[0]` is field 3 of proc(5): utime is 14, stime 15, num_threads 20,
    // starttime 22, vsize 23.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let cpu_seconds = match (field(14), field(15)) {
        (Some(user), Some(system)) => Some((user + system) / TICKS_PER_SECOND),
        _ => None,
    };
    let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    let start_time_seconds = match (boot_time, field(22)) {
        (Some(boot), Some(ticks)) => Some(boot + ticks / TICKS_PER_SECOND),
        _ => None,
    };
    let resident_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kib| kib * 1024.0);
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as f64);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<f64>().ok())
        });
    ProcessStats {
        cpu_seconds,
        resident_bytes,
        virtual_bytes: field(23),
        open_fds,
        max_fds,
        threads: field(20),
        start_time_seconds,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_is_read_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let p = super::read();
        assert!(p.cpu_seconds.is_some_and(|c| c >= 0.0));
        assert!(p.resident_bytes.is_some_and(|r| r > 0.0));
        assert!(p.threads.is_some_and(|t| t >= 1.0));
        assert!(p.open_fds.is_some_and(|n| n >= 1.0));
        assert!(p.max_fds.is_some_and(|n| n >= 1.0));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        assert!(p
            .start_time_seconds
            .is_some_and(|s| s <= now + 1.0 && s > now - 86_400.0 * 365.0));
    }
}
