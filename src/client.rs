//! `oasis put|ls|rm|stat`: a small client of a running server's HTTP API (ureq).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "OASIS_SERVER")]
    server: String,
    /// Bearer token (`[http] api_token` of the server).
    #[arg(long, env = "OASIS_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Percent-encodes an object name for a URL path, keeping `/` separators.
fn encode_name(name: &str) -> String {
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
    server.token.as_ref().map(|t| format!("Bearer {t}"))
}

fn check(mut resp: ureq::http::Response<ureq::Body>, what: &str) -> Result<String> {
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    if !(200..300).contains(&status) {
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| format!("HTTP {status}"));
        let hint = match status {
            401 | 403 => " (pass --token or set OASIS_API_TOKEN to the server's [http] api_token)",
            _ => "",
        };
        bail!("{what}: {detail}{hint}");
    }
    Ok(body)
}

fn put_file(server: &ServerArgs, path: &Path, name: &str, bitrate: Option<u64>) -> Result<()> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata()?.len();
    let mut target = url(server, &format!("/media/{}", encode_name(name)));
    if let Some(b) = bitrate {
        target.push_str(&format!("?bitrate={b}"));
    }
    let mut req = agent()
        .put(&target)
        .header("Content-Length", len.to_string());
    if let Some(a) = auth(server) {
        req = req.header("Authorization", a);
    }
    let resp = req
        .send(ureq::SendBody::from_reader(&mut file))
        .with_context(|| format!("cannot reach {}", server.server))?;
    check(resp, &format!("upload of {name} failed"))?;
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

fn get_api(server: &ServerArgs, path: &str, what: &str) -> Result<String> {
    let mut req = agent().get(&url(server, path));
    if let Some(a) = auth(server) {
        req = req.header("Authorization", a);
    }
    check(
        req.call()
            .with_context(|| format!("cannot reach {}", server.server))?,
        what,
    )
}

pub fn ls(server: &ServerArgs, prefix: Option<&str>) -> Result<()> {
    let path = match prefix {
        Some(p) => format!("/api/objects?prefix={}", encode_name(p)),
        None => "/api/objects".to_string(),
    };
    let body = get_api(server, &path, "listing failed")?;
    let v: serde_json::Value =
        serde_json::from_str(&body).context("the server sent an invalid object list")?;
    for o in v["objects"].as_array().into_iter().flatten() {
        println!(
            "{}\t{}\t{}\t{} bit/s",
            o["name"].as_str().unwrap_or("?"),
            o["size_bytes"],
            o["content_type"].as_str().unwrap_or("?"),
            o["bitrate_bps"]
        );
    }
    if v["truncated"].as_bool() == Some(true) {
        eprintln!("(list truncated; narrow it with a prefix)");
    }
    Ok(())
}

pub fn stat(server: &ServerArgs, name: &str) -> Result<()> {
    let body = get_api(
        server,
        &format!("/api/objects?prefix={}", encode_name(name)),
        "stat failed",
    )?;
    let v: serde_json::Value =
        serde_json::from_str(&body).context("the server sent an invalid object list")?;
    let found = v["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["name"].as_str() == Some(name));
    match found {
        Some(o) => {
            println!("{}", serde_json::to_string_pretty(o)?);
            Ok(())
        }
        None => bail!("no object named {name:?}"),
    }
}

pub fn rm(server: &ServerArgs, name: &str) -> Result<()> {
    let mut req = agent().delete(&url(server, &format!("/media/{}", encode_name(name))));
    if let Some(a) = auth(server) {
        req = req.header("Authorization", a);
    }
    check(
        req.call()
            .with_context(|| format!("cannot reach {}", server.server))?,
        &format!("delete of {name} failed"),
    )?;
    println!("deleted {name}");
    Ok(())
}
