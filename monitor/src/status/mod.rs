//! The status datagram: what one Oasis process tells its monitors every interval, its bounds,
//! and its checks on arrival (`auth`: HMAC-SHA256 and the replay window; `wire`: the bytes).
//!
//! Sans-IO: nothing here opens a socket or reads a clock. Every list and string has a bound,
//! and [`MAX_DATAGRAM_BYTES`] (checked at compile time against the bounds) keeps any encoded
//! status within one unfragmented datagram. The byte layout is drawn in `wire.rs`.

mod auth;
mod wire;

pub(crate) use auth::{mac, mac_ok};
pub use auth::{Intake, IntakeCounts, Rejection, ReplayWindow, MAC_BYTES};
pub use wire::{decode, encode, DecodeError, Decoded, MAGIC, VERSION};

use serde::Serialize;

/// Longest node id, in bytes.
pub const NODE_ID_BYTES_MAX: usize = 48;
/// Longest software version string, in bytes.
pub const VERSION_BYTES_MAX: usize = 24;
/// Most Resource Manager accounts in one status.
pub const ACCOUNTS_MAX: usize = 10;
/// Longest account (resource) name, in bytes.
pub const ACCOUNT_NAME_BYTES_MAX: usize = 16;
/// Most log streams (a logd's) in one status.
pub const STREAMS_MAX: usize = 8;
/// Longest stream name, in bytes.
pub const STREAM_NAME_BYTES_MAX: usize = 24;
/// Most supervised processes (an agent's) in one status.
pub const PROCESSES_MAX: usize = 8;
/// Longest process name, in bytes.
pub const PROCESS_NAME_BYTES_MAX: usize = 16;
/// Most round-trip times to peers in one status (what is left of the size bound after every
/// other list at its bound holds 20 entries of 8 bytes).
pub const PEERS_MAX: usize = 20;
/// The largest encoded datagram, MAC included: fits one IPv6 minimum-MTU packet's payload.
pub const MAX_DATAGRAM_BYTES: usize = 1200;

/// The tag that names a node in peer lists and round-trip reports: FNV-1a (32 bits) of its id.
/// Every monitor computes the same tag for a node, so a node reporting to several monitors
/// names its peers the same way to all. Two ids may share a tag; the monitor then shows
/// neither's entries (see `render.rs`).
pub fn node_tag(node: &str) -> u32 {
    node.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// What kind of process sent a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `oasis serve`, a media server.
    Serve,
    /// `oasis logd`, a log server.
    Logd,
    /// `oasis agent`, a restart agent.
    Agent,
    /// `oasis monitor`.
    Monitor,
}

impl Role {
    /// The role's wire code.
    pub fn code(self) -> u8 {
        match self {
            Role::Serve => 1,
            Role::Logd => 2,
            Role::Agent => 3,
            Role::Monitor => 4,
        }
    }

    /// The role of a wire code, if it is one.
    pub fn from_code(code: u8) -> Option<Role> {
        Some(match code {
            1 => Role::Serve,
            2 => Role::Logd,
            3 => Role::Agent,
            4 => Role::Monitor,
            _ => return None,
        })
    }

    /// The role's name, as shown and as the `role` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Logd => "logd",
            Role::Agent => "agent",
            Role::Monitor => "monitor",
        }
    }
}

/// A Resource Manager level, as the engine's `Level` (kept apart: this crate has no engine).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Below every warning threshold.
    #[default]
    Normal = 0,
    /// Some source above its warning threshold.
    Warning = 1,
    /// Some source above its critical threshold.
    Critical = 2,
}

impl Level {
    /// The level of a wire code, if it is one.
    pub fn from_code(code: u8) -> Option<Level> {
        Some(match code {
            0 => Level::Normal,
            1 => Level::Warning,
            2 => Level::Critical,
            _ => return None,
        })
    }
}

/// One Resource Manager account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Account {
    /// The resource's name (`memory_bytes`, `net_bps[0]`, ...).
    pub resource: String,
    /// In use now.
    pub used: u64,
    /// The account's limit.
    pub limit: u64,
    /// The account's level.
    pub level: Level,
}

/// One log stream of a logd and its durable end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stream {
    /// The stream's name.
    pub name: String,
    /// Bytes durable (synced) so far.
    pub durable_offset: u64,
}

/// One process an agent supervises.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Process {
    /// Its name in the agent's file.
    pub name: String,
    /// Its state (the agent's wire code: 0 starting, 1 running, 2 backing off, 3 stopped,
    /// 4 flapping).
    pub state: u8,
    /// Restarts so far.
    pub restarts: u32,
    /// Its pid while it runs (0: none).
    pub pid: u32,
}

/// The round-trip time this node measured to one peer (a small UDP echo).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rtt {
    /// The peer's tag ([`node_tag`] of its id), as the monitor's peer list gave it.
    pub peer: u32,
    /// The latest round trip, microseconds (at least 1).
    pub rtt_us: u32,
}

