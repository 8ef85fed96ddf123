//! Configuration by authorized clients: `GET|PATCH /api/config` and `oasis config get|set` against
//! a real `oasis serve` over real sockets, with its configuration file on disk.
//!
//! - A read shows the configuration in force with the API token redacted.
//! - A live key patched is in force at once (the read and `/api/status`'s `config_generation`
//!   show it) and written to the file, whose comments stay; the file still passes
//!   `oasis config check`.
//! - A key that needs a restart is 409 naming it, the file byte for byte as it was; with
//!   `restart_pending=true` it is written (202) and the running value stays.
//! - A wrong type, an unknown key, a value out of range, a JSON null: 400 naming the key (and the
//!   hint), the file byte for byte as it was. A body over 64 KiB is 413, no token 401.
//! - Eight patches at once from eight threads: each answered, each its own generation, and the
//!   file and the value in force agree afterwards; likewise patches while SIGHUPs arrive, no
//!   reload ever reading a half-written file.
//! - A server started without `--config` refuses (409) rather than pretend.
//! - The file on a tmpfs that is full: 500 naming the cause, nothing written or put in force;
//!   once space is freed the same patch goes through. Needs root (the tmpfs); without it the test
//!   fails saying so, unless `OASIS_ALLOW_SKIP=1` outside CI.
//! - The CLI end to end, online and offline.
//!
//! Nothing here assumes timing: every answer is waited for.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::{metric, oasis_bin, path_str, Server, Tmpfs, TOKEN};

/// Comments an operator wrote, which a patch must keep.
const PACING: &str =
    "\n# operator: players buffer ahead\n[pacing]\nfactor_progressive = 1.5 # tuned by hand\n";

