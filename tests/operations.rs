//! Operations: what a production operator does to a running server, and what the server does when
//! the machine will not let it run.
//!
//! - SIGHUP reload: a real `oasis serve` started with a config file; the test rewrites the file,
//!   sends SIGHUP and polls `/metrics` until the reload counter moves (no timing assumed), then
//!   checks behaviour over real sockets: a new API token is in force and the old one refused; an
//!   invalid file is rejected with file:line in the log while the server goes on with the settings
//!   it had; a changed listen address is named as needing a restart.
//! - io_uring unavailable: the real binary is started under a seccomp filter that makes
//!   `io_uring_setup` fail (EPERM, then ENOSYS), installed in the child between fork and exec. The
//!   server must exit with a status (not a signal), print one sentence naming io_uring and the fix,
//!   never panic, and start nothing: no data directory, no listening socket. The filter affects only
//!   that child, so tests running beside it are untouched.
//! - Configuration errors: `oasis config check` on a file with three kinds of error (an unknown
//!   key, a wrong type, a value that fails a check) prints all three, each at its file:line:column
//!   with a hint, then the count, and exits 1; a too-short `OASIS_API_TOKEN` stops `oasis serve`
//!   with one message naming the variable, before a data directory or a socket exists.
//! - Pinning: for a combined and a split layout, every worker thread's `Cpus_allowed_list` in
//!   `/proc/PID/task/*/status` is the core list the start-up layout line printed for it.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{metric, wait_until, Server, TOKEN};

const TOKEN_B: &str = "second-token-fedcba9876543210";

