//! Test support for `tests/crash_consistency.rs`: ingests, replaces and deletes objects in a loop
//! so the test can SIGKILL it at random points and check what survives.
//!
//! Usage: `oasis-ingest-torture DATA_DIR SEED OPS`. Before each operation it prints
//! `begin <i> put <name> <len> <crc32c hex>` or `begin <i> del <name>`; after the operation has
//! committed it prints `ok <i>`. Each line is one `write(2)` to a pipe (atomic below PIPE_BUF), so
//! the reader never sees half a line. Content is generated from the seed, never read from anywhere.
//!
//! With `OASIS_TORTURE_ABORT_AT=<point>:<n>` (points as in `FaultPoint::parse`) the store aborts the
//! process the n-th time it reaches that step of the commit protocol, for deterministic crashes.
//!
//! This program must never be shipped or pointed at a real data directory: it deletes objects.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use oasis_engine::resource::{AccountLimits, ResourceLimits, ResourceManager};
use oasis_storage::{FaultPoint, Store, StoreConfig, StoreError, UploadOptions};

/// Objects the loop works on: few, so replaces and deletes are frequent.
const NAMES: [&str; 6] = [
    "a.ts",
    "b.mp4",
    "show/seg1.ts",
    "show/seg2.ts",
    "show/index.m3u8",
    "deep/x/y/z.bin",
];
/// Largest generated object.
const OBJECT_BYTES_MAX: u64 = 96 << 10;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: oasis-ingest-torture DATA_DIR SEED OPS");
        return ExitCode::from(2);
    }
    let data_dir = PathBuf::from(&args[1]);
    let (Ok(seed), Ok(ops)) = (args[2].parse::<u64>(), args[3].parse::<u64>()) else {
        eprintln!("SEED and OPS must be unsigned integers");
        return ExitCode::from(2);
    };
    match run(data_dir, seed, ops) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oasis-ingest-torture: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(data_dir: PathBuf, seed: u64, ops: u64) -> Result<(), StoreError> {
    let big = AccountLimits::new(1 << 40);
    let rm = ResourceManager::new(&ResourceLimits {
        memory_bytes: big,
        net_bps: Vec::new(),
        disk_read_bps: big,
        disk_space_bytes: big,
        connections: big,
        open_files: AccountLimits::new(64),
    });
    let mut config = StoreConfig::new(data_dir);
    config.open_files_max = 8;
    config.reserve_step_bytes = 16 << 10;
    if let Ok(spec) = std::env::var("OASIS_TORTURE_ABORT_AT") {
        let parsed = spec
            .split_once(':')
            .and_then(|(p, n)| Some((FaultPoint::parse(p)?, n.parse::<u64>().ok()?)));
        match parsed {
            Some(at) => config.abort_at = Some(at),
            None => {
                eprintln!("OASIS_TORTURE_ABORT_AT must be <point>:<n>, got {spec:?}");
                std::process::exit(2);
            }
        }
    }
    // The test process may briefly still hold LOCK through a forked-but-not-yet-exec'd child of
    // another test thread (fork copies descriptors; CLOEXEC closes them only at exec): retry.
    let mut attempts = 0;
    let (store, _report) = loop {
        match Store::open(config.clone(), rm.clone()) {
            Err(StoreError::Locked { .. }) if attempts < 200 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other?,
        }
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let stdout = std::io::stdout();
    let mut buf = vec![0u8; OBJECT_BYTES_MAX as usize];
    for i in 0..ops {
        let name = NAMES[rng.usize(..NAMES.len())];
        if rng.u32(..5) == 0 {
            say(&stdout, &format!("begin {i} del {name}"));
            match store.delete(name) {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        } else {
            let len = if rng.u32(..10) == 0 {
                0
            } else {
                rng.usize(..=OBJECT_BYTES_MAX as usize)
            };
            rng.fill(&mut buf[..len]);
            let content = &buf[..len];
            let crc = crc32c::crc32c(content);
            say(&stdout, &format!("begin {i} put {name} {len} {crc:08x}"));
            let known = rng.bool();
            let mut upload = store.create_upload(
                name,
                UploadOptions {
                    expected_len: known.then_some(len as u64),
                    ..Default::default()
                },
            )?;
            let mut rest = content;
            while !rest.is_empty() {
                let n = rng.usize(1..=20_000).min(rest.len());
                upload.write_all(&rest[..n])?;
                rest = &rest[n..];
            }
            upload.finish()?;
        }
        say(&stdout, &format!("ok {i}"));
    }
    Ok(())
}

/// One line, one write.
fn say(stdout: &std::io::Stdout, line: &str) {
    let mut out = stdout.lock();
    let bytes = format!("{line}\n");
    // A closed pipe means the test is gone; nothing useful to do but stop.
    if out
        .write_all(bytes.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}