/// A request to `/api/config`: (status, JSON body).
fn api(s: &Server, method: &str, query: &str, headers: &str, body: &[u8]) -> (u16, Value) {
    let head = format!(
        "{method} /api/config{query} HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (status, head, body) = s.request(&head, body);
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {head}\n{}", String::from_utf8_lossy(&body)));
    (status, v)
}

fn bearer() -> String {
    format!("Authorization: Bearer {TOKEN}\r\n")
}

fn get(s: &Server) -> Value {
    let (status, v) = api(s, "GET", "", &bearer(), b"");
    assert_eq!(status, 200, "{v}");
    v
}

fn patch_toml(s: &Server, query: &str, toml: &str) -> (u16, Value) {
    let headers = format!("{}Content-Type: application/toml\r\n", bearer());
    api(s, "PATCH", query, &headers, toml.as_bytes())
}

fn patch_json(s: &Server, query: &str, json: &str) -> (u16, Value) {
    let headers = format!("{}Content-Type: application/json\r\n", bearer());
    api(s, "PATCH", query, &headers, json.as_bytes())
}

fn config_generation(s: &Server) -> u64 {
    let (status, _, body) = s.request(
        &format!(
            "GET /api/status HTTP/1.1\r\nHost: t\r\n{}Connection: close\r\n\r\n",
            bearer()
        ),
        b"",
    );
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["config_generation"].as_u64().unwrap()
}

fn patches(s: &Server, outcome: &str) -> u64 {
    metric(
        s,
        &format!("oasis_config_patches_total{{outcome=\"{outcome}\"}}"),
    )
    .unwrap_or_else(|| panic!("no oasis_config_patches_total for {outcome}"))
}

/// `oasis config check FILE` passes.
fn assert_checks(path: &Path) {
    let out = Command::new(oasis_bin())
        .args(["config", "check", path_str(path)])
        .output()
        .unwrap();
    support::assert_success(&out);
}

/// `[pacing] factor_progressive` as the file on disk has it.
fn factor_in_file(path: &Path) -> f64 {
    let text = std::fs::read_to_string(path).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    doc["pacing"]["factor_progressive"].as_float().unwrap()
}

#[test]
fn a_live_key_is_put_in_force_and_written_with_the_comments_kept() {
    let s = Server::start(PACING);
    let v = get(&s);
    assert_eq!(v["config"]["http"]["api_token"], "<redacted>");
    assert!(!v.to_string().contains(TOKEN), "the token leaked: {v}");
    assert_eq!(v["config"]["pacing"]["factor_progressive"], 1.5);
    assert_eq!(config_generation(&s), 0);

    let (status, v) = patch_toml(&s, "", "[pacing]\nfactor_progressive = 2.5\n");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["changed"],
        serde_json::json!(["pacing.factor_progressive"])
    );
    assert_eq!(
        v["in_force"],
        serde_json::json!(["pacing.factor_progressive"])
    );
    assert_eq!(get(&s)["config"]["pacing"]["factor_progressive"], 2.5);
    assert_eq!(config_generation(&s), 1);
    let text = std::fs::read_to_string(s.config_path()).unwrap();
    assert!(
        text.contains("# operator: players buffer ahead\n[pacing]\n"),
        "{text}"
    );
    assert!(
        text.contains("factor_progressive = 2.5 # tuned by hand\n"),
        "{text}"
    );
    assert_checks(&s.config_path());
    assert_eq!(patches(&s, "applied"), 1);

    // The same in JSON, for another live key; the log names what went in force.
    let (status, v) = patch_json(&s, "", r#"{"pacing": {"factor_segment": 3.0}}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!(get(&s)["config"]["pacing"]["factor_segment"], 3.0);
    assert!(s
        .server_log()
        .contains("PATCH /api/config: [pacing] factor_segment is in force"));
}

#[test]
fn a_key_that_needs_a_restart_is_409_unless_it_may_wait_for_one() {
    let s = Server::start(PACING);
    let before = std::fs::read(s.config_path()).unwrap();
    let (status, v) = patch_json(&s, "", r#"{"http": {"header_bytes_max": 32768}}"#);
    assert_eq!(status, 409, "{v}");
    assert_eq!(
        v["restart_keys"],
        serde_json::json!(["http.header_bytes_max"])
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("restart_pending=true"),
        "{v}"
    );
    assert_eq!(std::fs::read(s.config_path()).unwrap(), before);

    let (status, v) = patch_json(
        &s,
        "?restart_pending=true",
        r#"{"http": {"header_bytes_max": 32768}}"#,
    );
    assert_eq!(status, 202, "{v}");
    assert_eq!(
        v["restart_pending"],
        serde_json::json!(["http.header_bytes_max"])
    );
    let text = std::fs::read_to_string(s.config_path()).unwrap();
    assert!(text.contains("header_bytes_max = 32768"), "{text}");
    let v = get(&s);
    assert_eq!(
        v["config"]["http"]["header_bytes_max"], 16384,
        "the running value stays"
    );
    assert_eq!(
        v["restart_pending"],
        serde_json::json!(["http.header_bytes_max"])
    );

    // A pending key is not held against a later patch of a live key.
    let (status, v) = patch_toml(&s, "", "[pacing]\nfactor_segment = 2.0\n");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["restart_pending"],
        serde_json::json!(["http.header_bytes_max"])
    );
    assert_eq!((patches(&s, "conflict"), patches(&s, "pending")), (1, 1));
}

#[test]
fn a_patch_also_puts_in_force_what_the_operator_wrote_in_the_file() {
    let s = Server::start(PACING);
    let text = std::fs::read_to_string(s.config_path()).unwrap();
    std::fs::write(s.config_path(), format!("{text}factor_segment = 6.0\n")).unwrap();
    let v = get(&s);
    assert_eq!(
        v["reload_pending"],
        serde_json::json!(["pacing.factor_segment"])
    );
    let (status, v) = patch_toml(&s, "", "[pacing]\ninitial_burst_secs = 5.0\n");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["changed"],
        serde_json::json!(["pacing.initial_burst_secs"])
    );
    assert_eq!(
        v["in_force"],
        serde_json::json!(["pacing.factor_segment", "pacing.initial_burst_secs"])
    );
    let v = get(&s);
    assert_eq!(v["config"]["pacing"]["factor_segment"], 6.0);
    assert_eq!(v["reload_pending"], serde_json::json!([]));
}