fn put_with(s: &Server, token: &str, name: &str, body: &[u8]) -> u16 {
    let head = format!(
        "PUT /media/{name} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.request(&head, body).0
}

/// The value of one sample line of `/metrics`, e.g. `oasis_config_reloads_total{outcome="ok"}`.
fn reloads(s: &Server, outcome: &str) -> u64 {
    metric(
        s,
        &format!("oasis_config_reloads_total{{outcome=\"{outcome}\"}}"),
    )
    .unwrap_or_else(|| panic!("no reload counter for {outcome} in /metrics"))
}

fn sighup(s: &Server) {
    // SAFETY: kill has no memory-safety preconditions; the pid is our own live child.
    let rc = unsafe { libc::kill(s.pid(), libc::SIGHUP) };
    assert_eq!(rc, 0, "kill(SIGHUP): {}", std::io::Error::last_os_error());
}

/// Rewrites the config file and sends SIGHUP; returns once the `outcome` counter reached `count`.
fn reload_with(s: &Server, text: &str, outcome: &str, count: u64) {
    std::fs::write(s.config_path(), text).unwrap();
    sighup(s);
    wait_until(s, &format!("{count} reload(s) {outcome}"), || {
        reloads(s, outcome) >= count
    });
}

#[test]
fn sighup_puts_a_new_token_in_force_and_survives_a_bad_file() {
    // /metrics for anyone: the reload counters are read while the token changes.
    let s = Server::start("metrics_public = true\n");
    assert_eq!((reloads(&s, "ok"), reloads(&s, "rejected")), (0, 0));
    assert_eq!(put_with(&s, TOKEN, "before.bin", b"old token"), 201);

    // A valid file with a new token: in force once the reload is counted.
    let original = std::fs::read_to_string(s.config_path()).unwrap();
    let text_b = original.replace(TOKEN, TOKEN_B);
    reload_with(&s, &text_b, "ok", 1);
    assert_eq!(put_with(&s, TOKEN, "a.bin", b"old token"), 401);
    assert_eq!(put_with(&s, TOKEN_B, "b.bin", b"new token"), 201);
    let (status, _, body) = s.request(
        &format!("GET /api/status HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN_B}\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(status, 200);
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["config_generation"], 1, "{status}");
    assert!(s.server_log().contains("[http] api_token is in force"));

    // An invalid file (an unknown key on its last line): rejected, named by file and line, and
    // the server goes on with token B.
    let bad = format!("{text_b}api_tokn = \"typo\"\n");
    let bad_line = bad.lines().count();
    reload_with(&s, &bad, "rejected", 1);
    assert_eq!(reloads(&s, "ok"), 1);
    let log = s.server_log();
    let location = format!("{}:{bad_line}:", s.config_path().display());
    assert!(
        log.contains(&location) && log.contains("api_tokn") && log.contains("hint"),
        "no {location} error in the log:\n{log}"
    );
    assert!(log.contains("reload rejected"), "{log}");
    assert_eq!(put_with(&s, TOKEN_B, "c.bin", b"still token B"), 201);
    assert_eq!(put_with(&s, TOKEN, "d.bin", b"old token"), 401);

    // A new listen address is valid but needs a restart: said so, and the old address serves on.
    let other = support::free_port();
    let moved = text_b.replace(
        "addr = \"127.0.0.1:0\"",
        &format!("addr = \"127.0.0.1:{other}\""),
    );
    assert_ne!(moved, text_b);
    reload_with(&s, &moved, "ok", 2);
    let log = s.server_log();
    assert!(
        log.lines()
            .any(|l| l.contains("need a restart") && l.contains("[[listen]]")),
        "no restart warning naming [[listen]]:\n{log}"
    );
    assert_eq!(put_with(&s, TOKEN_B, "e.bin", b"same address"), 201);
}

/// `AUDIT_ARCH_*` of the architecture the tests run on, as seccomp reports it in `seccomp_data`.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// A classic BPF seccomp program: `io_uring_setup` fails with `errno`, everything else is allowed.
fn deny_io_uring_setup(errno: i32) -> Vec<libc::sock_filter> {
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    // offsetof(struct seccomp_data, nr) = 0, offsetof(..., arch) = 4.
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    vec![
        op(load, 0, 0, 4),
        op(jeq, 0, 3, AUDIT_ARCH),
        op(load, 0, 0, 0),
        op(jeq, 0, 1, libc::SYS_io_uring_setup as u32),
        op(ret, 0, 0, libc::SECCOMP_RET_ERRNO | errno as u32),
        op(ret, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Runs `oasis serve` with `io_uring_setup` failing with `errno`; checks that it starts nothing and
/// says why in one line. Returns that line.
fn serve_without_io_uring(errno: i32) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let mut filter = deny_io_uring_setup(errno);
    let mut cmd = Command::new(support::oasis_bin());
    cmd.args(["serve", "--listen", &addr.to_string(), "--data-dir"])
        .arg(&data)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The hook must be Send + Sync: it carries the program's address, not the pointer.
    let (filter_addr, filter_len) = (filter.as_mut_ptr() as usize, filter.len() as u16);
    // SAFETY: the hook runs in the child between fork and exec and makes only two prctl calls,
    // which are async-signal-safe and allocate nothing. The program lives in `filter`, which this
    // function keeps alive until `output` returns, i.e. past the fork; the child's copy of the
    // address space has it at the same address.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter_len,
                filter: filter_addr as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd
        .output()
        .expect("spawning oasis under the seccomp filter");
    drop(filter);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();

    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "expected a non-zero exit status, got {}; stderr:\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr:\n{stderr}");
    let line = lines[0];
    assert!(line.contains("io_uring"), "{line}");
    assert!(
        line.contains("allow the io_uring_setup/io_uring_enter/io_uring_register syscalls"),
        "the line names no fix: {line}"
    );
    assert_started_nothing(&data, addr, line);
    line.to_string()
}

/// A server that refused to start left nothing behind: no data directory created, nothing
/// listening on the address. `why` is what it said.
fn assert_started_nothing(data: &std::path::Path, addr: SocketAddr, why: &str) {
    assert!(!data.exists(), "the data directory was created: {why}");
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.kind());
    assert_eq!(
        refused.err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "something answers on {addr}"
    );
}

#[test]
fn io_uring_refused_by_seccomp_eperm_stops_start_with_one_sentence() {
    let line = serve_without_io_uring(libc::EPERM);
    assert!(line.contains("EPERM") && line.contains("seccomp"), "{line}");
}

#[test]
fn io_uring_hidden_by_seccomp_enosys_stops_start_with_one_sentence() {
    let line = serve_without_io_uring(libc::ENOSYS);
    assert!(
        line.contains("ENOSYS") && line.contains("CONFIG_IO_URING"),
        "{line}"
    );
}

#[test]
fn config_check_reports_every_error_with_its_place_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oasis.toml");
    std::fs::write(
        &path,
        "[server]\ndata_dri = \"./media\"\n\n[engine]\npin = \"yes\"\nchunk_bytes = 1000\n",
    )
    .unwrap();
    let out = Command::new(support::oasis_bin())
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let p = path.display();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{p}:2:1: [server] data_dri: unknown key"),
            "  hint: did you mean `data_dir`?".into(),
            format!("{p}:5:7: [engine] pin: expected true or false (without quotes), found the string \"yes\""),
            "  hint: the default is pin = true".into(),
            format!("{p}:6:15: [engine] chunk_bytes: must be a multiple of 4096 between 4096 and 16 MiB (got 1000)"),
            "  hint: the nearest allowed is chunk_bytes = 4096".into(),
            format!("3 errors in {p}"),
        ],
        "{stderr}"
    );

    std::fs::write(&path, "[engine]\nchunk_bytes = 4096\n").unwrap();
    let out = Command::new(support::oasis_bin())
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{p}: ok\n"));
}

