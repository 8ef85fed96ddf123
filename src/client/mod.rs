//! `oasis put|ls|rm|stat` and `oasis config get|set` (`config`): a small client of a running
//! server's HTTP API.
//!
//! Reads go through ureq; uploads through [`upload`], which sends `Expect: 100-continue` and
//! reads the server's answer even when the server stops reading the body. Every refusal is
//! reported with the server's own reason, and a not-found names the command that helps.

pub mod config;
mod pool;
pub mod upload;

pub use pool::pool_status;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Base URL of the server.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:8080",
        env = "OASIS_SERVER"
    )]
    server: String,
    #[command(flatten)]
    token: TokenArg,
}

/// `--token`, for every command that talks to a server.
#[derive(clap::Args)]
pub struct TokenArg {
    /// Bearer token: an account's token (`oasis user add`), or the server's `[http] api_token`
    /// (or its OASIS_API_TOKEN).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "OASIS_API_TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Percent-encodes an object name for a URL path, keeping `/` separators.
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn url(server: &ServerArgs, path: &str) -> String {
    format!("{}{}", server.server.trim_end_matches('/'), path)
}

fn auth(server: &ServerArgs) -> Option<String> {
    server.token.token.as_ref().map(|t| format!("Bearer {t}"))
}

/// What went wrong, in words: the server's JSON `error`, else its status line.
fn refusal(status: u16, body: &str, server: &ServerArgs) -> String {
    let reason = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
    let status_text = ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut msg = format!("HTTP {status} {status_text}");
    match reason {
        Some(r) => {
            msg.push_str(": ");
            msg.push_str(&r);
        }
        // A server (or a proxy in front of it) that gives no reason of its own.
        None if status == 401 && server.token.token.is_none() => {
            msg.push_str(": no token was given (pass --token TOKEN or set OASIS_API_TOKEN)")
        }
        None => {}
    }
    msg
}

fn check(
    mut resp: ureq::http::Response<ureq::Body>,
    what: &str,
    server: &ServerArgs,
) -> Result<String> {
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    if !(200..300).contains(&status) {
        bail!("{what}: {}", refusal(status, &body, server));
    }
    Ok(body)
}

fn cannot_reach(server: &ServerArgs) -> String {
    format!(
        "cannot reach {} (is `oasis serve` running there, or is --server wrong?)",
        server.server
    )
}

fn put_file(server: &ServerArgs, path: &Path, name: &str, bitrate: Option<u64>) -> Result<()> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata()?.len();
    let mut target = format!("/media/{}", encode_name(name));
    if let Some(b) = bitrate {
        target.push_str(&format!("?bitrate={b}"));
    }
    let answer = upload::put(
        server.server.trim_end_matches('/'),
        &target,
        auth(server).as_deref(),
        &mut file,
        len,
    )?;
    if !(200..300).contains(&answer.status) {
        let cut = if answer.body_cut {
            " (the server stopped reading before the end of the file)"
        } else {
            ""
        };
        bail!(
            "upload of {name} refused: {}{cut}",
            refusal(answer.status, &answer.body, server)
        );
    }
    println!("{name}\t{len} bytes");
    Ok(())
}

