//! Proves that a crash at any point of ingest, replace, delete or recovery leaves the old or the
//! new state, never a partial object, and loses nothing that was acknowledged.
//!
//! How: the test-support binary `oasis-ingest-torture` puts, replaces and deletes a few objects in
//! a loop, printing `begin <op>` before and `ok <i>` after each committed operation. The test kills
//! it with SIGKILL after a random delay (seeded; the seed is printed, set OASIS_CRASH_SEED to
//! replay), reopens the store, and checks against a model built from the acknowledged lines:
//! - every visible object's bytes match its catalog size and CRC-32C (no partial object);
//! - each name shows the state of its last acknowledged operation, or of the one in flight at
//!   the kill (which may or may not have reached its commit point);
//! - the catalog matches the files: no temp files, no orphan files, and a second reopen has
//!   nothing to repair.
//!
//! The same data directory is reused across iterations, so recovery itself is also killed.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const ITERATIONS: u64 = 30;

/// Size and CRC of a put, or `None` for a delete.
type State = Option<(u64, u32)>;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn parse_begin(line: &str) -> (String, State) {
    let parts: Vec<&str> = line.split(' ').collect();
    match parts[2] {
        "put" => (
            parts[3].to_string(),
            Some((
                parts[4].parse().unwrap(),
                u32::from_str_radix(parts[5], 16).unwrap(),
            )),
        ),
        "del" => (parts[3].to_string(), None),
        other => panic!("unknown op {other} in {line:?}"),
    }
}

#[test]
fn sigkill_at_random_points_never_shows_partial_or_loses_acknowledged_state() {
    let seed = std::env::var("OASIS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash consistency seed: {seed} (replay with OASIS_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // What the store must show for each name, from acknowledged operations of all iterations.
    let mut model: HashMap<String, State> = HashMap::new();
    let mut acked_total = 0u64;

    for iteration in 0..ITERATIONS {
        let child_seed = rng.next();
        let delay_ms = 1 + rng.next() % 200;
        let mut child = Command::new(env!("CARGO_BIN_EXE_oasis-ingest-torture"))
            .arg(&data)
            .arg(child_seed.to_string())
            .arg("1000000")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn torture binary");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line.ends_with('\n') => lines.push(line.trim_end().to_string()),
                    Ok(_) => break, // a torn last line is ignored
                }
            }
            lines
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL");
        let status = child.wait().unwrap();
        assert!(
            !status.success() || status.code() == Some(0),
            "child failed: {status}"
        );
        let lines = reader.join().unwrap();

        // Replay into the model; remember the one in flight.
        let mut in_flight: Option<(String, State)> = None;
        for line in &lines {
            if line.starts_with("begin ") {
                assert!(in_flight.is_none(), "two begins without ok: {line}");
                in_flight = Some(parse_begin(line));
            } else if line.starts_with("ok ") {
                let (name, state) = in_flight.take().expect("ok without begin");
                model.insert(name, state);
                acked_total += 1;
            } else {
                panic!("unexpected line {line:?}");
            }
        }

        // Reopen and check.
        let (store, _report) = open(&data);
        let mut expected = model.clone();
        for meta in store.list() {
            store
                .verify(&meta)
                .unwrap_or_else(|e| panic!("seed {seed} iteration {iteration}: {e}"));
            let visible: State = Some((meta.size_bytes, meta.crc32c));
            let acked = expected.remove(&meta.name).flatten();
            let ok_in_flight = in_flight
                .as_ref()
                .is_some_and(|(n, s)| *n == meta.name && *s == visible);
            assert!(
                acked == visible || ok_in_flight,
                "seed {seed} iteration {iteration}: {} shows {visible:?}, acknowledged {acked:?}, in flight {in_flight:?}",
                meta.name
            );
            if ok_in_flight {
                model.insert(meta.name.clone(), visible);
            }
        }
        for (name, state) in expected {
            let deleted_in_flight = in_flight
                .as_ref()
                .is_some_and(|(n, s)| *n == name && s.is_none());
            assert!(
                state.is_none() || deleted_in_flight,
                "seed {seed} iteration {iteration}: acknowledged {name} = {state:?} is missing"
            );
            if deleted_in_flight {
                model.insert(name, None);
            }
        }
        // The catalog matches the files.
        assert!(dir_entries(&data.join("tmp")).is_empty());
        assert_eq!(
            object_files(&data).len(),
            store.len(),
            "seed {seed} iteration {iteration}"
        );
        drop(store);
        let (_store, again) = open(&data);
        assert!(
            again.is_clean(),
            "seed {seed} iteration {iteration}: second recovery had work: {again:?}"
        );
    }
    println!("{ITERATIONS} kills, {acked_total} acknowledged operations checked");
    assert!(
        acked_total > 0,
        "the torture binary never acknowledged anything; delays too short?"
    );
}
