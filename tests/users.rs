//! The User Manager over real sockets: accounts made through `/api/users`, then every route asked
//! by every kind of client (no token, a wrong one, a revoked one, a token in the query string,
//! each role, the built-in `api_token`), each with the status it must get; no write or admin
//! action succeeds for anyone not allowed it, and refusals land in the audit trail.

mod support;

use std::collections::BTreeSet;

use support::{metric, pattern, Server, TOKEN};

/// Accounts and policies of the matrix: `premium/` signed, `members/` token, the rest public.
const CONFIG: &str = "metrics_public = false\n\n[storage]\nscrub_bytes_per_sec = 0\n\n[auth]\nfailures_max = 0\n\n[links]\nkeys = [\"matrix-signing-key-0123456789abcdef0123\"]\n\n[[access]]\nprefix = \"premium/\"\nread = \"signed\"\n\n[[access]]\nprefix = \"members/\"\nread = \"token\"\ncache_control = \"private, max-age=30\"\n";

fn call(s: &Server, method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> (u16, String) {
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let (status, _, body) = s.request(
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
        body,
    );
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Adds an account through the API as the built-in admin; returns its token.
fn add_user(s: &Server, name: &str, role: &str, prefixes: &[&str]) -> String {
    let mut path = format!("/api/users?name={name}&role={role}");
    for p in prefixes {
        path.push_str(&format!("&prefix={p}"));
    }
    let (status, body) = call(s, "POST", &path, Some(TOKEN), b"");
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v.get("token_hash").is_none(), "{v}");
    v["token"].as_str().unwrap().to_string()
}

/// Who asks: a label, and the `Authorization` token (or, for `query`, none: the token is in
/// the query string, which the server must ignore).
struct Who {
    label: &'static str,
    token: Option<String>,
    in_query: bool,
}

#[test]
fn every_route_answers_every_role_as_the_table_says() {
    let s = Server::start(CONFIG);
    let guest = add_user(&s, "guest1", "guest", &[]);
    let auditor = add_user(&s, "auditor1", "auditor", &[]);
    let provider = add_user(&s, "news", "provider", &["news/"]);
    let monitor = add_user(&s, "monitor1", "monitor", &[]);
    let admin = add_user(&s, "admin1", "admin", &[]);
    // A rotation ended: the old token is revoked.
    let revoked = add_user(&s, "rotated", "admin", &[]);
    let (status, body) = call(&s, "POST", "/api/users/rotated/rotate", Some(&admin), b"");
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &s,
        "POST",
        "/api/users/rotated/revoke-old",
        Some(&admin),
        b"",
    );
    assert_eq!(status, 200, "{body}");

    for name in ["pub.txt", "members/m.txt", "premium/p.txt"] {
        assert_eq!(s.put(name, &pattern(100, 1)), 201, "{name}");
    }
    let whos = [
        Who {
            label: "none",
            token: None,
            in_query: false,
        },
        Who {
            label: "wrong",
            token: Some("oasis_wrongwrongwrongwrongwrongwrongwrongwrongwro".into()),
            in_query: false,
        },
        Who {
            label: "revoked",
            token: Some(revoked),
            in_query: false,
        },
        Who {
            label: "query",
            token: Some(admin.clone()),
            in_query: true,
        },
        Who {
            label: "guest",
            token: Some(guest),
            in_query: false,
        },
        Who {
            label: "auditor",
            token: Some(auditor),
            in_query: false,
        },
        Who {
            label: "provider",
            token: Some(provider),
            in_query: false,
        },
        Who {
            label: "monitor",
            token: Some(monitor),
            in_query: false,
        },
        Who {
            label: "admin",
            token: Some(admin.clone()),
            in_query: false,
        },
        Who {
            label: "api_token",
            token: Some(TOKEN.into()),
            in_query: false,
        },
    ];
    // Objects each client may try to delete, made by the admin first.
    for w in &whos {
        assert_eq!(s.put(&format!("news/del-{}.txt", w.label), b"x"), 201);
    }
    // The columns: none, wrong, revoked, query, guest, auditor, provider, monitor, admin, api_token.
    const U: u16 = 401;
    const F: u16 = 403;
    type Row = (&'static str, &'static str, [u16; 10]);
    let rows: [Row; 18] = [
        ("GET", "/media/pub.txt", [200; 10]),
        ("HEAD", "/media/pub.txt", [200; 10]),
        (
            "GET",
            "/media/members/m.txt",
            [U, U, U, U, 200, 200, 200, 200, 200, 200],
        ),
        (
            "GET",
            "/media/premium/p.txt",
            [U, U, U, U, F, F, F, F, 200, 200],
        ),
        (
            "PUT",
            "/media/news/{who}.txt",
            [U, U, U, U, F, F, 201, F, 201, 201],
        ),
        (
            "PUT",
            "/media/other/{who}.txt",
            [U, U, U, U, F, F, F, F, 201, 201],
        ),
        (
            "DELETE",
            "/media/news/del-{who}.txt",
            [U, U, U, U, F, F, 204, F, 204, 204],
        ),
        ("GET", "/api/objects", [U, U, U, U, F, 200, F, F, 200, 200]),
        (
            "GET",
            "/api/objects?prefix=news/",
            [U, U, U, U, F, 200, 200, F, 200, 200],
        ),
        (
            "DELETE",
            "/api/objects?prefix=news/none-{who}/",
            [U, U, U, U, F, F, 200, F, 200, 200],
        ),
        (
            "DELETE",
            "/api/objects?prefix=other/none-{who}/",
            [U, U, U, U, F, F, F, F, 200, 200],
        ),
        ("GET", "/api/status", [U, U, U, U, F, 200, F, 200, 200, 200]),
        ("GET", "/metrics", [U, U, U, U, F, F, F, 200, 200, 200]),
        ("GET", "/api/audit", [U, U, U, U, F, 200, F, F, 200, 200]),
        ("GET", "/api/users", [U, U, U, U, F, F, F, F, 200, 200]),
        (
            "POST",
            "/api/users?name=made-by-{who}&role=guest",
            [U, U, U, U, F, F, F, F, 201, 201],
        ),
        ("POST", "/api/scrub", [U, U, U, U, F, F, F, F, 409, 409]),
        ("GET", "/api/config", [U, U, U, U, F, F, F, F, 200, 200]),
    ];
    let mut wrong = Vec::new();
    for (method, path, expected) in rows {
        for (w, want) in whos.iter().zip(expected) {
            let mut path = path.replace("{who}", w.label);
            let auth = match (&w.token, w.in_query) {
                (Some(t), true) => {
                    let sep = if path.contains('?') { '&' } else { '?' };
                    path.push_str(&format!("{sep}token={t}&access_token={t}"));
                    None
                }
                (t, _) => t.as_deref(),
            };
            let body: &[u8] = if method == "PUT" { b"payload" } else { b"" };
            let (got, text) = call(&s, method, &path, auth, body);
            if got != want {
                wrong.push(format!(
                    "{method} {path} as {}: {got}, expected {want}: {text}",
                    w.label
                ));
            }
            if got >= 400 {
                // A refusal is JSON that says why, never a 500, and never names the object.
                assert!(got < 500, "{method} {path} as {}: {got}", w.label);
                if method != "HEAD" {
                    let v: serde_json::Value = serde_json::from_str(&text)
                        .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
                    assert!(v["error"].is_string(), "{text}");
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cells differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Zero unauthorized writes: exactly the allowed uploads and deletes happened.
    let (status, body) = call(&s, "GET", "/api/objects", Some(&admin), b"");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: BTreeSet<&str> = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    let mut expected: BTreeSet<String> = ["pub.txt", "members/m.txt", "premium/p.txt"]
        .iter()
        .map(|n| n.to_string())
        .collect();
    for w in &whos {
        let allowed = matches!(w.label, "provider" | "admin" | "api_token");
        if allowed {
            expected.insert(format!("news/{}.txt", w.label));
        } else {
            expected.insert(format!("news/del-{}.txt", w.label));
        }
        if matches!(w.label, "admin" | "api_token") {
            expected.insert(format!("other/{}.txt", w.label));
        }
    }
    let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(names, expected);
    let (_, body) = call(&s, "GET", "/api/users", Some(&admin), b"");
    let users: serde_json::Value = serde_json::from_str(&body).unwrap();
    let made: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .filter(|n| n.starts_with("made-by-"))
        .collect();
    assert_eq!(made, ["made-by-admin", "made-by-api_token"]);
    assert!(!body.contains("hash"), "{body}");

    // Refusals are counted and audited; the access log names the account.
    assert!(metric(&s, "oasis_auth_refused_total{reason=\"unknown_token\"}").unwrap() > 0);
    assert!(metric(&s, "oasis_auth_refused_total{reason=\"forbidden\"}").unwrap() > 0);
    let audit = wait_for_audit(&s, &admin, "action=auth_refused");
    assert!(
        audit.iter().any(|r| r["outcome"] == "unknown_token"),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|r| r["outcome"] == "forbidden" && r["user"] == "guest1"),
        "{audit:?}"
    );
    let uploads = wait_for_audit(&s, &admin, "action=upload&user=news");
    assert!(
        uploads
            .iter()
            .any(|r| r["object"] == "news/provider.txt" && r["client"] == "127.0.0.1"),
        "{uploads:?}"
    );
    // The access log is written by its own thread.
    support::wait_until(&s, "the provider's name in the access log", || {
        s.access_log().contains(" - news [")
    });
}

/// The audit records a query finds, once the writer has put at least one in the catalog.
fn wait_for_audit(s: &Server, token: &str, query: &str) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    support::wait_until(s, &format!("audit records for {query}"), || {
        let (status, body) = call(
            s,
            "GET",
            &format!("/api/audit?{query}&limit=1000"),
            Some(token),
            b"",
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        found = v["records"].as_array().cloned().unwrap_or_default();
        !found.is_empty()
    });
    found
}

/// The token `oasis user add` printed (its last line of standard output).
fn printed_token(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().last().unwrap().trim().to_string()
}

#[test]
fn a_provider_uploads_into_its_prefix_and_nowhere_else_with_the_cli() {
    let s = Server::start("");
    let bin = support::oasis_bin();
    // The account is made offline? No: the server holds the data directory; over HTTP.
    let out = support::run(
        bin,
        &[
            "user",
            "add",
            "newsroom",
            "--role",
            "provider",
            "--prefix",
            "news/",
            "--server",
            &s.url(""),
            "--token",
            TOKEN,
        ],
    );
    let token = printed_token(out);
    assert!(token.starts_with("oasis_"), "{token}");
    let file = s.dir.path().join("clip.bin");
    std::fs::write(&file, pattern(10_000, 3)).unwrap();
    let put = |name: &str| {
        support::run(
            bin,
            &[
                "put",
                file.to_str().unwrap(),
                "--name",
                name,
                "--server",
                &s.url(""),
                "--token",
                &token,
            ],
        )
    };
    let ok = put("news/clip.bin");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = put("sport/clip.bin");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("403") && err.contains("outside the prefixes"),
        "{err}"
    );
    // Listed by the CLI, without the token.
    let ls = support::run(
        bin,
        &["user", "ls", "--server", &s.url(""), "--token", TOKEN],
    );
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(text.contains("newsroom\tprovider\tnews/"), "{text}");
    assert!(!text.contains(&token));
}

#[test]
fn rotation_keeps_both_tokens_until_the_old_one_is_revoked() {
    let s = Server::start("");
    let first = add_user(&s, "ops", "monitor", &[]);
    let status = |t: &str| call(&s, "GET", "/api/status", Some(t), b"").0;
    assert_eq!(status(&first), 200);
    let (code, body) = call(&s, "POST", "/api/users/ops/rotate", Some(TOKEN), b"");
    assert_eq!(code, 200, "{body}");
    let second = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first, second);
    assert_eq!((status(&first), status(&second)), (200, 200));
    let (code, _) = call(&s, "POST", "/api/users/ops/revoke-old", Some(TOKEN), b"");
    assert_eq!(code, 200);
    assert_eq!((status(&first), status(&second)), (401, 200));
    // Nothing left to revoke; a removed account's token stops at once.
    assert_eq!(
        call(&s, "POST", "/api/users/ops/revoke-old", Some(TOKEN), b"").0,
        409
    );
    assert_eq!(
        call(&s, "DELETE", "/api/users/ops", Some(TOKEN), b"").0,
        200
    );
    assert_eq!(status(&second), 401);
    assert_eq!(
        call(&s, "DELETE", "/api/users/ops", Some(TOKEN), b"").0,
        404
    );
}

#[test]
fn accounts_made_offline_work_once_the_server_starts_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bin = support::oasis_bin();
    let add_root = [
        "user",
        "add",
        "root",
        "--role",
        "admin",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let token = printed_token(support::run(bin, &add_root));
    let bad = support::run(bin, &add_root);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("exists"));
    let mut s = Server::start_on(&data);
    assert!(s.server_log().contains("accounts: 1"), "{}", s.server_log());
    assert_eq!(call(&s, "GET", "/api/users", Some(&token), b"").0, 200);
    // While the server holds the data directory, offline changes are refused with a reason.
    let busy = support::run(bin, &["user", "ls", "--data-dir", data.to_str().unwrap()]);
    assert!(!busy.status.success());
    s.stop();
    let ls = support::run(bin, &["user", "ls", "--data-dir", data.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("root\tadmin"));
    // The audit trail of the offline store holds what the server did.
    let audit = support::run(bin, &["audit", "--data-dir", data.to_str().unwrap()]);
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
}

#[test]
fn failed_authentications_past_the_limit_get_429_until_the_window_ends() {
    let s = Server::start("[auth]\nfailures_max = 3\nfailures_window_secs = 3600\n");
    let wrong = "oasis_notatokennotatokennotatokennotatokennotatoken";
    for _ in 0..3 {
        assert_eq!(call(&s, "GET", "/api/status", Some(wrong), b"").0, 401);
    }
    let (status, _, body) = s.request(
        &format!("GET /api/status HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
        b"",
    );
    // Even the right token waits: guessing costs a window per three tries.
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    // Requests without credentials are not slowed.
    assert_eq!(call(&s, "GET", "/media/none", None, b"").0, 404);
    assert!(s
        .server_log()
        .contains("failed authentications within 3600 s"));
}

#[test]
fn an_admin_changes_pacing_and_a_prefix_policy_over_http_and_finds_both_in_the_file_and_the_audit_trail(
) {
    let s = Server::start("");
    let admin = add_user(&s, "ops-admin", "admin", &[]);
    assert_eq!(s.put("premium/a.txt", b"secret"), 201);
    assert_eq!(call(&s, "GET", "/media/premium/a.txt", None, b"").0, 200);
    let patch = |body: &str, token: &str| {
        let (status, _, reply) = s.request(
            &format!(
                "PATCH /api/config HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: application/toml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ),
            body.as_bytes(),
        );
        (status, String::from_utf8_lossy(&reply).into_owned())
    };
    let change = "[pacing]\nfactor_progressive = 2.5\n\n[[access]]\nprefix = \"premium/\"\nread = \"token\"\ncache_control = \"private, max-age=60\"\n";
    // Not an admin: refused, and the file is untouched.
    let before = std::fs::read_to_string(s.config_path()).unwrap();
    let auditor = add_user(&s, "ops-auditor", "auditor", &[]);
    assert_eq!(patch(change, &auditor).0, 403);
    assert_eq!(std::fs::read_to_string(s.config_path()).unwrap(), before);
    let (status, reply) = patch(change, &admin);
    assert_eq!(status, 200, "{reply}");
    // In force: the prefix now needs a token and carries its Cache-Control.
    assert_eq!(call(&s, "GET", "/media/premium/a.txt", None, b"").0, 401);
    let (code, head, _) = s.request(
        &format!("GET /media/premium/a.txt HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {auditor}\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(code, 200);
    assert_eq!(
        support::header(&head, "Cache-Control"),
        Some("private, max-age=60")
    );
    // In the file, which still checks.
    let file = std::fs::read_to_string(s.config_path()).unwrap();
    assert!(file.contains("factor_progressive = 2.5"), "{file}");
    assert!(
        file.contains("[[access]]") && file.contains("prefix = \"premium/\""),
        "{file}"
    );
    let check = support::run(
        support::oasis_bin(),
        &["config", "check", s.config_path().to_str().unwrap()],
    );
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // And in the audit trail, as the admin, with the keys, the refusal too.
    let records = wait_for_audit(&s, &admin, "action=config_patch");
    let applied = records
        .iter()
        .find(|r| r["outcome"] == "applied")
        .unwrap_or_else(|| panic!("{records:?}"));
    assert_eq!(applied["user"], "ops-admin");
    let keys = applied["object"].as_str().unwrap();
    assert!(
        keys.contains("pacing.factor_progressive") && keys.contains("access"),
        "{keys}"
    );
    let refused = wait_for_audit(&s, &admin, "action=auth_refused&user=ops-auditor");
    assert!(
        refused.iter().any(|r| r["object"] == "/api/config"),
        "{refused:?}"
    );
}
