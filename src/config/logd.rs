//! `[logd]`: the log server (`oasis logd`), its checks and the settings derived from it.
//!
//! A logd shares the file's `[server] log_level`, `[engine]` and `[resources] memory_bytes`
//! with `oasis serve`; everything of its own is here. Several logds on one machine take
//! different `listen` addresses and `data_dir`s (a file each, or `--listen`/`--data-dir`).
//! Pure: nothing is opened or bound here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use oasis_engine::resource::{AccountLimits, ResourceLimits};
use oasis_engine::EngineConfig;

use super::check::Problems;
use super::Config;

/// The buffer pool a logd takes at most: record bodies leave by `sendfile`, so it needs few.
const LOGD_POOL_BYTES_MAX: usize = 16 << 20;
/// Each connection's input buffer in the engine (frames are decoded as they arrive).
const LOGD_INPUT_BYTES: usize = 64 * 1024;

/// `[logd]`: the log server's own settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogdSection {
    /// Addresses to listen on (`--listen` replaces them).
    pub listen: Vec<SocketAddr>,
    /// The streams' segment files (`--data-dir` replaces it); one logd per directory.
    pub data_dir: PathBuf,
    /// At most this long from an append's write to its `fdatasync` (an append a shipper waits
    /// for is synced as soon as it is written).
    pub commit_interval_ms: u64,
    /// Sync as soon as this many bytes are unsynced.
    pub commit_bytes: u64,
    /// `fdatasync` at each commit (the default). `false` acknowledges bytes once written to the
    /// page cache: they survive a logd crash, not a machine crash or power loss.
    pub fsync: bool,
    /// Connections at once (shippers and readers); more are refused with `REFUSE` 4.
    pub connections_max: u64,
    /// Streams held at most; a `HELLO` for a new one past it is refused with `REFUSE` 4.
    pub streams_max: usize,
    /// Writer threads: each writes and syncs the streams whose names hash to it.
    pub writers: usize,
    /// Segment files held open for writing at most (one per stream being written; past it the
    /// least recently written is closed and reopened at its next append).
    pub open_segments_max: usize,
    /// Provided receive buffers per worker (a power of two; 0: each connection receives into
    /// its own buffer). A logd's own, not `[engine] recv_buffers`: shippers send frames of up to
    /// 256 KiB, the media server's clients requests of a few hundred bytes.
    pub recv_buffers: usize,
    /// Size of one provided receive buffer (512-65536). 32 KiB buffers took a stream in an
    /// eighth of the receives 4 KiB ones did, and a fifth less server CPU per byte (2026-12-07).
    pub recv_buffer_bytes: usize,
}

impl Default for LogdSection {
    fn default() -> Self {
        LogdSection {
            listen: vec!["127.0.0.1:7420".parse().expect("literal")],
            data_dir: PathBuf::from("./oasis-logd"),
            commit_interval_ms: 5,
            commit_bytes: 1 << 20,
            fsync: true,
            connections_max: 256,
            streams_max: 1024,
            writers: 4,
            open_segments_max: 1024,
            recv_buffers: 512,
            recv_buffer_bytes: 32 * 1024,
        }
    }
}

/// What `oasis logd` options replace in the file.
#[derive(Clone, Debug, Default)]
pub struct LogdOverrides {
    /// `--listen`, repeated (none: the file's).
    pub listen: Vec<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
}

impl LogdOverrides {
    /// Puts the options over the file's values.
    pub fn apply(&self, cfg: &mut Config) {
        if !self.listen.is_empty() {
            cfg.logd.listen = self.listen.clone();
        }
        if let Some(d) = &self.data_dir {
            cfg.logd.data_dir = d.clone();
        }
    }
}

/// Everything a logd needs, derived from a checked [`Config`].
pub struct ResolvedLogd {
    /// The engine's settings (a small buffer pool: bodies leave by `sendfile`).
    pub engine: EngineConfig,
    /// The Resource Manager's accounts (memory, connections).
    pub limits: ResourceLimits,
    /// The data directory and its group commits.
    pub store: oasis_log::store::StoreConfig,
}

