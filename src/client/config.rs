//! `oasis config get|set`: the configuration of a running server over `GET|PATCH /api/config`,
//! or (`get` without `--server`) of a file, read offline. `set` sends one key as a TOML fragment;
//! the server checks it as `oasis config check` does, and a refusal is printed with the server's
//! reason and each problem's key and hint. Secrets are shown redacted either way.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use toml_edit::{DocumentMut, Item};

use super::{agent, auth, cannot_reach, get_api, refusal, url, ServerArgs, TokenArg};

/// `oasis config get`'s arguments.
#[derive(clap::Args)]
pub struct GetArgs {
    /// `section.key` (e.g. pacing.factor_progressive) or a section (e.g. pacing); all of it when
    /// left out.
    #[arg(value_name = "KEY")]
    key: Option<String>,
    /// Base URL of a running server: its configuration in force. Without it, the file given
    /// with --config is read, offline.
    #[arg(long, value_name = "URL", conflicts_with = "config")]
    server: Option<String>,
    #[command(flatten)]
    token: TokenArg,
    /// Configuration file to read offline (default: none, so the defaults).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `oasis config set`'s arguments.
#[derive(clap::Args)]
pub struct SetArgs {
    /// `section.key`, e.g. pacing.factor_progressive (`listen` for the listen addresses).
    #[arg(value_name = "KEY")]
    key: String,
    /// The new value as TOML: 2.5, true, "text", [0, 1]; what is not TOML is taken as a string.
    #[arg(value_name = "VALUE", allow_hyphen_values = true)]
    value: String,
    /// Also write keys that need a restart (they take effect at the next start); without it
    /// such a key is refused and nothing changes.
    #[arg(long)]
    restart_pending: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `oasis config get`.
pub fn get(args: &GetArgs) -> Result<()> {
    let (config, pending) = match &args.server {
        Some(server) => {
            let server = ServerArgs {
                server: server.clone(),
                token: TokenArg {
                    token: args.token.token.clone(),
                },
            };
            let body = get_api(&server, "/api/config", "reading the configuration failed")?;
            let v: Value =
                serde_json::from_str(&body).context("the server sent an invalid configuration")?;
            let pending: Vec<String> = v["restart_pending"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect();
            (v["config"].clone(), pending)
        }
        None => {
            let cfg = match &args.config {
                Some(p) => crate::config::Config::load(p)?,
                None => crate::config::Config::default(),
            };
            (crate::config_api::redacted(&cfg), Vec::new())
        }
    };
    let Some(key) = &args.key else {
        println!("{}", serde_json::to_string_pretty(&config)?);
        for k in &pending {
            eprintln!("note: {k} has another value in the configuration file, in force after the next restart");
        }
        return Ok(());
    };
    let value = pick(&config, key)?;
    match value {
        Value::String(s) => println!("{s}"),
        Value::Object(_) | Value::Array(_) => println!("{}", serde_json::to_string_pretty(value)?),
        other => println!("{other}"),
    }
    // The key itself, or the keys of the section asked for.
    for k in pending
        .iter()
        .filter(|k| *k == key || k.split('.').next() == Some(key))
    {
        eprintln!("note: {k} has another value in the configuration file, in force after the next restart");
    }
    Ok(())
}

/// The value at `key` (`section` or `section.key`) in the configuration's JSON.
fn pick<'a>(config: &'a Value, key: &str) -> Result<&'a Value> {
    let (section, name) = match key.split_once('.') {
        Some((s, n)) => (s, Some(n)),
        None => (key, None),
    };
    let keys = |v: &Value| {
        v.as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let Some(s) = config.get(section) else {
        bail!("no section {section:?}; the sections are {}", keys(config));
    };
    match name {
        None => Ok(s),
        Some(n) => s
            .get(n)
            .with_context(|| format!("no key {n:?} in [{section}]; its keys are {}", keys(s))),
    }
}

/// `oasis config set`.
pub fn set(args: &SetArgs) -> Result<()> {
    let (fragment, shown) = fragment(&args.key, &args.value)?;
    let mut path = "/api/config".to_string();
    if args.restart_pending {
        path.push_str("?restart_pending=true");
    }
    let server = &args.server;
    let mut req = agent()
        .patch(&url(server, &path))
        .content_type("application/toml");
    if let Some(a) = auth(server) {
        req = req.header("Authorization", a);
    }
    let mut resp = req.send(fragment).with_context(|| cannot_reach(server))?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    if !(200..300).contains(&status) {
        bail!(
            "{} was not changed: {}",
            args.key,
            patch_refusal(status, &body, server)
        );
    }
    let v: Value = serde_json::from_str(&body).context("the server sent an invalid answer")?;
    let listed = |field: &str| -> Vec<String> {
        v[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect()
    };
    let (changed, in_force, pending) = (
        listed("changed"),
        listed("in_force"),
        listed("restart_pending"),
    );
    let key = &args.key;
    if changed.is_empty() {
        println!("{key} is already {shown}; nothing changed");
    } else if in_force.contains(key) {
        println!(
            "{key} = {shown}: in force (configuration generation {})",
            v["generation"]
        );
    } else if pending.contains(key) {
        println!(
            "{key} = {shown}: written to {}; in force after the next restart",
            v["file"].as_str().unwrap_or("the configuration file")
        );
    } else {
        println!("{key} = {shown}: written");
    }
    let others: Vec<&String> = in_force.iter().filter(|k| *k != key).collect();
    if !others.is_empty() {
        let others: Vec<&str> = others.iter().map(|k| k.as_str()).collect();
        println!("also put in force from the file: {}", others.join(", "));
    }
    Ok(())
}

/// The TOML fragment that sets `key` to `value` (TOML, else a string), and the value as shown.
fn fragment(key: &str, value: &str) -> Result<(String, String)> {
    let v: toml_edit::Value = value
        .parse()
        .unwrap_or_else(|_| toml_edit::Value::from(value));
    let shown = v.to_string().trim().to_string();
    let mut doc = DocumentMut::new();
    match key.split_once('.') {
        Some((section, name)) if !section.is_empty() && !name.is_empty() && !name.contains('.') => {
            let mut table = toml_edit::Table::new();
            table.insert(name, Item::Value(v));
            doc.insert(section, Item::Table(table));
        }
        None if !key.is_empty() => {
            doc.insert(key, Item::Value(v));
        }
        _ => bail!("{key:?}: a key is section.key, e.g. pacing.factor_progressive"),
    }
    Ok((doc.to_string(), shown))
}

/// A refused patch in words: the server's reason, then each problem with its hint.
fn patch_refusal(status: u16, body: &str, server: &ServerArgs) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if let Some(keys) = v["restart_keys"].as_array().filter(|k| !k.is_empty()) {
        let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        return format!(
            "HTTP {status} Conflict: {} cannot change while the server runs; run again with \
             --restart-pending to write it to the file for the next start",
            keys.join(", ")
        );
    }
    let mut msg = refusal(status, body, server);
    for p in v["problems"].as_array().into_iter().flatten() {
        let key = p["key"].as_str().unwrap_or_default();
        let message = p["message"].as_str().unwrap_or_default();
        if key.is_empty() {
            msg.push_str(&format!("\n  {message}"));
        } else {
            msg.push_str(&format!("\n  {key}: {message}"));
        }
        if let Some(hint) = p["hint"].as_str() {
            msg.push_str(&format!("\n    hint: {hint}"));
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_toml_or_else_a_string() {
        let (f, shown) = fragment("pacing.factor_progressive", "2.5").unwrap();
        assert_eq!(f, "[pacing]\nfactor_progressive = 2.5\n");
        assert_eq!(shown, "2.5");
        let (f, _) = fragment("server.log_level", "oasis=debug").unwrap();
        assert_eq!(f, "[server]\nlog_level = \"oasis=debug\"\n");
        let (f, _) = fragment("engine.cores", "[0, 1]").unwrap();
        assert_eq!(f, "[engine]\ncores = [0, 1]\n");
        let (f, _) = fragment("listen", "[{ addr = \"127.0.0.1:9\" }]").unwrap();
        assert_eq!(f, "listen = [{ addr = \"127.0.0.1:9\" }]\n");
        assert!(fragment("a.b.c", "1").is_err());
        assert!(fragment(".x", "1").is_err());
    }

    #[test]
    fn keys_are_picked_or_the_choices_named() {
        let config = serde_json::json!({"pacing": {"enabled": true, "factor_segment": 4.0}});
        assert_eq!(pick(&config, "pacing.enabled").unwrap(), &Value::Bool(true));
        assert!(pick(&config, "pacing").unwrap().is_object());
        let e = pick(&config, "pacing.enabld").unwrap_err().to_string();
        assert!(e.contains("enabled, factor_segment"), "{e}");
        let e = pick(&config, "pacin.enabled").unwrap_err().to_string();
        assert!(e.contains("the sections are pacing"), "{e}");
    }

    #[test]
    fn refusals_list_each_problem_and_the_flag_to_use() {
        let args = ServerArgs {
            server: "http://127.0.0.1:8080".into(),
            token: TokenArg {
                token: Some("t".into()),
            },
        };
        let body = r#"{"error":"does not pass","problems":[{"key":"[pacing] factor_progresive","message":"unknown key","hint":"did you mean `factor_progressive`?"}]}"#;
        assert_eq!(
            patch_refusal(400, body, &args),
            "HTTP 400 Bad Request: does not pass\n  [pacing] factor_progresive: unknown key\n    hint: did you mean `factor_progressive`?"
        );
        let body = r#"{"error":"x","restart_keys":["http.header_bytes_max"]}"#;
        let msg = patch_refusal(409, body, &args);
        assert!(
            msg.contains("http.header_bytes_max") && msg.contains("--restart-pending"),
            "{msg}"
        );
    }
}
