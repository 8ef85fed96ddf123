//! The system observer: samples what other processes can take from Oasis (host memory, free disk
//! space of the data directory, file descriptors) and sets the Resource Manager's external levels,
//! so pressure from outside raises critical events just like Oasis's own reservations do.
//!
//! Called by the supervisor thread once a second; reads only /proc, statvfs and getrlimit.

use std::path::{Path, PathBuf};

use crate::resource::{External, Level, ResourceManager};

/// Thresholds for the observer: below `*_warn` a warning, below `*_critical` a critical event.
#[derive(Clone, Debug)]
pub struct ObserverConfig {
    pub data_dir: PathBuf,
    pub memory_available_bytes_warn: u64,
    pub memory_available_bytes_critical: u64,
    pub disk_free_bytes_warn: u64,
    pub disk_free_bytes_critical: u64,
    /// Fraction of RLIMIT_NOFILE in use, per mille.
    pub fds_used_permille_warn: u16,
    pub fds_used_permille_critical: u16,
}

/// One sample, for logs and `/api/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub memory_available_bytes: Option<u64>,
    pub disk_free_bytes: Option<u64>,
    pub fds_open: Option<u64>,
    pub fds_limit: Option<u64>,
}

fn level_below(value: u64, warn: u64, critical: u64) -> Level {
    if value < critical {
        Level::Critical
    } else if value < warn {
        Level::Warning
    } else {
        Level::Normal
    }
}

pub fn memory_available_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn disk_free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: zeroed statvfs is a valid out value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer for the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// This process's open descriptors and its RLIMIT_NOFILE (soft).
///
/// The count is the size `stat` reports for `/proc/self/fd` (Linux 6.2 and later); older
/// kernels report 0 there, and the directory is read instead. Reading it lists and formats every
/// entry: with 6,000 viewers connected that was about 1% of the server's CPU (2026-12-06).
pub fn fds() -> (Option<u64>, Option<u64>) {
    let open = match std::fs::metadata("/proc/self/fd") {
        Ok(m) if m.len() > 0 => Some(m.len()),
        _ => std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
    };
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer.
    let limit =
        (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur);
    (open, limit)
}

/// Samples once and updates the manager's external levels.
pub fn sample(rm: &ResourceManager, cfg: &ObserverConfig) -> Sample {
    let mut s = Sample::default();
    if let Some(m) = memory_available_bytes() {
        s.memory_available_bytes = Some(m);
        rm.set_external(
            External::SystemMemory,
            level_below(
                m,
                cfg.memory_available_bytes_warn,
                cfg.memory_available_bytes_critical,
            ),
        );
    }
    if let Some(d) = disk_free_bytes(&cfg.data_dir) {
        s.disk_free_bytes = Some(d);
        rm.set_external(
            External::DiskFree,
            level_below(d, cfg.disk_free_bytes_warn, cfg.disk_free_bytes_critical),
        );
    }
    let (open, limit) = fds();
    s.fds_open = open;
    s.fds_limit = limit;
    if let (Some(o), Some(l)) = (open, limit) {
        let permille = (o * 1000).checked_div(l).unwrap_or(0);
        let level = if permille >= cfg.fds_used_permille_critical as u64 {
            Level::Critical
        } else if permille >= cfg.fds_used_permille_warn as u64 {
            Level::Warning
        } else {
            Level::Normal
        };
        rm.set_external(External::FileDescriptors, level);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{AccountLimits, ResourceLimits};

    #[test]
    fn the_descriptor_count_follows_what_is_opened() {
        let (Some(before), Some(limit)) = fds() else {
            panic!("/proc/self/fd and RLIMIT_NOFILE must be readable on Linux");
        };
        assert!(before > 0 && limit >= before);
        // Other tests open and close a few descriptors meanwhile: 256 more here show as at
        // least 128.
        let files: Vec<std::fs::File> = (0..256)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let during = fds().0.unwrap();
        assert!(
            during >= before + 128,
            "{before} before, {during} with 256 more open"
        );
        drop(files);
    }

    #[test]
    fn real_pressure_raises_events() {
        let rm = ResourceManager::new(&ResourceLimits {
            memory_bytes: AccountLimits::new(1),
            net_bps: vec![],
            disk_read_bps: AccountLimits::new(1),
            disk_space_bytes: AccountLimits::new(1),
            connections: AccountLimits::new(1),
            open_files: AccountLimits::new(1),
        });
        let dir = tempfile::tempdir().unwrap();
        let relaxed = ObserverConfig {
            data_dir: dir.path().to_path_buf(),
            memory_available_bytes_warn: 0,
            memory_available_bytes_critical: 0,
            disk_free_bytes_warn: 0,
            disk_free_bytes_critical: 0,
            fds_used_permille_warn: 1000,
            fds_used_permille_critical: 1000,
        };
        let s = sample(&rm, &relaxed);
        assert!(s.memory_available_bytes.unwrap() > 0);
        assert!(s.disk_free_bytes.is_some());
        assert!(!rm.is_critical());
        // Demand more free disk than any machine has: the real statvfs reading must go critical.
        let strict = ObserverConfig {
            disk_free_bytes_warn: u64::MAX,
            disk_free_bytes_critical: u64::MAX,
            ..relaxed
        };
        sample(&rm, &strict);
        assert!(rm.is_critical());
        assert_eq!(
            rm.sources_at(Level::Critical),
            vec!["disk_free".to_string()]
        );
        // Critical for what needs disk space, not for what does not.
        use crate::resource::{External, Resource};
        assert!(rm.is_critical_for(&[Resource::DiskSpaceBytes], &[External::DiskFree]));
        assert!(rm.is_critical_for(&[], &[External::DiskFree]));
        assert!(!rm.is_critical_for(
            &[
                Resource::MemoryBytes,
                Resource::DiskReadBps,
                Resource::OpenFiles
            ],
            &[External::SystemMemory, External::FileDescriptors]
        ));
        // A listen address the manager does not know is never critical (and never panics).
        assert!(!rm.is_critical_for(&[Resource::NetBps(3)], &[]));
    }
}