/// A pool node's view of its pool (a `serve` in a pool; version 3 datagrams).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolSummary {
    /// Whether the node's last heartbeat reached the shared catalog (it takes writes).
    pub catalog_reachable: bool,
    /// Nodes of the pool it counts live, itself included.
    pub nodes_live: u16,
    /// Nodes of the pool it knows of.
    pub nodes_total: u16,
    /// Objects with fewer than the pool's replica count on live nodes, as last counted
    /// (`None`: not counted yet, or the count failed).
    pub under_replicated: Option<u32>,
    /// Copies and deletes queued on this node for other nodes.
    pub replication_queued: u32,
}

/// Names of [`Process::state`] codes.
pub fn process_state_name(code: u8) -> &'static str {
    match code {
        0 => "starting",
        1 => "running",
        2 => "backoff",
        3 => "stopped",
        4 => "flapping",
        _ => "unknown",
    }
}

/// What one process reports. Counters (`*_total`) only grow while the process runs; the
/// monitor differentiates them into rates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Names the node across restarts (host and listen address, or as configured).
    pub node: String,
    /// What kind of process.
    pub role: Role,
    /// The software version.
    pub version: String,
    /// Milliseconds since the process started.
    pub uptime_ms: u64,
    /// The process id.
    pub pid: u32,
    /// Grows by one per datagram and across restarts (the sender starts it from the clock).
    pub seq: u64,
    /// The sender's interval: the monitor calls the node stale after three missed.
    pub interval_ms: u32,
    /// How many times the configuration was put in force (1 at start).
    pub config_generation: u64,
    /// The highest Resource Manager level in force.
    pub level: Level,
    /// The Resource Manager's accounts (at most [`ACCOUNTS_MAX`]).
    pub accounts: Vec<Account>,
    /// Responses with a body being sent now (a logd: its connections).
    pub active_streams: u32,
    /// Bytes sent so far.
    pub sent_bytes_total: u64,
    /// Bytes received so far.
    pub received_bytes_total: u64,
    /// Requests answered so far.
    pub requests_total: u64,
    /// Errors so far (a server's 5xx answers; an agent's unplanned process exits).
    pub errors_total: u64,
    /// Warning events the Resource Manager raised so far.
    pub warning_events_total: u64,
    /// Critical events the Resource Manager raised so far.
    pub critical_events_total: u64,
    /// A logd's streams (at most [`STREAMS_MAX`]).
    pub streams: Vec<Stream>,
    /// An agent's processes (at most [`PROCESSES_MAX`]).
    pub processes: Vec<Process>,
    /// Round-trip times to peers (at most [`PEERS_MAX`]; version 2 datagrams).
    pub rtts: Vec<Rtt>,
    /// A pool node's view of its pool (version 3 datagrams; `None` outside a pool).
    pub pool: Option<PoolSummary>,
}

impl Status {
    /// An empty status of `node` in `role`, for senders to fill in.
    pub fn new(node: &str, role: Role) -> Status {
        Status {
            node: node.to_string(),
            role,
            version: String::new(),
            uptime_ms: 0,
            pid: 0,
            seq: 0,
            interval_ms: 1000,
            config_generation: 1,
            level: Level::Normal,
            accounts: Vec::new(),
            active_streams: 0,
            sent_bytes_total: 0,
            received_bytes_total: 0,
            requests_total: 0,
            errors_total: 0,
            warning_events_total: 0,
            critical_events_total: 0,
            streams: Vec::new(),
            processes: Vec::new(),
            rtts: Vec::new(),
            pool: None,
        }
    }

    /// Cuts every list and string to its bound (strings at a character boundary), so the
    /// status always encodes. Senders call it; what is cut is not sent.
    pub fn fit(&mut self) {
        cut(&mut self.node, NODE_ID_BYTES_MAX);
        cut(&mut self.version, VERSION_BYTES_MAX);
        self.accounts.truncate(ACCOUNTS_MAX);
        for a in &mut self.accounts {
            cut(&mut a.resource, ACCOUNT_NAME_BYTES_MAX);
        }
        self.streams.truncate(STREAMS_MAX);
        for s in &mut self.streams {
            cut(&mut s.name, STREAM_NAME_BYTES_MAX);
        }
        self.processes.truncate(PROCESSES_MAX);
        for p in &mut self.processes {
            cut(&mut p.name, PROCESS_NAME_BYTES_MAX);
        }
        self.rtts.truncate(PEERS_MAX);
    }
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_strings_at_character_boundaries_and_lists_to_bounds() {
        let mut s = Status::new(&"é".repeat(40), Role::Serve);
        s.processes = vec![Process::default(); PROCESSES_MAX + 3];
        s.fit();
        assert_eq!(s.node.len(), NODE_ID_BYTES_MAX);
        assert_eq!(s.processes.len(), PROCESSES_MAX);
        let mut odd = "aé".repeat(30);
        cut(&mut odd, 2);
        assert_eq!(odd, "a");
    }

    #[test]
    fn codes_round_trip() {
        for r in [Role::Serve, Role::Logd, Role::Agent, Role::Monitor] {
            assert_eq!(Role::from_code(r.code()), Some(r));
        }
        assert_eq!(Role::from_code(0), None);
        assert_eq!(Level::from_code(2), Some(Level::Critical));
        assert_eq!(Level::from_code(3), None);
    }
}