#[test]
fn a_short_api_token_in_the_environment_stops_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let out = Command::new(support::oasis_bin())
        .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
        .arg(&data)
        .env("OASIS_API_TOKEN", "too-short")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(
            "OASIS_API_TOKEN: the environment variable is 9 characters long; an API token needs at least 16\n"
        ),
        "{stderr}"
    );
    assert_started_nothing(&data, addr, &stderr);
}

/// A CPU list as the kernel prints it in `Cpus_allowed_list` ("0-2,5") or as the layout line
/// prints it ("[0, 1]"), as a sorted list.
fn cpu_set(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus.sort_unstable();
    cpus
}

#[test]
fn workers_run_pinned_where_the_layout_line_says() {
    for layout in ["combined", "f=1,nc=1,nd=1"] {
        let s = Server::start_with("", layout);
        wait_until(&s, "the layout line", || s.server_log().contains("pinned"));
        let log = s.server_log();
        let line = log
            .lines()
            .find(|l| l.contains("threads: ") && l.contains("pinned"))
            .unwrap_or_else(|| panic!("no layout line in the log:\n{log}"));
        // " w0[f+nc+nd]->cpu[0] w1[...]->cpu[1]"
        let printed: Vec<(usize, Vec<usize>)> = line
            .split(" w")
            .skip(1)
            .map(|w| {
                let (index, rest) = w.split_once('[').unwrap();
                let cpus = rest.split("->cpu").nth(1).unwrap();
                let cpus = &cpus[..=cpus.find(']').unwrap()];
                (index.parse().unwrap(), cpu_set(cpus))
            })
            .collect();
        assert!(!printed.is_empty(), "no workers in: {line}");
        // Every worker thread (named oasis-w<i>-<roles>) runs where the line says.
        let mut seen = 0;
        for task in std::fs::read_dir(format!("/proc/{}/task", s.pid())).unwrap() {
            let task = task.unwrap().path();
            let comm = std::fs::read_to_string(task.join("comm")).unwrap();
            let Some(index) = comm
                .trim()
                .strip_prefix("oasis-w")
                .and_then(|r| r.split('-').next())
                .and_then(|i| i.parse::<usize>().ok())
            else {
                continue;
            };
            let status = std::fs::read_to_string(task.join("status")).unwrap();
            let allowed = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap();
            let want = &printed.iter().find(|(i, _)| *i == index).unwrap().1;
            assert_eq!(
                &cpu_set(allowed),
                want,
                "{layout}: thread {} runs on {allowed}, the log says {want:?}",
                comm.trim()
            );
            seen += 1;
        }
        assert_eq!(
            seen,
            printed.len(),
            "{layout}: worker threads found vs printed: {line}"
        );
    }
}