pub fn put(
    server: &ServerArgs,
    path: &Path,
    name: Option<String>,
    bitrate: Option<u64>,
) -> Result<()> {
    let base = name.unwrap_or_else(|| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    if base.is_empty() {
        bail!(
            "cannot derive an object name from {}; pass --name",
            path.display()
        );
    }
    if !path.exists() {
        bail!("{}: no such file or directory", path.display());
    }
    if !path.is_dir() {
        return put_file(server, path, &base, bitrate);
    }
    let mut files = Vec::new();
    walk(path, &mut files)?;
    files.sort();
    // Segments before playlists, so a playlist's bitrates reach segments already stored.
    files.sort_by_key(|p| p.extension().is_some_and(|e| e == "m3u8" || e == "mpd"));
    for f in files {
        let rel = f.strip_prefix(path).expect("walked under path");
        let rel: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        put_file(server, &f, &format!("{base}/{}", rel.join("/")), bitrate)?;
    }
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(&entry.path(), out)?;
        } else if ty.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// Calls `method path` on the server's API with the token; the JSON answer, or the server's
/// reason as the error.
pub fn call_api(
    server: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    what: &str,
) -> Result<serde_json::Value> {
    let args = ServerArgs {
        server: server.to_string(),
        token: TokenArg {
            token: token.map(str::to_string),
        },
    };
    let url = url(&args, path);
    let agent = agent();
    let mut req = match method {
        "GET" => agent.get(&url).force_send_body(),
        "POST" => agent.post(&url),
        "DELETE" => agent.delete(&url).force_send_body(),
        other => bail!("unsupported method {other}"),
    };
    if let Some(a) = auth(&args) {
        req = req.header("Authorization", a);
    }
    let resp = req.send_empty().with_context(|| cannot_reach(&args))?;
    let body = check(resp, what, &args)?;
    serde_json::from_str(&body).with_context(|| format!("{what}: the server's answer is not JSON"))
}

fn get_api(server: &ServerArgs, path: &str, what: &str) -> Result<String> {
    let mut req = agent().get(&url(server, path));
    if let Some(a) = auth(server) {
        req = req.header("Authorization", a);
    }
    check(
        req.call().with_context(|| cannot_reach(server))?,
        what,
        server,
    )
}

/// The objects whose names start with `prefix` (the server caps the list; see `truncated`).
fn list(server: &ServerArgs, prefix: Option<&str>, what: &str) -> Result<serde_json::Value> {
    let path = match prefix {
        Some(p) => format!("/api/objects?prefix={}", encode_name(p)),
        None => "/api/objects".to_string(),
    };
    let body = get_api(server, &path, what)?;
    serde_json::from_str(&body).context("the server sent an invalid object list")
}

fn objects(v: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    v["objects"].as_array().into_iter().flatten()
}

pub fn ls(server: &ServerArgs, prefix: Option<&str>) -> Result<()> {
    let v = list(server, prefix, "listing failed")?;
    for o in objects(&v) {
        let rate = if o["bitrate_source"].as_str() == Some("playlist") {
            "playlist".to_string()
        } else {
            format!("{} bit/s", o["bitrate_bps"])
        };
        println!(
            "{}\t{}\t{}\t{rate}",
            o["name"].as_str().unwrap_or("?"),
            o["size_bytes"],
            o["content_type"].as_str().unwrap_or("?"),
        );
    }
    if v["truncated"].as_bool() == Some(true) {
        eprintln!("(list truncated; narrow it with a prefix)");
    }
    Ok(())
}

/// Why `name` is not an object, and what to run instead.
fn not_found(server: &ServerArgs, name: &str) -> anyhow::Error {
    let package = format!("{}/", name.trim_end_matches('/'));
    let under = list(server, Some(&package), "listing failed")
        .map(|v| objects(&v).count())
        .unwrap_or(0);
    if under > 0 {
        anyhow::anyhow!(
            "no object named {name:?}, but {under} object{} start with {package:?} (a package): \
             list them with `oasis ls {package}`, delete them all with `oasis rm --prefix {package}`",
            if under == 1 { "" } else { "s" }
        )
    } else {
        anyhow::anyhow!("no object named {name:?}; list the names with `oasis ls`")
    }
}

pub fn stat(server: &ServerArgs, name: &str) -> Result<()> {
    let v = list(server, Some(name), "stat failed")?;
    let found = objects(&v).find(|o| o["name"].as_str() == Some(name));
    match found {
        Some(o) => {
            println!("{}", serde_json::to_string_pretty(o)?);
            Ok(())
        }
        None => Err(not_found(server, name)),
    }
}

pub fn rm(server: &ServerArgs, name: &str) -> Result<()> {
    if name.ends_with('/') {
        bail!(
            "{name:?} is a prefix, not an object name: delete everything under it with \
             `oasis rm --prefix {name}` (list it first with `oasis ls {name}`)"
        );
    }
    let mut req = agent().delete(&url(server, &format!("/media/{}", encode_name(name))));
    if let Some(a) = auth(server) {
        req = req.header("Authorization", a);
    }
    let mut resp = req.call().with_context(|| cannot_reach(server))?;
    if resp.status().as_u16() == 404 {
        return Err(not_found(server, name));
    }
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    if !(200..300).contains(&status) {
        bail!(
            "delete of {name} failed: {}",
            refusal(status, &body, server)
        );
    }
    println!("deleted {name}");
    Ok(())
}

/// Deletes every object whose name starts with `prefix` (a package: `show/`).
pub fn rm_prefix(server: &ServerArgs, prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        bail!("--prefix needs a non-empty prefix, e.g. --prefix show/");
    }
    let mut total = 0usize;
    loop {
        let path = format!("/api/objects?prefix={}", encode_name(prefix));
        let mut req = agent().delete(&url(server, &path));
        if let Some(a) = auth(server) {
            req = req.header("Authorization", a);
        }
        let what = format!("delete of {prefix}* failed");
        let body = check(
            req.call().with_context(|| cannot_reach(server))?,
            &what,
            server,
        )?;
        let v: serde_json::Value =
            serde_json::from_str(&body).context("the server sent an invalid answer")?;
        let names = v["deleted"].as_array().cloned().unwrap_or_default();
        for n in &names {
            println!("deleted {}", n.as_str().unwrap_or("?"));
        }
        total += names.len();
        if v["truncated"].as_bool() != Some(true) || names.is_empty() {
            break;
        }
    }
    if total == 0 {
        bail!("no object name starts with {prefix:?}; list the names with `oasis ls`");
    }
    println!(
        "deleted {total} object{} under {prefix}",
        if total == 1 { "" } else { "s" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(token: Option<&str>) -> ServerArgs {
        ServerArgs {
            server: "http://127.0.0.1:8080".into(),
            token: TokenArg {
                token: token.map(str::to_string),
            },
        }
    }

    #[test]
    fn refusals_carry_the_servers_reason() {
        let msg = refusal(
            403,
            r#"{"error":"this server has no API token"}"#,
            &args(Some("t")),
        );
        assert_eq!(msg, "HTTP 403 Forbidden: this server has no API token");
        // A server that gives no reason: the client says what it knows.
        let msg = refusal(401, "<html>401</html>", &args(None));
        assert!(
            msg.starts_with("HTTP 401 Unauthorized: no token was given"),
            "{msg}"
        );
        assert_eq!(refusal(401, "", &args(Some("t"))), "HTTP 401 Unauthorized");
        assert_eq!(
            refusal(507, "", &args(None)),
            "HTTP 507 Insufficient Storage"
        );
    }

    #[test]
    fn names_keep_their_slashes_in_urls() {
        assert_eq!(encode_name("show/a b.ts"), "show/a%20b.ts");
        assert_eq!(encode_name("ü"), "%C3%BC");
    }
}
