//! Worker layout: how many file (`f`), command-channel (`nc`) and data-channel (`nd`) workers run,
//! which roles each ring serves, and which cores they are pinned to.
//!
//! The original design runs `3 + f + nc + nd` threads. Here a worker is one thread with one
//! io_uring; it serves one or more [`Roles`]. A *split* layout gives each role its own workers
//! (connections move between them as a request moves from parsing to streaming); a *combined*
//! layout runs one worker per core serving every role, so nothing crosses threads. Operators pick
//! by measurement (see BENCHMARKS.md).
//!
//! This module only describes and pins; it never starts threads.

use std::fmt;

/// The roles a worker serves, as a bit set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Roles(u8);

impl Roles {
    /// Reads object data from disk.
    pub const FILE: Roles = Roles(1);
    /// Parses requests and decides (command channel).
    pub const COMMAND: Roles = Roles(2);
    /// Streams response bytes (data channel).
    pub const DATA: Roles = Roles(4);
    pub const ALL: Roles = Roles(7);

    pub fn contains(self, other: Roles) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Roles) -> Roles {
        Roles(self.0 | other.0)
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.contains(Roles::FILE) {
            parts.push("f");
        }
        if self.contains(Roles::COMMAND) {
            parts.push("nc");
        }
        if self.contains(Roles::DATA) {
            parts.push("nd");
        }
        f.write_str(&parts.join("+"))
    }
}

/// One worker thread: its roles and the cores it may run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSpec {
    pub roles: Roles,
    pub cores: Vec<usize>,
}

/// The whole layout. Invariant: every role is served by at least one worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub workers: Vec<WorkerSpec>,
    /// Threads outside the workers: supervisor (start-up, signals, resource observer), acceptor,
    /// log. The catalog thread (Database Manager core) is counted separately.
    pub service_threads: usize,
}

/// A layout request that cannot be honoured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid layout {spec:?}: {why}")]
pub struct LayoutError {
    pub spec: String,
    pub why: String,
}

/// Workers per role are capped; more threads than this on one host is a configuration mistake.
pub const WORKERS_PER_ROLE_MAX: usize = 256;

impl Layout {
    /// One worker per core, each serving every role.
    pub fn combined(workers: usize, cores: &[usize]) -> Layout {
        assert!(workers >= 1 && !cores.is_empty());
        let workers = (0..workers)
            .map(|i| WorkerSpec {
                roles: Roles::ALL,
                cores: vec![cores[i % cores.len()]],
            })
            .collect();
        Layout {
            workers,
            service_threads: 3,
        }
    }

    /// `f` file, `nc` command and `nd` data workers, pinned round-robin over `cores` in that order.
    pub fn split(f: usize, nc: usize, nd: usize, cores: &[usize]) -> Layout {
        assert!(f >= 1 && nc >= 1 && nd >= 1 && !cores.is_empty());
        let mut workers = Vec::new();
        let mut next = 0;
        for (count, roles) in [(f, Roles::FILE), (nc, Roles::COMMAND), (nd, Roles::DATA)] {
            for _ in 0..count {
                workers.push(WorkerSpec {
                    roles,
                    cores: vec![cores[next % cores.len()]],
                });
                next += 1;
            }
        }
        Layout {
            workers,
            service_threads: 3,
        }
    }

