//! The operator's side of a library that survives, with the real binary over real sockets:
//! a backup taken while the server runs serves every object; a lost catalog stops start-up with
//! the command that repairs it, and after that one command every object is served again,
//! byte-exact, under its name and type; scrub names an object whose bytes rotted.

mod support;

use std::process::{Command, Output};

use support::{oasis_bin, path_str, pattern, Server};

fn oasis(args: &[&str]) -> Output {
    Command::new(oasis_bin())
        .args(args)
        .env_remove("OASIS_API_TOKEN")
        .output()
        .expect("run oasis")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const OBJECTS: [(&str, usize, u8); 3] = [
    ("movie.webm", 700_000, 1),
    ("show/index.m3u8", 0, 0),
    ("show/seg0.ts", 300_000, 2),
];

fn body(len: usize, seed: u8) -> Vec<u8> {
    if len == 0 {
        b"#EXTM3U\n#EXTINF:4.0,\nseg0.ts\n#EXT-X-ENDLIST\n".to_vec()
    } else {
        pattern(len, seed)
    }
}

fn upload_all(s: &Server) {
    for (name, len, seed) in OBJECTS {
        assert_eq!(s.put(name, &body(len, seed)), 201, "{name}");
    }
}

/// Every object answers 200 with its bytes and its type.
fn assert_served(s: &Server) {
    for (name, len, seed) in OBJECTS {
        let (status, head, got) = s.request(
            &format!("GET /media/{name} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
            b"",
        );
        assert_eq!(status, 200, "{name}: {head}");
        assert_eq!(got, body(len, seed), "{name}");
        let ty = support::header(&head, "Content-Type")
            .unwrap_or_default()
            .to_string();
        let want = if name.ends_with(".m3u8") {
            "application/vnd.apple.mpegurl"
        } else if name.ends_with(".ts") {
            "video/mp2t"
        } else {
            "video/webm"
        };
        assert_eq!(ty, want, "{name}");
    }
}

#[test]
fn a_backup_taken_while_serving_serves_every_object() {
    let s = Server::start("");
    upload_all(&s);
    let dest = s.dir.path().join("backup");
    let out = oasis(&[
        "backup",
        "--data-dir",
        path_str(&s.data_dir()),
        path_str(&dest),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("backed up 3 objects"),
        "{}",
        text(&out.stdout)
    );
    // The server kept serving meanwhile, and the backup checks clean.
    assert_served(&s);
    let out = oasis(&["fsck", "--data-dir", path_str(&dest)]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // Restore: a server started on the backup serves every object.
    let mut restored = Server::start_on(&dest);
    assert_served(&restored);
    assert!(restored.stop().success());
}

#[test]
fn a_lost_catalog_comes_back_with_one_command() {
    let mut s = Server::start("");
    upload_all(&s);
    assert!(s.stop().success());
    let data = s.data_dir();
    std::fs::remove_file(data.join("catalog.sqlite")).unwrap();

    // Start-up refuses, removes nothing, and names the command.
    let out = Command::new(oasis_bin())
        .args(["serve", "--config", path_str(&s.config_path())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("--rebuild-catalog"), "{err}");
    let out = oasis(&["fsck", "--data-dir", path_str(&data)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--rebuild-catalog"),
        "{}",
        text(&out.stderr)
    );

    let out = oasis(&["fsck", "--data-dir", path_str(&data), "--rebuild-catalog"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("3 objects"),
        "{}",
        text(&out.stdout)
    );

    let mut again = Server::start_on(&data);
    assert_served(&again);
    // The rebuilt server takes uploads with the token as before.
    assert_eq!(again.put("after.bin", b"after"), 201);
    assert!(again.stop().success());
}

#[test]
fn scrub_names_an_object_whose_bytes_rotted() {
    let mut s = Server::start("");
    upload_all(&s);
    assert!(s.stop().success());
    let data = s.data_dir();
    let out = oasis(&["scrub", "--data-dir", path_str(&data)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("every checksum matches"));

    // Flip one byte of the movie's content file (the first upload: id 1).
    let file = std::fs::read_dir(data.join("objects/01"))
        .unwrap()
        .next()
        .expect("the first object's file")
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1234] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let out = oasis(&["scrub", "--data-dir", path_str(&data)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("corrupt: movie.webm"),
        "{}",
        text(&out.stdout)
    );
    let out = oasis(&["fsck", "--data-dir", path_str(&data)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("checksum mismatch: movie.webm"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn the_background_scrub_finds_rot_and_the_policy_holds() {
    use support::{metric, wait_until};
    let s = Server::start("[storage]\nscrub_bytes_per_sec = 100000000\n");
    upload_all(&s);
    let auth = format!("Authorization: Bearer {}", support::TOKEN);
    // The movie's bytes change on disk behind the server's back (id 1: the first upload).
    let file = s.data_dir().join("objects/01/0000000000000001");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[4321] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();

    let (status, _, _) = s.request(
        &format!("POST /api/scrub HTTP/1.1\r\nHost: t\r\n{auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(status, 202);
    wait_until(&s, "a scrub pass", || {
        metric(&s, "oasis_scrub_passes_total") >= Some(1)
    });
    assert_eq!(metric(&s, "oasis_corrupt_objects"), Some(1));
    assert_eq!(metric(&s, "oasis_scrub_objects_total"), Some(3));
    assert!(
        s.server_log().contains("scrub: corrupted data"),
        "{}",
        s.server_log()
    );

    // Refused by default, never served as good; the others stream as before.
    let get = |name: &str| {
        s.request(
            &format!("GET /media/{name} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
            b"",
        )
        .0
    };
    assert_eq!(get("movie.webm"), 500);
    assert_eq!(get("show/seg0.ts"), 200);
    assert_eq!(
        metric(&s, "oasis_corrupt_requests_total{outcome=\"refused\"}"),
        Some(1)
    );
    let (_, _, listing) = s.request(
        &format!("GET /api/objects HTTP/1.1\r\nHost: t\r\n{auth}\r\nConnection: close\r\n\r\n"),
        b"",
    );
    let v: serde_json::Value = serde_json::from_slice(&listing).unwrap();
    let corrupt: Vec<&str> = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["corrupt"] == true)
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(corrupt, ["movie.webm"]);

    // corrupt_policy is live: "serve" sends it and counts it.
    let config = std::fs::read_to_string(s.config_path()).unwrap();
    std::fs::write(
        s.config_path(),
        config.replace("[storage]\n", "[storage]\ncorrupt_policy = \"serve\"\n"),
    )
    .unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until(&s, "the reload", || {
        metric(&s, "oasis_config_reloads_total{outcome=\"ok\"}") == Some(1)
    });
    assert_eq!(get("movie.webm"), 200);
    assert_eq!(
        metric(&s, "oasis_corrupt_requests_total{outcome=\"served\"}"),
        Some(1)
    );

    // Uploading it again replaces the rotten version.
    assert_eq!(s.put("movie.webm", &body(700_000, 1)), 200);
    assert_eq!(metric(&s, "oasis_corrupt_objects"), Some(0));
}
