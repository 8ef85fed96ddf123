//! `oasis pool status`: a pool's state as one of its nodes sees it (`GET /api/pool`), printed
//! as a table or as the server's JSON. Reads only.

use anyhow::{bail, Context, Result};

use super::{agent, auth, cannot_reach, refusal, url, ServerArgs};

/// `oasis pool status`: the pool's nodes (state, load) and how many objects lack copies, from
/// `GET /api/pool` of any node.
pub fn pool_status(server: &ServerArgs, json: bool) -> Result<()> {
    let mut req = agent().get(&url(server, "/api/pool"));
    if let Some(a) = auth(server) {
        req = req.header("Authorization", a);
    }
    let mut resp = req.call().with_context(|| cannot_reach(server))?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    if status != 200 {
        bail!("pool status failed: {}", refusal(status, &body, server));
    }
    if json {
        print!("{body}");
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&body).context("GET /api/pool: not JSON")?;
    println!(
        "node {} (replicas {}, mode {}, down after {} ms)",
        v["node_id"].as_str().unwrap_or("?"),
        v["replicas"],
        v["mode"].as_str().unwrap_or("?"),
        v["down_after_ms"]
    );
    let c = &v["catalog"];
    println!(
        "catalog: {} (last contact {} ms ago), writes {}",
        c["state"].as_str().unwrap_or("?"),
        c["last_contact_ms_ago"],
        c["writes"].as_str().unwrap_or("?")
    );
    println!(
        "{:<20} {:<5} {:>9} {:>11} {:>16} {:>16}  advertise",
        "NODE", "STATE", "AGE_MS", "CONNECTIONS", "RESERVED_BPS", "LIMIT_BPS"
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<5} {:>9} {:>11} {:>16} {:>16}  {}",
            n["node_id"].as_str().unwrap_or("?"),
            n["state"].as_str().unwrap_or("?"),
            n["heartbeat_age_ms"],
            n["connections"],
            n["bandwidth_reserved_bps"],
            n["bandwidth_limit_bps"],
            n["advertise"].as_str().unwrap_or("")
        );
    }
    match v["under_replicated"].as_u64() {
        Some(n) => println!("objects under-replicated: {n}"),
        None => println!(
            "objects under-replicated: unknown ({})",
            v["under_replicated_error"]
                .as_str()
                .unwrap_or("catalog unreachable")
        ),
    }
    let r = &v["replication"];
    println!(
        "replication: {} queued, {} in flight, {} done, {} failed, {} dropped",
        r["queued"], r["in_flight"], r["done"], r["failed"], r["dropped"]
    );
    Ok(())
}
