//! The log checker, in the spirit of Jepsen's total-queue check: what shippers were given, the
//! servers must hold, every byte once, whatever happened to servers, connections and shippers
//! on the way.
//!
//! Three real `oasis logd` processes, each with its own data directory (the third on a small
//! tmpfs that fills), each behind a fault-injecting proxy (`checker/proxy.rs`). Four real
//! `oasis log-ship` processes send to the three proxies: two follow files the checker keeps
//! appending to (one of them rotated by rename now and then), one reads the checker's lines from
//! a pipe on its standard input, and one more follows a file and is the one `kill -9`ed most.
//! A seeded schedule (`checker/faults.rs`) then starts faults one after another: `kill -9` a
//! server and restart it after a pause; SIGSTOP and SIGCONT a server; cut every connection to a
//! server; stall them one way or both; `kill -9` a shipper and restart it; fill the tmpfs to the
//! last byte and free it. Then the faults stop, the writers stop (the pipe closes), the shippers
//! get a bounded time to have everything acknowledged, the shippers and servers are stopped with
//! SIGTERM (each must exit 0), and each stream, assembled from the three data directories, is
//! compared with its source byte for byte: lost, duplicated and corrupt bytes are printed and
//! must all be 0.
//!
//! Knobs (environment): `OASIS_CHECKER_FAULTS` (default 200, about two minutes),
//! `OASIS_CHECKER_SEED` (default: drawn, and printed first so a failure replays with it),
//! `OASIS_CHECKER_INTERVAL_MS` (mean time between faults, default 500),
//! `OASIS_CHECKER_RATE` (bytes per second each writer writes, default 100000). A long run:
//! `OASIS_CHECKER_FAULTS=1000 cargo test --release --test log_checker -- --nocapture`.
//!
//! Needs root to mount the tmpfs; without it the test fails saying so, unless
//! `OASIS_ALLOW_SKIP=1` outside CI. Nothing asserts on timing: the waits are for conditions,
//! bounded so a stuck shipper fails the run instead of hanging it. On a failure the run's
//! directory (data, sources, every process's log) is kept and named.

mod checker;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use checker::faults::{Chaos, Fill, World};
use checker::procs::{Logd, Shipper};
use checker::proxy::Proxy;
use checker::sources::{spawn_file, spawn_pipe, Source};
use checker::verify::{verify, Verdict};
use support::Tmpfs;

/// The longest the shippers get, once the faults stop, to have everything acknowledged.
const DRAIN_MAX: Duration = Duration::from_secs(180);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The streams: (name, tag of its lines).
const STREAMS: [(&str, &str); 4] = [
    ("checker/rotated", "rotated"),
    ("checker/file", "file"),
    ("checker/stdin", "stdin"),
    ("checker/killed", "killed"),
];

/// The largest durable end any server reports for `stream`.
fn held_end(world: &World, stream: &str) -> u64 {
    world
        .servers
        .iter()
        .filter_map(|s| s.addr)
        .filter_map(|a| {
            oasis_log::client::list(&a.to_string(), stream, Duration::from_secs(2)).ok()
        })
        .flatten()
        .filter(|s| s.stream == stream)
        .map(|s| s.durable_end)
        .max()
        .unwrap_or(0)
}

