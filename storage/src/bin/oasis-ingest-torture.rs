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

/// SplitMix64: tiny, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

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
    let mut rng = Rng(seed);
    let stdout = std::io::stdout();
    let mut buf = vec![0u8; OBJECT_BYTES_MAX as usize];
    for i in 0..ops {
        let name = NAMES[rng.below(NAMES.len() as u64) as usize];
        if rng.below(5) == 0 {
            say(&stdout, &format!("begin {i} del {name}"));
            match store.delete(name) {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        } else {
            let len = if rng.below(10) == 0 {
                0
            } else {
                rng.below(OBJECT_BYTES_MAX + 1) as usize
            };
            for b in buf[..len].iter_mut() {
                *b = rng.next() as u8;
            }
            let content = &buf[..len];
            let crc = crc32c::crc32c(content);
            say(&stdout, &format!("begin {i} put {name} {len} {crc:08x}"));
            let known = rng.below(2) == 0;
            let mut upload = store.create_upload(
                name,
                UploadOptions {
                    expected_len: known.then_some(len as u64),
                    ..Default::default()
                },
            )?;
            let mut rest = content;
            while !rest.is_empty() {
                let n = (1 + rng.below(20_000) as usize).min(rest.len());
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