#[test]
fn refused_fragments_name_the_key_and_leave_the_file_as_it_was() {
    let s = Server::start(PACING);
    let before = std::fs::read(s.config_path()).unwrap();
    let toml_cases = [
        (
            "[pacing]\nfactor_progressive = \"fast\"\n",
            "[pacing] factor_progressive",
            "expected a number",
        ),
        (
            "[pacing]\nfactor_progresive = 2.0\n",
            "[pacing] factor_progresive",
            "unknown key",
        ),
        (
            "[pacing]\nfactor_progressive = 1000.0\n",
            "[pacing] factor_progressive",
            "between 1.0 and 100.0",
        ),
        (
            "[http]\nkeepalive_requests_max = 99999999999\n",
            "[http] keepalive_requests_max",
            "4294967295",
        ),
        (
            "[pacing]\nfactor_progressive = fast\n",
            "",
            "not valid TOML",
        ),
    ];
    for (fragment, key, message) in toml_cases {
        let (status, v) = patch_toml(&s, "", fragment);
        assert_eq!(status, 400, "{fragment}: {v}");
        let problem = &v["problems"][0];
        assert_eq!(problem["key"], key, "{fragment}: {v}");
        assert!(
            problem["message"].as_str().unwrap().contains(message),
            "{fragment}: {v}"
        );
    }
    let (_, v) = patch_toml(&s, "", "[pacing]\nfactor_progresive = 2.0\n");
    assert_eq!(
        v["problems"][0]["hint"],
        "did you mean `factor_progressive`?"
    );
    let (status, v) = patch_json(&s, "", r#"{"pacing": {"factor_progressive": null}}"#);
    assert_eq!(
        (status, &v["problems"][0]["key"]),
        (400, &Value::from("pacing.factor_progressive")),
        "{v}"
    );
    let (status, v) = patch_json(&s, "", "[1, 2]");
    assert_eq!(status, 400, "{v}");
    assert_eq!(std::fs::read(s.config_path()).unwrap(), before);
    assert_eq!(get(&s)["config"]["pacing"]["factor_progressive"], 1.5);
    assert_eq!(patches(&s, "invalid"), 8);

    // Over the body cap, and without the token: refused before the Configuration Manager.
    let huge = format!(
        "[pacing]\n# {}\nfactor_progressive = 2.0\n",
        "x".repeat(70_000)
    );
    let (status, v) = patch_toml(&s, "", &huge);
    assert_eq!(status, 413, "{v}");
    let (status, v) = api(&s, "PATCH", "", "", b"[pacing]\nfactor_progressive = 2.0\n");
    assert_eq!(status, 401, "{v}");
    let (status, _) = api(&s, "GET", "", "", b"");
    assert_eq!(status, 401);
    assert_eq!(std::fs::read(s.config_path()).unwrap(), before);
}

#[test]
fn concurrent_patches_leave_the_file_and_the_value_in_force_agreeing() {
    let s = Server::start(PACING);
    // None equal to the 1.5 in force at start: a patch that changes nothing puts nothing in
    // force and takes no generation of its own.
    let values: Vec<f64> = (1..=8).map(|i| 2.0 + f64::from(i) / 10.0).collect();
    let generations: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = values
            .iter()
            .map(|v| {
                let s = &s;
                scope.spawn(move || {
                    let (status, body) =
                        patch_toml(s, "", &format!("[pacing]\nfactor_progressive = {v:?}\n"));
                    assert_eq!(status, 200, "{body}");
                    body["generation"].as_u64().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = generations.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (1..=8).collect::<Vec<u64>>(),
        "one generation each: {generations:?}"
    );
    assert_checks(&s.config_path());
    let in_file = factor_in_file(&s.config_path());
    let in_force = get(&s)["config"]["pacing"]["factor_progressive"]
        .as_f64()
        .unwrap();
    assert_eq!(in_file, in_force);
    assert!(values.contains(&in_force), "{in_force}");
    assert_eq!(config_generation(&s), 8);
}

#[test]
fn patches_and_sighup_reloads_take_turns() {
    let s = Server::start(PACING);
    let pid = s.pid().to_string();
    std::thread::scope(|scope| {
        let patcher = scope.spawn(|| {
            for i in 1..=8 {
                let v = 1.0 + f64::from(i) / 10.0;
                let (status, body) =
                    patch_toml(&s, "", &format!("[pacing]\nfactor_progressive = {v:?}\n"));
                assert_eq!(status, 200, "{body}");
            }
        });
        for _ in 0..8 {
            let hup = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
            assert!(hup.success());
        }
        patcher.join().unwrap();
    });
    support::wait_until(&s, "a SIGHUP reload", || {
        metric(&s, "oasis_config_reloads_total{outcome=\"ok\"}").unwrap_or(0) >= 1
    });
    // No reload ever read a half-written file, and the file is what is in force.
    assert_eq!(
        metric(&s, "oasis_config_reloads_total{outcome=\"rejected\"}"),
        Some(0),
        "{}",
        s.server_log()
    );
    let in_force = get(&s)["config"]["pacing"]["factor_progressive"].as_f64();
    assert_eq!(in_force, Some(factor_in_file(&s.config_path())));
    assert_eq!(in_force, Some(1.8));
}

#[test]
fn a_server_without_a_config_file_refuses_to_pretend() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--listen", "127.0.0.1:0", "--data-dir", path_str(&data)];
    let s = Server::start_args(dir, &args);
    let v = get(&s);
    assert_eq!(v["file"], Value::Null);
    assert_eq!(
        v["config"]["http"]["api_token"],
        Value::Null,
        "the token came from the environment"
    );
    let (status, v) = patch_toml(&s, "", "[pacing]\nfactor_progressive = 2.0\n");
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("started without --config; nothing to write to"),
        "{v}"
    );
    assert_eq!(get(&s)["config"]["pacing"]["factor_progressive"], 1.5);
}

#[test]
fn a_full_disk_is_500_with_the_cause_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("etc");
    let Some(_mount) = Tmpfs::mount(&mnt, "256k") else {
        return;
    };
    let config = mnt.join("oasis.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = {:?}\naccess_log = \"off\"\n{PACING}",
            path_str(&data)
        ),
    )
    .unwrap();
    let before = std::fs::read(&config).unwrap();
    let args = ["--config", path_str(&config), "--listen", "127.0.0.1:0"];
    let s = Server::start_args(tempfile::tempdir().unwrap(), &args);

    // Another process fills the file system the configuration is on.
    let filler = mnt.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 4096];
    while std::io::Write::write_all(&mut f, &block).is_ok() {}
    drop(f);
    let (status, v) = patch_toml(&s, "", "[pacing]\nfactor_progressive = 2.5\n");
    assert_eq!(status, 500, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("No space left on device"), "{error}");
    assert!(error.contains("nothing was put in force"), "{error}");
    assert_eq!(std::fs::read(&config).unwrap(), before);
    assert_eq!(get(&s)["config"]["pacing"]["factor_progressive"], 1.5);
    assert_eq!(patches(&s, "failed"), 1);
    assert_eq!(
        std::fs::read_dir(&mnt).unwrap().count(),
        2,
        "no temporary file is left"
    );

    std::fs::remove_file(&filler).unwrap();
    let (status, v) = patch_toml(&s, "", "[pacing]\nfactor_progressive = 2.5\n");
    assert_eq!(status, 200, "{v}");
    assert_eq!(factor_in_file(&config), 2.5);
}