/// Waits until the servers hold each followed file to its end and the standard input's shipper
/// has exited; what is still missing when [`DRAIN_MAX`] runs out.
fn drain(world: &mut World, sources: &[Source], stdin: usize) -> Vec<String> {
    let until = Instant::now() + DRAIN_MAX;
    loop {
        let mut missing = Vec::new();
        for (i, (stream, _)) in STREAMS.iter().enumerate() {
            if i == stdin {
                if world.shippers[i].exited().is_none() {
                    missing.push(format!("{stream}: its shipper has not finished"));
                }
                continue;
            }
            let end = held_end(world, stream);
            if end < sources[i].bytes {
                missing.push(format!("{stream}: held to {end} of {}", sources[i].bytes));
            }
        }
        if missing.is_empty() || Instant::now() >= until {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Lines holding `needle` in the logs under `dir` whose names start with `prefix`.
fn count_in_logs(dir: &Path, prefix: &str, needle: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .map(|text| text.lines().filter(|l| l.contains(needle)).count())
        .sum()
}

/// Of each log under `dir` whose name starts with `prefix`, the lines (at most 30, with the
/// two after each) that tell of a panic, an error or a warning.
fn alarming_lines(dir: &Path, prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut picked = Vec::new();
        let mut next = 0;
        for (i, l) in lines.iter().enumerate() {
            if picked.len() >= 30 {
                break;
            }
            if i >= next && (l.contains("panicked") || l.contains("ERROR") || l.contains("WARN")) {
                picked.extend(lines.iter().skip(i).take(3).copied());
                next = i + 3;
            }
        }
        if !picked.is_empty() {
            out.push((name, picked.join("\n")));
        }
    }
    out
}

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = (dir.join("src"), dir.join("state"), dir.join("logs"));
    for d in [&p.0, &p.1, &p.2] {
        std::fs::create_dir_all(d).unwrap();
    }
    p
}

#[test]
fn servers_and_shippers_under_faults_lose_and_repeat_nothing() {
    let faults = env_u64("OASIS_CHECKER_FAULTS", 200);
    let seed = env_u64("OASIS_CHECKER_SEED", fastrand::u64(..));
    let interval = Duration::from_millis(env_u64("OASIS_CHECKER_INTERVAL_MS", 500));
    let rate = env_u64("OASIS_CHECKER_RATE", 100_000) as usize;
    eprintln!(
        "checker: seed {seed}, {faults} faults; replay with OASIS_CHECKER_SEED={seed} \
         OASIS_CHECKER_FAULTS={faults} cargo test --test log_checker -- --nocapture"
    );
    let dir = tempfile::Builder::new()
        .prefix("oasis-checker")
        .tempdir()
        .unwrap();
    let mnt = dir.path().join("tmpfs");
    let Some(_tmpfs) = Tmpfs::mount(&mnt, "32m") else {
        return;
    };
    let (src, state, logs) = paths(dir.path());
    let began = Instant::now();

    let datas = [dir.path().join("a"), dir.path().join("b"), mnt.join("c")];
    let mut world = World {
        servers: ["logd-a", "logd-b", "logd-c"]
            .iter()
            .zip(&datas)
            .map(|(n, d)| Logd::new(n, d, &logs))
            .collect(),
        proxies: (0..3).map(|_| Proxy::start()).collect(),
        shippers: Vec::new(),
        killable: vec![3, 0, 1],
        fill: Some(Fill {
            server: 2,
            mount: mnt.clone(),
        }),
    };
    for i in 0..3 {
        world.start_server(i);
    }
    let servers = world
        .proxies
        .iter()
        .map(|p| p.addr().to_string())
        .collect::<Vec<_>>()
        .join(",");

    // The sources first (a follower waits for its file), then their shippers.
    let file = |i: usize| src.join(format!("{}.log", STREAMS[i].1));
    let state_of = |i: usize| state.join(format!("{}.state", STREAMS[i].1));
    let mut writers = Vec::new();
    for i in [0, 1, 3] {
        let rotation = (i == 0).then(|| state_of(0));
        writers.push((
            i,
            spawn_file(seed, STREAMS[i].1, &file(i), rate, rotation.as_deref()),
        ));
    }
    for (i, (stream, tag)) in STREAMS.iter().enumerate() {
        let (f, st) = (file(i), state_of(i));
        let followed = (i != 2).then_some((f.as_path(), st.as_path()));
        let log = logs.join(format!("ship-{tag}.log"));
        world
            .shippers
            .push(Shipper::new(tag, &servers, stream, followed, &log));
    }
    for i in [0, 1, 3] {
        world.shippers[i].start();
    }
    let pipe = world.shippers[2].start().expect("the stdin shipper's pipe");
    writers.push((
        2,
        spawn_pipe(seed, STREAMS[2].1, pipe, &src.join("stdin.src"), rate),
    ));

    let mut chaos = Chaos::new(seed, 3, interval);
    let rotating = &writers[0].1;
    chaos.run(&mut world, faults, rotating);
    chaos.calm(&mut world);
    let faulted = began.elapsed();
    let rotations = rotating
        .written
        .rotations
        .load(std::sync::atomic::Ordering::SeqCst);

    let mut sources: Vec<Option<Source>> = (0..4).map(|_| None).collect();
    for (i, w) in writers {
        sources[i] = Some(w.stop());
    }
    let sources: Vec<Source> = sources.into_iter().map(Option::unwrap).collect();
    let missing = drain(&mut world, &sources, 2);

    let mut problems = missing;
    for s in &mut world.shippers {
        match s.stop() {
            Some(Ok(st)) if st.success() => {}
            Some(Err(stuck)) => problems.push(format!("shipper {stuck}")),
            other => problems.push(format!("shipper {} ended with {other:?}", s.name)),
        }
    }
    for s in &mut world.servers {
        match s.stop() {
            Some(Ok(st)) if st.success() => {}
            Some(Err(stuck)) => problems.push(stuck),
            other => problems.push(format!("{} ended with {other:?}", s.name)),
        }
    }
    // A thread that panicked is a bug even when the process went on (or was killed anyway).
    let panics = count_in_logs(&logs, "", "panicked at");
    if panics > 0 {
        problems.push(format!(
            "{panics} panics in the servers' and shippers' logs"
        ));
    }
    let verdicts: Vec<Verdict> = STREAMS
        .iter()
        .zip(&sources)
        .map(|((stream, _), src)| verify(seed, &datas, stream, src))
        .collect();

    let list = |items: Vec<String>| items.join(", ");
    eprintln!(
        "checker: seed {seed}: {faults} faults in {:.1} s ({}), {rotations} rotations; \
         server starts [{}], shipper starts [{}], connections through the proxies [{}]; \
         done in {:.1} s",
        faulted.as_secs_f64(),
        list(
            chaos
                .counts
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect()
        ),
        list(
            world
                .servers
                .iter()
                .map(|s| format!("{} {}", s.name, s.starts))
                .collect()
        ),
        list(
            world
                .shippers
                .iter()
                .map(|s| format!("{} {}", s.name, s.starts))
                .collect()
        ),
        list(
            world
                .proxies
                .iter()
                .map(|p| p.forwarded().to_string())
                .collect()
        ),
        began.elapsed().as_secs_f64()
    );
    eprintln!(
        "  servers: {} appends refused for a full disk, {} torn tails cut at restarts; \
         shippers: {} connections that resumed at a server's offset",
        count_in_logs(&logs, "logd-", "append refused"),
        count_in_logs(&logs, "logd-", "cut off"),
        count_in_logs(&logs, "ship-", "shipping checker/"),
    );
    for (v, src) in verdicts.iter().zip(&sources) {
        eprintln!("  {} ({} lines)", v.line(), src.lines);
    }
    let clean = problems.is_empty() && verdicts.iter().all(Verdict::clean);
    if !clean {
        // The tmpfs goes with the test: its server's data directory is copied out first.
        let _ = std::process::Command::new("cp")
            .args(["-a"])
            .arg(&datas[2])
            .arg(dir.path().join("c-copy"))
            .status();
        let kept = dir.keep();
        for s in &world.shippers {
            eprintln!("--- shipper {}\n{}", s.name, s.log());
        }
        for (name, lines) in alarming_lines(&logs, "logd-") {
            eprintln!("--- {name}: panics, errors and warnings\n{lines}");
        }
        panic!(
            "the checker found faults (seed {seed}): {}; every log, source and data directory is kept in {}",
            problems.join("; "),
            kept.display()
        );
    }
}