    /// Parses the operator's layout string:
    /// - `combined` (one all-role worker per core), `combined:N`;
    /// - `f=2,nc=1,nd=2` (split; the three counts, each at least 1).
    pub fn parse(spec: &str, cores: &[usize]) -> Result<Layout, LayoutError> {
        let err = |why: &str| LayoutError {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        let spec_trim = spec.trim();
        if cores.is_empty() {
            return Err(err("no cores available"));
        }
        if spec_trim == "combined" {
            return Ok(Layout::combined(cores.len(), cores));
        }
        if let Some(n) = spec_trim.strip_prefix("combined:") {
            let n: usize = n
                .parse()
                .map_err(|_| err("expected combined:N with N a whole number"))?;
            if n == 0 || n > WORKERS_PER_ROLE_MAX {
                return Err(err("combined:N needs 1 <= N <= 256"));
            }
            return Ok(Layout::combined(n, cores));
        }
        let (mut f, mut nc, mut nd) = (None, None, None);
        for part in spec_trim.split(',') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| err("expected `combined`, `combined:N` or `f=F,nc=C,nd=D`"))?;
            let value: usize = value
                .trim()
                .parse()
                .map_err(|_| err("counts must be whole numbers"))?;
            if value == 0 || value > WORKERS_PER_ROLE_MAX {
                return Err(err("each count must be between 1 and 256"));
            }
            let slot = match key.trim() {
                "f" => &mut f,
                "nc" => &mut nc,
                "nd" => &mut nd,
                _ => return Err(err("keys are f, nc and nd")),
            };
            if slot.replace(value).is_some() {
                return Err(err("a key is given twice"));
            }
        }
        match (f, nc, nd) {
            (Some(f), Some(nc), Some(nd)) => Ok(Layout::split(f, nc, nd, cores)),
            _ => Err(err("a split layout needs all of f, nc and nd")),
        }
    }

    pub fn count(&self, role: Roles) -> usize {
        self.workers
            .iter()
            .filter(|w| w.roles.contains(role))
            .count()
    }

    pub fn is_combined(&self) -> bool {
        self.workers.iter().all(|w| w.roles == Roles::ALL)
    }

    pub fn threads(&self) -> usize {
        self.service_threads + self.workers.len()
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_combined() {
            write!(
                out,
                "threads: {} + {} combined (f+nc+nd) = {}, pinned",
                self.service_threads,
                self.workers.len(),
                self.threads()
            )?;
        } else {
            write!(
                out,
                "threads: {} + f {} + nc {} + nd {} = {}, pinned",
                self.service_threads,
                self.count(Roles::FILE),
                self.count(Roles::COMMAND),
                self.count(Roles::DATA),
                self.threads()
            )?;
        }
        for (i, w) in self.workers.iter().enumerate() {
            write!(out, " w{i}[{}]->cpu{:?}", w.roles, w.cores)?;
        }
        Ok(())
    }
}

/// The cores this process may run on (its affinity mask), in ascending order.
pub fn available_cores() -> Vec<usize> {
    // SAFETY: `set` is a plain bit array that sched_getaffinity fills; zeroed is a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer and size describe `set`, which lives for the call.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        return (0..n).collect();
    }
    // SAFETY: `set` was initialised by the successful call above; CPU_ISSET only reads it.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread to `cores`.
pub fn pin_current_thread(cores: &[usize]) -> std::io::Result<()> {
    // SAFETY: zeroed cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cores {
        // SAFETY: `set` is a valid cpu_set_t; CPU_SET bounds-checks against CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pointer and size describe `set`; pid 0 means the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        let cores = [0, 1];
        let c = Layout::parse("combined", &cores).unwrap();
        assert_eq!(c.workers.len(), 2);
        assert!(c.is_combined());
        assert_eq!(
            c.to_string().split(',').next().unwrap(),
            "threads: 3 + 2 combined (f+nc+nd) = 5"
        );
        let s = Layout::parse("f=2,nc=1,nd=2", &cores).unwrap();
        assert_eq!(
            (
                s.count(Roles::FILE),
                s.count(Roles::COMMAND),
                s.count(Roles::DATA)
            ),
            (2, 1, 2)
        );
        assert!(s
            .to_string()
            .starts_with("threads: 3 + f 2 + nc 1 + nd 2 = 8, pinned"));
        assert_eq!(s.workers[2].cores, vec![0]);
        assert_eq!(
            Layout::parse("combined:3", &cores).unwrap().workers.len(),
            3
        );
    }

    #[test]
    fn parse_errors_say_why() {
        for bad in [
            "f=1,nc=1",
            "f=0,nc=1,nd=1",
            "x=1",
            "combined:0",
            "f=1,f=2,nc=1,nd=1",
            "",
        ] {
            let e = Layout::parse(bad, &[0]).unwrap_err();
            assert!(!e.why.is_empty(), "{bad}");
        }
    }

    #[test]
    fn affinity_roundtrip() {
        let cores = available_cores();
        assert!(!cores.is_empty());
        let t = std::thread::spawn(move || {
            pin_current_thread(&cores[..1]).unwrap();
            available_cores()
        });
        assert_eq!(t.join().unwrap().len(), 1);
    }
}