#[test]
fn the_descriptor_table_is_sized_for_every_connection_at_start() {
    // Growing the table later makes the growing thread wait in synchronize_rcu (the table is
    // shared with io_uring's threads); the server sizes it once before serving.
    let s = Server::start("[resources]\nconnections_max = 20000\n");
    let mut ours = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `ours` is a valid out-pointer. The child may raise its limit toward its hard
    // limit, which it inherits from ours.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut ours) };
    assert_eq!(rc, 0);
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let fd_size: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let want = 20_000u64.min(ours.rlim_max);
    assert!(
        fd_size >= want,
        "descriptor table holds {fd_size} entries, want at least {want}"
    );
}

#[test]
fn an_object_file_the_cache_misses_is_opened_by_the_ring_once() {
    let s = Server::start("");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(put_with(&s, TOKEN, "clip.mp4", &body), 201);
    let opens = |how: &str| {
        metric(
            &s,
            &format!("oasis_object_file_opens_total{{how=\"{how}\"}}"),
        )
        .unwrap()
    };
    assert_eq!((opens("ring"), opens("sync")), (0, 0));
    // The first GET misses the fd cache: the engine opens the file, then it is served whole.
    let (status, _, got) = s.request(
        "GET /media/clip.mp4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 200);
    assert!(got == body, "first GET: body differs");
    // The next ones hit the cache.
    let (status, _, got) = s.request(
        "GET /media/clip.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=1000-\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 206);
    assert!(got == body[1000..], "range GET: body differs");
    assert_eq!((opens("ring"), opens("sync")), (1, 0));
}

#[test]
fn an_object_whose_file_is_gone_answers_404_and_the_rest_keep_streaming() {
    let s = Server::start("");
    let gone: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let kept: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    assert_eq!(put_with(&s, TOKEN, "gone.mp4", &gone), 201);
    let before: Vec<_> = walk(&s.data_dir().join("objects"));
    assert_eq!(put_with(&s, TOKEN, "kept.mp4", &kept), 201);
    // The content file of the first object disappears behind the server's back (as it would
    // if a delete won the race against this request's open).
    assert_eq!(
        before.len(),
        1,
        "one content file after one PUT: {before:?}"
    );
    std::fs::remove_file(&before[0]).unwrap();
    let get = |name: &str| {
        s.request(
            &format!("GET /media/{name} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
            b"",
        )
    };
    let (status, _, _) = get("gone.mp4");
    assert_eq!(status, 404);
    let (status, _, body) = get("kept.mp4");
    assert_eq!(status, 200);
    assert!(body == kept, "the other object's body differs");
    assert!(
        s.server_log()
            .contains("gone.mp4: its content file is gone"),
        "no warning in the log"
    );
}

/// Every regular file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn a_splice_piece_larger_than_a_loop_budget_still_streams() {
    // 16 MiB pieces are larger than what a worker splices synchronously per loop iteration
    // (8 MiB): such a piece must take the ring path, not wait for a budget it can never have.
    let s = Server::start("[engine]\nchunk_bytes = 16777216\nbuffer_pool_bytes = 134217728\n");
    let body: Vec<u8> = (0..12_000_000u32).map(|i| (i % 239) as u8).collect();
    assert_eq!(put_with(&s, TOKEN, "big.mp4", &body), 201);
    for _ in 0..2 {
        let (status, _, got) = s.request(
            "GET /media/big.mp4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            b"",
        );
        assert_eq!(status, 200);
        assert!(
            got == body,
            "body differs ({} of {} bytes)",
            got.len(),
            body.len()
        );
    }
}
