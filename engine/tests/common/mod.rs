//! What the engine's integration tests share: a small engine on a loopback port.

use std::sync::Arc;

use oasis_engine::resource::{AccountLimits, ResourceLimits};
use oasis_engine::{Engine, EngineConfig, Layout, Listener, ResourceManager, Service};

/// An engine with two combined workers, 100 connections, eight 64 KiB chunks and `service` on
/// an ephemeral loopback port; and its Resource Manager.
pub fn small_engine(service: Arc<dyn Service>) -> (Engine, Arc<ResourceManager>) {
    let rm = ResourceManager::new(&ResourceLimits {
        memory_bytes: AccountLimits::new(1 << 30),
        net_bps: vec![AccountLimits::new(u64::MAX)],
        disk_read_bps: AccountLimits::new(u64::MAX),
        disk_space_bytes: AccountLimits::new(u64::MAX),
        connections: AccountLimits::new(100),
        open_files: AccountLimits::new(100),
    });
    let mut cfg = EngineConfig::with_layout(Layout::parse("combined", &[0, 1]).unwrap());
    cfg.chunk_bytes = 64 * 1024;
    cfg.chunks = 8;
    cfg.connections_per_worker_max = 64;
    let engine = Engine::start(
        cfg,
        vec![Listener {
            addr: "127.0.0.1:0".parse().unwrap(),
            service,
        }],
        Arc::clone(&rm),
        oasis_engine::probe::probe().unwrap(),
    )
    .unwrap();
    (engine, rm)
}