/// Runs `oasis config ARGS`: (success, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(oasis_bin())
        .arg("config")
        .args(args)
        .env_remove("OASIS_API_TOKEN")
        .env_remove("OASIS_SERVER")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_cli_sets_and_gets_keys_online_and_offline() {
    let s = Server::start(PACING);
    let url = s.url("");
    let online = ["--server", url.as_str(), "--token", TOKEN];
    let run = |args: &[&str]| cli(&[args, &online[..]].concat());

    let (ok, out, err) = run(&["set", "pacing.factor_segment", "3.5"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "pacing.factor_segment = 3.5: in force (configuration generation 1)\n"
    );
    let (ok, out, err) = run(&["get", "pacing.factor_segment"]);
    assert!(ok, "{err}");
    assert_eq!(out, "3.5\n");
    let (_, out, _) = run(&["get", "http.api_token"]);
    assert_eq!(out, "<redacted>\n");
    let config = s.config_path();
    let (ok, out, err) = cli(&[
        "get",
        "pacing.factor_segment",
        "--config",
        path_str(&config),
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, "3.5\n", "the file has it too");

    let (ok, _, err) = run(&["set", "pacing.factor_segmnt", "3"]);
    assert!(!ok);
    assert!(
        err.contains("HTTP 400") && err.contains("did you mean `factor_segment`?"),
        "{err}"
    );
    let (ok, _, err) = run(&["set", "http.header_bytes_max", "32768"]);
    assert!(!ok);
    assert!(
        err.contains("http.header_bytes_max") && err.contains("--restart-pending"),
        "{err}"
    );
    let (ok, out, err) = run(&["set", "http.header_bytes_max", "32768", "--restart-pending"]);
    assert!(ok, "{err}");
    assert!(out.contains("in force after the next restart"), "{out}");
    let (ok, out, err) = run(&["get", "http.header_bytes_max"]);
    assert!(ok, "{err}");
    assert_eq!(out, "16384\n");
    assert!(err.contains("in force after the next restart"), "{err}");
    let (ok, _, err) = cli(&[
        "set",
        "pacing.factor_segment",
        "2",
        "--server",
        url.as_str(),
    ]);
    assert!(!ok);
    assert!(err.contains("HTTP 401"), "{err}");
}
