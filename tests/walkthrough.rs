//! README's fleet walkthrough, run as written: `docs/walkthrough/fleet.sh` (which README shows
//! between `<!-- fleet:begin -->` and `<!-- fleet:end -->`; the test first checks the two are the
//! same) starts a real monitor, log server, two media servers and an agent on loopback ports,
//! kills one server (it must turn stale in `/api/nodes`) and the supervised one (it must come
//! back under a new pid), and stops everything. The script checks `/api/nodes` itself and fails
//! when a wait runs out; the test checks it succeeded and said so, and kills its whole process
//! group at the end in any case. No assertion is on timing.

mod support;

use std::path::Path;

use support::players::Bounded;

/// The fenced block of README between the fleet markers.
fn readme_block() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let inner = readme
        .split_once("<!-- fleet:begin -->")
        .and_then(|(_, rest)| rest.split_once("<!-- fleet:end -->"))
        .map(|(inner, _)| inner)
        .expect("README marks the walkthrough with <!-- fleet:begin --> and <!-- fleet:end -->");
    inner
        .split_once("```bash\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(code, _)| code.to_string())
        .expect("a ```bash fence between the markers")
}

/// A base port whose five successors are free for TCP and UDP on loopback.
fn free_base() -> u16 {
    for _ in 0..200 {
        let base = 20_000 + fastrand::u16(..40_000);
        let free = (0..5).all(|i| {
            let addr = ("127.0.0.1", base + i);
            std::net::TcpListener::bind(addr).is_ok() && std::net::UdpSocket::bind(addr).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no five free ports in a row on 127.0.0.1");
}

#[test]
fn readme_fleet_walkthrough_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script_path = root.join("docs/walkthrough/fleet.sh");
    let script = std::fs::read_to_string(&script_path).expect("docs/walkthrough/fleet.sh");
    assert_eq!(
        readme_block(),
        script,
        "README's walkthrough block differs from docs/walkthrough/fleet.sh: copy the script into README"
    );
    support::players::need("curl", "curl");
    support::players::need("python3", "python3");
    let port = free_base().to_string();
    let done = Bounded::spawn(
        "env",
        &[
            &format!("OASIS={}", support::oasis_bin()),
            &format!("FLEET_PORT={port}"),
            "bash",
            support::path_str(&script_path),
        ],
    )
    .finish();
    assert!(
        done.status.success(),
        "the walkthrough failed:\n{}",
        done.describe()
    );
    for line in [
        "ok: monitor, log server, both media servers and the agent up",
        "ok: media-b (not supervised) stale",
        "ok: media-a back under a new pid (the agent restarted it)",
        "media-a restarts seen by the monitor: 1",
    ] {
        assert!(
            done.stdout.contains(line),
            "missing `{line}`:\n{}",
            done.describe()
        );
    }
}