impl Config {
    pub(super) fn check_logd(&self, out: &mut Problems) {
        let l = &self.logd;
        if l.listen.is_empty() {
            out.add("logd", "listen", "needs at least one address")
                .hint("listen = [\"127.0.0.1:7420\"]");
        }
        for (i, a) in l.listen.iter().enumerate() {
            if l.listen[..i].contains(a) {
                out.add("logd", "listen", format!("{a} is listed twice"));
            }
        }
        let ranges: [(&'static str, u64, u64, u64, &str); 6] = [
            (
                "commit_interval_ms",
                l.commit_interval_ms,
                1,
                10_000,
                "commit_interval_ms = 5",
            ),
            (
                "commit_bytes",
                l.commit_bytes,
                4096,
                1 << 30,
                "commit_bytes = 1048576",
            ),
            (
                "connections_max",
                l.connections_max,
                1,
                65_536,
                "for more, run another logd on another port",
            ),
            ("writers", l.writers as u64, 1, 64, "writers = 4"),
            (
                "open_segments_max",
                l.open_segments_max as u64,
                16,
                1_000_000,
                "open_segments_max = 1024",
            ),
            (
                "streams_max",
                l.streams_max as u64,
                1,
                1_000_000,
                "streams_max = 1024",
            ),
        ];
        super::check::check_recv_buffers(out, "logd", l.recv_buffers, l.recv_buffer_bytes);
        for (key, value, lo, hi, hint) in ranges {
            if !(lo..=hi).contains(&value) {
                out.add(
                    "logd",
                    key,
                    format!("must be between {lo} and {hi} (got {value})"),
                )
                .hint(hint);
            }
        }
    }

    /// Derives a logd's engine, Resource Manager and store settings. `cores` are the cores this
    /// process may use.
    pub fn resolve_logd(&self, cores: &[usize]) -> Result<ResolvedLogd> {
        let l = &self.logd;
        let mut engine = self.resolve_engine(cores)?;
        let pool_bytes = self.engine.buffer_pool_bytes.min(LOGD_POOL_BYTES_MAX);
        engine.chunks = (pool_bytes / self.engine.chunk_bytes).max(4);
        // Segment files are read through the page cache, whatever [storage] read_mode says.
        engine.direct_reads = false;
        engine.input_bytes_max = LOGD_INPUT_BYTES;
        engine.recv_buffers = l.recv_buffers;
        engine.recv_buffer_bytes = l.recv_buffer_bytes;
        engine.connections_per_worker_max = l.connections_max as usize;
        let memory = match self.resources.memory_bytes {
            0 => super::host_memory_bytes() / 4,
            m => m,
        };
        let unlimited = AccountLimits::new(u64::MAX);
        let limits = ResourceLimits {
            memory_bytes: AccountLimits::new(memory),
            net_bps: l.listen.iter().map(|_| unlimited).collect(),
            disk_read_bps: unlimited,
            disk_space_bytes: unlimited,
            connections: AccountLimits::new(l.connections_max),
            open_files: unlimited,
        };
        let mut store = oasis_log::store::StoreConfig::new(&l.data_dir);
        store.commit.interval = Duration::from_millis(l.commit_interval_ms);
        store.commit.bytes = l.commit_bytes;
        store.commit.sync = l.fsync;
        store.streams_max = l.streams_max;
        store.writers = l.writers;
        store.tails_max = l.open_segments_max;
        // One batch in flight per connection: the queue never refuses one.
        store.queue_max = l.connections_max as usize;
        Ok(ResolvedLogd {
            engine,
            limits,
            store,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logd_values_are_checked_and_located() {
        let err = Config::parse(
            "[logd]\ncommit_interval_ms = 0\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("t:2:22: [logd] commit_interval_ms: must be between 1 and 10000 (got 0)"),
            "{err}"
        );
        assert!(
            err.contains("[logd] listen: 127.0.0.1:1 is listed twice"),
            "{err}"
        );
        let err = Config::parse("[logd]\nrecv_buffers = 300\nrecv_buffer_bytes = 100\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "[logd] recv_buffers: must be 0 (off) or a power of two up to 32768 (got 300)"
            ),
            "{err}"
        );
        assert!(
            err.contains("[logd] recv_buffer_bytes: must be between 512 and 65536 (got 100)"),
            "{err}"
        );
    }

    #[test]
    fn logd_settings_reach_the_store_and_engine() {
        let cfg = Config::parse(
            "[logd]\ncommit_interval_ms = 7\ncommit_bytes = 65536\nconnections_max = 10\nstreams_max = 3\nfsync = false\nwriters = 3\nopen_segments_max = 99\nrecv_buffers = 64\nrecv_buffer_bytes = 8192\n",
            "t",
        )
        .unwrap();
        let r = cfg.resolve_logd(&[0]).unwrap();
        assert_eq!(r.store.commit.interval, Duration::from_millis(7));
        assert_eq!(r.store.commit.bytes, 65536);
        assert!(!r.store.commit.sync);
        assert_eq!(r.store.writers, 3);
        assert_eq!(r.store.tails_max, 99);
        assert!(
            Config::parse("", "t")
                .unwrap()
                .resolve_logd(&[0])
                .unwrap()
                .store
                .commit
                .sync
        );
        assert_eq!(r.store.streams_max, 3);
        assert_eq!(r.engine.connections_per_worker_max, 10);
        assert_eq!(
            (r.engine.recv_buffers, r.engine.recv_buffer_bytes),
            (64, 8192)
        );
        // The [engine] keys are the media server's: a logd keeps its own defaults.
        let both = Config::parse("[engine]\nrecv_buffer_bytes = 2048\n", "t").unwrap();
        assert_eq!(r.limits.connections.limit, 10);
        let own = both.resolve_logd(&[0]).unwrap().engine;
        assert_eq!((own.recv_buffers, own.recv_buffer_bytes), (512, 32768));
    }
}
