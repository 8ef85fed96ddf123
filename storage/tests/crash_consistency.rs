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
//!
//! A second test makes the crashes deterministic: through the store's fault-injection seam
//! (`OASIS_TORTURE_ABORT_AT`), the binary aborts exactly between two steps of the ingest/delete
//! protocol, and the test checks the outcome FORMAT.md promises for that step: before the catalog
//! commit the old state is visible, after it the new one.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use support::*;

const ITERATIONS: u64 = 30;

/// Size and CRC of a put, or `None` for a delete.
type State = Option<(u64, u32)>;

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

/// Runs the torture binary until it is killed after `kill_after` (or aborts by itself), and
/// returns its acknowledged-operation lines and exit status.
fn run_torture(
    data: &Path,
    seed: u64,
    kill_after: Option<Duration>,
    abort_at: Option<&str>,
) -> (Vec<String>, ExitStatus) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oasis-ingest-torture"));
    cmd.arg(data)
        .arg(seed.to_string())
        .arg(if abort_at.is_some() { "500" } else { "1000000" })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    match abort_at {
        Some(spec) => cmd.env("OASIS_TORTURE_ABORT_AT", spec),
        None => cmd.env_remove("OASIS_TORTURE_ABORT_AT"),
    };
    // Any core dump of an aborted child lands in the test's temp dir, not the source tree.
    cmd.current_dir(data.parent().expect("data dir has a parent"));
    let mut child = cmd.spawn().expect("spawn torture binary");
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
    if let Some(delay) = kill_after {
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL");
    }
    let status = child.wait().unwrap();
    (reader.join().unwrap(), status)
}

/// Replays acknowledged lines into `model`; returns the operation in flight at the crash, if any.
fn replay(
    lines: &[String],
    model: &mut HashMap<String, State>,
    acked_total: &mut u64,
) -> Option<(String, State)> {
    let mut in_flight: Option<(String, State)> = None;
    for line in lines {
        if line.starts_with("begin ") {
            assert!(in_flight.is_none(), "two begins without ok: {line}");
            in_flight = Some(parse_begin(line));
        } else if line.starts_with("ok ") {
            let (name, state) = in_flight.take().expect("ok without begin");
            model.insert(name, state);
            *acked_total += 1;
        } else {
            panic!("unexpected line {line:?}");
        }
    }
    in_flight
}

/// Reopens the store and checks it against the model; folds the in-flight operation into the
/// model if it turned out committed, and returns whether it did.
fn check_reopened(
    data: &Path,
    model: &mut HashMap<String, State>,
    in_flight: &Option<(String, State)>,
    ctx: &str,
) -> bool {
    let (store, _report) = open(data);
    let mut expected = model.clone();
    let mut in_flight_visible = false;
    for meta in store.list() {
        store.verify(&meta).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let visible: State = Some((meta.size_bytes, meta.crc32c));
        let acked = expected.remove(&meta.name).flatten();
        let ok_in_flight = in_flight
            .as_ref()
            .is_some_and(|(n, s)| *n == meta.name && *s == visible);
        assert!(
            acked == visible || ok_in_flight,
            "{ctx}: {} shows {visible:?}, acknowledged {acked:?}, in flight {in_flight:?}",
            meta.name
        );
        if ok_in_flight && acked != visible {
            model.insert(meta.name.clone(), visible);
            in_flight_visible = true;
        }
    }
    for (name, state) in expected {
        let deleted_in_flight = in_flight
            .as_ref()
            .is_some_and(|(n, s)| *n == name && s.is_none());
        assert!(
            state.is_none() || deleted_in_flight,
            "{ctx}: acknowledged {name} = {state:?} is missing"
        );
        if deleted_in_flight && state.is_some() {
            model.insert(name, None);
            in_flight_visible = true;
        }
    }
    // The catalog matches the files.
    assert!(
        dir_entries(&data.join("tmp")).is_empty(),
        "{ctx}: temp files left"
    );
    assert_eq!(
        object_files(data).len(),
        store.len(),
        "{ctx}: files and catalog differ"
    );
    drop(store);
    let (store, again) = open(data);
    assert!(
        again.is_clean(),
        "{ctx}: second recovery had work: {again:?}"
    );
    drop(store);
    // Every file carries a record that agrees with its row (kill -9 during record writes too).
    let fsck = loop {
        match oasis_storage::fsck(data, true) {
            // A sibling test's fork may hold the just-dropped LOCK for a moment.
            Err(oasis_storage::StoreError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => break other.unwrap_or_else(|e| panic!("{ctx}: fsck: {e}")),
        }
    };
    assert!(fsck.is_clean(), "{ctx}: fsck after recovery: {fsck:?}");
    in_flight_visible
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
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // What the store must show for each name, from acknowledged operations of all iterations.
    let mut model: HashMap<String, State> = HashMap::new();
    let mut acked_total = 0u64;
    for iteration in 0..ITERATIONS {
        let child_seed = rng.u64(..);
        let delay = Duration::from_millis(rng.u64(1..=200));
        let (lines, status) = run_torture(&data, child_seed, Some(delay), None);
        assert!(
            status.code().is_none_or(|c| c == 0),
            "seed {seed} iteration {iteration}: child failed: {status}"
        );
        let in_flight = replay(&lines, &mut model, &mut acked_total);
        check_reopened(
            &data,
            &mut model,
            &in_flight,
            &format!("seed {seed} iteration {iteration}"),
        );
    }
    println!("{ITERATIONS} kills, {acked_total} acknowledged operations checked");
    assert!(
        acked_total > 0,
        "the torture binary never acknowledged anything; delays too short?"
    );
}

#[test]
fn abort_between_protocol_steps_gives_exactly_old_or_new_state() {
    // (point, visible after the crash: the new state?)
    let points = [
        ("upload_synced", false),
        ("upload_renamed", false),
        ("upload_committed", true),
        ("upload_indexed", true),
        ("delete_committed", true),
    ];
    for (point, new_visible) in points {
        let mut checked = 0;
        // The 3rd time the point is reached, so earlier operations (and usually replaces) exist.
        for nth in [1, 3] {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            let seed = 42 + nth;
            let (lines, status) = run_torture(&data, seed, None, Some(&format!("{point}:{nth}")));
            assert_eq!(
                status.signal(),
                Some(libc::SIGABRT),
                "{point}:{nth} was never reached: {status}"
            );
            let mut model = HashMap::new();
            let in_flight = replay(&lines, &mut model, &mut 0);
            let in_flight = in_flight.expect("the abort happens inside an operation");
            let was = model.get(&in_flight.0).cloned().flatten();
            let changes = was != in_flight.1;
            let visible = check_reopened(
                &data,
                &mut model,
                &Some(in_flight.clone()),
                &format!("{point}:{nth}"),
            );
            if changes {
                assert_eq!(
                    visible, new_visible,
                    "{point}:{nth}: in-flight {in_flight:?} visible = {visible}"
                );
                checked += 1;
            }
        }
        assert!(
            checked > 0,
            "{point}: no crash interrupted an operation that changes state"
        );
    }
}
