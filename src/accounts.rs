//! `oasis user ...`, `oasis sign` and `oasis audit`: the User Manager from the command line.
//!
//! Account commands work offline on a data directory (no server may hold it) or, with
//! `--server URL` and an admin token, against a running server's `/api/users`. Both paths call the
//! same account functions (`oasis_net::auth::manage`), so their checks and messages agree. `sign`
//! needs only the configuration's `[links] keys`; it talks to no server.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use oasis_net::auth::link::{self, LinkKeys, Scope};
use oasis_net::auth::manage;
use oasis_net::auth::policy::Role;
use oasis_storage::AuditQuery;

use crate::client::{call_api, encode_name, TokenArg};
use crate::library::open_store;

/// Where an account or audit command works: a running server, or a data directory offline.
#[derive(clap::Args)]
pub struct Target {
    /// A running server's base URL (with an admin token); without it, the command works on the
    /// data directory offline.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// An admin's token (an auditor's will do for `audit`).
    #[command(flatten)]
    token: TokenArg,
    /// Data directory (offline; default: the configuration's `[server] data_dir`).
    #[arg(long, value_name = "DIR", conflicts_with = "server")]
    data_dir: Option<PathBuf>,
    /// Configuration file (offline: where the data directory is).
    #[arg(long, value_name = "FILE", conflicts_with = "server")]
    config: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Create an account; prints its token once (only a hash is stored).
    #[command(after_help = "Examples:\n  \
        oasis user add alice --role admin --data-dir ./oasis-data\n  \
        oasis user add newsroom --role provider --prefix news/ --server http://127.0.0.1:8080")]
    Add {
        #[arg(value_name = "NAME")]
        name: String,
        /// guest, auditor, provider, monitor or admin.
        #[arg(long, value_name = "ROLE")]
        role: String,
        /// Limit a provider to names starting with PREFIX (repeatable).
        #[arg(long, value_name = "PREFIX")]
        prefix: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List the accounts (never their tokens).
    Ls {
        #[command(flatten)]
        target: Target,
    },
    /// Remove an account; its tokens stop working at once.
    Rm {
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Give an account a new token (printed once); the old one keeps working until `revoke --old`.
    Rotate {
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// End a rotation: the account's old token stops working.
    Revoke {
        #[arg(value_name = "NAME")]
        name: String,
        /// Revoke the old token (the only kind of revocation: `rm` removes the account).
        #[arg(long, required = true)]
        old: bool,
        #[command(flatten)]
        target: Target,
    },
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn role(text: &str) -> Result<Role> {
    text.parse::<Role>().map_err(anyhow::Error::msg)
}

fn print_user(v: &serde_json::Value) {
    let prefixes: Vec<&str> = v["prefixes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str())
        .collect();
    let rotating = if v["rotating"].as_bool() == Some(true) {
        "\trotating (two tokens)"
    } else {
        ""
    };
    println!(
        "{}\t{}\t{}{rotating}",
        v["name"].as_str().unwrap_or("?"),
        v["role"].as_str().unwrap_or("?"),
        if prefixes.is_empty() {
            "-".to_string()
        } else {
            prefixes.join(",")
        }
    );
}

fn print_token(name: &str, token: &str) {
    println!("{token}");
    eprintln!("the token of {name}, shown once: keep it; the server stores only its hash");
}

pub fn user(cmd: UserCommand) -> Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            role: r,
            prefix,
            target,
        } => {
            let r = role(&r)?;
            let (v, token) = match &target.server {
                Some(server) => {
                    let mut path =
                        format!("/api/users?name={}&role={}", encode_name(&name), r.as_str());
                    for p in &prefix {
                        path.push_str(&format!("&prefix={}", encode_name(p)));
                    }
                    let v = call_api(
                        server,
                        target.token.token.as_deref(),
                        "POST",
                        &path,
                        "user add",
                    )?;
                    let token = v["token"].as_str().unwrap_or_default().to_string();
                    (v, token)
                }
                None => {
                    let (store, _) = open_store(target.data_dir, target.config.as_ref())?;
                    let (rec, token) = manage::add(&store, &name, r, prefix, now_ms())?;
                    (manage::user_json(&rec), token)
                }
            };
            print_user(&v);
            print_token(&name, &token);
        }
        UserCommand::Ls { target } => {
            let all: Vec<serde_json::Value> = match &target.server {
                Some(server) => {
                    let v = call_api(
                        server,
                        target.token.token.as_deref(),
                        "GET",
                        "/api/users",
                        "user ls",
                    )?;
                    v["users"].as_array().cloned().unwrap_or_default()
                }
                None => {
                    let (store, _) = open_store(target.data_dir, target.config.as_ref())?;
                    manage::list(&store)?
                        .iter()
                        .map(manage::user_json)
                        .collect()
                }
            };
            for v in &all {
                print_user(v);
            }
        }
        UserCommand::Rm { name, target } => {
            match &target.server {
                Some(server) => {
                    let path = format!("/api/users/{}", encode_name(&name));
                    call_api(
                        server,
                        target.token.token.as_deref(),
                        "DELETE",
                        &path,
                        "user rm",
                    )?;
                }
                None => {
                    let (store, _) = open_store(target.data_dir, target.config.as_ref())?;
                    manage::remove(&store, &name)?;
                }
            }
            println!("removed {name}");
        }
        UserCommand::Rotate { name, target } => {
            let token = match &target.server {
                Some(server) => {
                    let path = format!("/api/users/{}/rotate", encode_name(&name));
                    let v = call_api(
                        server,
                        target.token.token.as_deref(),
                        "POST",
                        &path,
                        "user rotate",
                    )?;
                    v["token"].as_str().unwrap_or_default().to_string()
                }
                None => {
                    let (store, _) = open_store(target.data_dir, target.config.as_ref())?;
                    manage::rotate(&store, &name, now_ms())?
                }
            };
            print_token(&name, &token);
            eprintln!("the old token keeps working until `oasis user revoke {name} --old`");
        }
        UserCommand::Revoke { name, old, target } => {
            debug_assert!(old, "clap requires --old");
            match &target.server {
                Some(server) => {
                    let path = format!("/api/users/{}/revoke-old", encode_name(&name));
                    call_api(
                        server,
                        target.token.token.as_deref(),
                        "POST",
                        &path,
                        "user revoke",
                    )?;
                }
                None => {
                    let (store, _) = open_store(target.data_dir, target.config.as_ref())?;
                    manage::revoke_old(&store, &name, now_ms())?;
                }
            }
            println!("the old token of {name} no longer works");
        }
    }
    Ok(())
}

/// A duration as `90`, `90s`, `30m`, `12h` or `7d`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("{text:?} is not a duration (e.g. 90s, 30m, 12h, 7d)"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("{text:?} is not a duration (e.g. 90s, 30m, 12h, 7d)"),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .with_context(|| format!("{text:?} is too long"))
}

/// `oasis sign`: prints a signed link.
pub fn sign(
    name: &str,
    ttl: &str,
    package: bool,
    ip: Option<IpAddr>,
    base: &str,
    config: &std::path::Path,
) -> Result<()> {
    let cfg = crate::config::Config::load(config)?;
    let Some(keys): Option<LinkKeys> = cfg.link_keys()? else {
        bail!(
            "{} has no [links] keys: add keys = [\"<a random string of 32 characters or more>\"] under [links] (and reload the server)",
            config.display()
        );
    };
    let ttl = parse_duration(ttl)?;
    let expires = SystemTime::now()
        .checked_add(ttl)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .context("the expiry is out of range")?
        .as_secs();
    let prefix;
    let scope = if package {
        let Some(end) = name.rfind('/') else {
            bail!(
                "--package signs the folder of NAME, but {name:?} has none (e.g. show/index.m3u8)"
            );
        };
        prefix = name[..=end].to_string();
        Scope::Prefix(&prefix)
    } else {
        Scope::Object(name)
    };
    let path = link::sign(&keys, scope, name, expires, ip).map_err(anyhow::Error::msg)?;
    println!("{}{path}", base.trim_end_matches('/'));
    Ok(())
}

/// `oasis audit`: the audit trail, oldest first.
pub fn audit(
    since: Option<&str>,
    user: Option<String>,
    action: Option<String>,
    limit: usize,
    target: Target,
) -> Result<()> {
    let since_ms = match since {
        None => None,
        Some(s) => Some(now_ms().saturating_sub(parse_duration(s)?.as_millis() as u64)),
    };
    let records: Vec<serde_json::Value> = match &target.server {
        Some(server) => {
            let mut all = Vec::new();
            let mut after: Option<u64> = None;
            loop {
                let mut path = format!("/api/audit?limit={}", limit.min(1000));
                if let Some(s) = since_ms {
                    path.push_str(&format!("&since={s}"));
                }
                if let Some(u) = &user {
                    path.push_str(&format!("&user={}", encode_name(u)));
                }
                if let Some(a) = &action {
                    path.push_str(&format!("&action={}", encode_name(a)));
                }
                if let Some(a) = after {
                    path.push_str(&format!("&after={a}"));
                }
                let v = call_api(server, target.token.token.as_deref(), "GET", &path, "audit")?;
                all.extend(v["records"].as_array().cloned().unwrap_or_default());
                match v["next_after"].as_u64() {
                    Some(n) if all.len() < limit => after = Some(n),
                    _ => break,
                }
            }
            all.truncate(limit);
            all
        }
        None => {
            let (store, _) = open_store(target.data_dir, target.config.as_ref())?;
            let query = AuditQuery {
                since_unix_ms: since_ms,
                user,
                action,
                after_seq: None,
                limit,
            };
            store
                .query_audit(&query)?
                .iter()
                .map(manage::audit_json)
                .collect()
        }
    };
    for r in &records {
        let at = r["at_unix_ms"].as_u64().unwrap_or(0);
        let when = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(at));
        println!(
            "{when}\t{}\t{}\t{}\t{}\t{}\t{}",
            r["user"].as_str().unwrap_or("-"),
            r["client"].as_str().unwrap_or("-"),
            r["action"].as_str().unwrap_or("-"),
            r["object"].as_str().unwrap_or(""),
            r["outcome"].as_str().unwrap_or(""),
            r["detail"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        for bad in ["", "h", "1w", "-1h", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
