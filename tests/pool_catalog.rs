//! `oasis serve` on a PostgreSQL catalog (`[pool] catalog`), end to end against a real server (a
//! throw-away cluster): an upload over HTTP with curl lands in the database under this node,
//! survives a restart and comes back byte-exact; a server whose catalog cannot be reached does
//! not start and says why, without the password.

#[path = "../storage/tests/support/pg.rs"]
mod pg;
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{path_str, pattern, run, Server, TOKEN};

fn pool_toml(url: &str, node: &str) -> String {
    format!(
        "\n[pool]\ncatalog = \"{url}\"\nnode_id = \"{node}\"\nadvertise = \"http://127.0.0.1:1\"\n"
    )
}

fn curl(args: &[&str]) -> String {
    let out = run("curl", &[&["-sS", "--max-time", "60"], args].concat());
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn uploads_go_to_the_postgres_catalog_and_survive_a_restart() {
    let cluster = pg::shared();
    let url = cluster.create_database();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let body = pattern(3 << 20, 9);
    let file = work.path().join("clip.mp4");
    std::fs::write(&file, &body).unwrap();

    let mut server = Server::start_on_with(&data, &pool_toml(&url, "node-1"));
    let auth = format!("Authorization: Bearer {TOKEN}");
    let status = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &auth,
        "-T",
        path_str(&file),
        &server.url("/media/show/clip.mp4"),
    ]);
    assert_eq!(status, "201", "{}", server.server_log());
    assert!(server.stop().success());

    // The row is in PostgreSQL, under this node; no SQLite catalog was made.
    let rows = cluster.psql(&url, "SELECT node_id, name, size_bytes FROM objects");
    assert_eq!(rows.trim(), format!("node-1|show/clip.mp4|{}", body.len()));
    assert!(!data.join("catalog.sqlite").exists());

    let server = Server::start_on_with(&data, &pool_toml(&url, "node-1"));
    let got = work.path().join("got.mp4");
    let status = curl(&[
        "-o",
        path_str(&got),
        "-w",
        "%{http_code}",
        &server.url("/media/show/clip.mp4"),
    ]);
    assert_eq!(status, "200", "{}", server.server_log());
    assert!(std::fs::read(&got).unwrap() == body, "the body differs");
}

#[test]
fn an_unreachable_catalog_stops_the_start_with_the_url_and_the_fix() {
    let work = tempfile::tempdir().unwrap();
    let port = pg::free_port();
    let config = work.path().join("oasis.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = {:?}\naccess_log = \"off\"\n\n[[listen]]\naddr = \"127.0.0.1:0\"\n{}",
            path_str(&work.path().join("data")),
            pool_toml(&format!("postgres://oasis:pw-secret@127.0.0.1:{port}/oasis"), "node-1"),
        ),
    )
    .unwrap();
    let log = work.path().join("server.log");
    let mut child = Command::new(support::oasis_bin())
        .args(["serve", "--config", path_str(&config)])
        .env("OASIS_API_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = support::wait_exit(
        &mut child,
        Duration::from_secs(60),
        "with an unreachable catalog (it should refuse to start)",
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "cannot reach the PostgreSQL catalog at postgres://oasis:<redacted>@127.0.0.1:{port}/oasis"
        )),
        "{text}"
    );
    assert!(text.contains("[pool] catalog"), "{text}");
    assert!(!text.contains("pw-secret"), "{text}");
}
