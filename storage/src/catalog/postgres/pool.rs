//! The pool's tables in the PostgreSQL catalog: `pool_nodes` (each node's advertised URL, last
//! heartbeat and load) and `pool_replicas` (which node holds which version of a name, recorded
//! only once the copy is durable there), and [`PoolCatalog`], what pool code asks of them.
//!
//! Heartbeat times are the database server's clock, and [`NodeRecord::age_ms`] is computed by it
//! too, so nodes with skewed clocks still agree on who is late. The current version of a name is
//! its highest version id among the replicas (ids are unique in the pool and only grow). This
//! module decides nothing (liveness, placement, repair are the pool's), and every answer is
//! bounded by a limit.

use postgres::{GenericClient, Row};

use super::conn::TxError;
use super::{node_id_problem, PgCatalog};
use crate::catalog::rows::to_i64;
use crate::catalog::{CatalogError, ObjectMeta};

/// Most nodes [`PoolCatalog::nodes`] returns.
pub const POOL_NODES_MAX: usize = 1024;
/// Most holders [`PoolCatalog::holders`] returns.
const HOLDERS_MAX: i64 = 64;
/// Longest advertised URL, bytes.
const ADVERTISE_BYTES_MAX: usize = 2048;

/// The database server's clock in milliseconds since the Unix epoch, as SQL.
const NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)";

/// What a node reports of its load with each heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeLoad {
    /// Client connections open now.
    pub connections: u64,
    /// Network bandwidth reserved by streams now, bits per second.
    pub bandwidth_reserved_bps: u64,
    /// The node's network bandwidth limit, bits per second.
    pub bandwidth_limit_bps: u64,
}

/// One node of the pool as its last heartbeat left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node's id (`[pool] node_id`).
    pub node_id: String,
    /// The URL clients reach the node on.
    pub advertise: String,
    /// When the last heartbeat arrived, by the database server's clock (ms since the epoch).
    pub heartbeat_unix_ms: u64,
    /// How long ago that was, by the same clock (0 if the clock went back).
    pub age_ms: u64,
    /// The load it reported.
    pub load: NodeLoad,
}

/// One durable copy of a version on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaRecord {
    /// The object name.
    pub name: String,
    /// The node holding the copy.
    pub node_id: String,
    /// The version's id (unique in the pool).
    pub version_id: u64,
    /// The version's length.
    pub size_bytes: u64,
    /// CRC-32C of the version's content.
    pub crc32c: u32,
    /// When the version was committed on its first node (with size and CRC, what the version's
    /// ETag is made of).
    pub created_unix_ms: u64,
    /// When the copy became durable on `node_id` (ms since the epoch).
    pub durable_unix_ms: u64,
}

impl ReplicaRecord {
    /// The copy of `meta` on `node_id`, durable since `durable_unix_ms`.
    pub fn of(meta: &ObjectMeta, node_id: &str, durable_unix_ms: u64) -> ReplicaRecord {
        ReplicaRecord {
            name: meta.name.clone(),
            node_id: node_id.to_string(),
            version_id: meta.id,
            size_bytes: meta.size_bytes,
            crc32c: meta.crc32c,
            created_unix_ms: meta.created_unix_ms,
            durable_unix_ms,
        }
    }
}

/// A node holding the current version of a name: its copy, and the node's last heartbeat
/// (`None` when the node never sent one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub replica: ReplicaRecord,
    pub node: Option<NodeRecord>,
}

/// What the pool asks of the shared catalog, for the node a catalog was opened for.
pub trait PoolCatalog: Send {
    /// The node this catalog speaks for.
    fn pool_node_id(&self) -> &str;
    /// Records that this node is alive, reachable at `advertise`, with `load`.
    fn heartbeat(&mut self, advertise: &str, load: &NodeLoad) -> Result<(), CatalogError>;
    /// Every node that ever sent a heartbeat, by node id, at most [`POOL_NODES_MAX`].
    fn nodes(&mut self) -> Result<Vec<NodeRecord>, CatalogError>;
    /// The nodes holding the current version of `name`, by node id (empty: no copy anywhere).
    fn holders(&mut self, name: &str) -> Result<Vec<Holder>, CatalogError>;
    /// Records a copy made on `replica.node_id`; call only once it is durable there. Replaces
    /// that node's earlier copy of the name.
    fn record_replica(&mut self, replica: &ReplicaRecord) -> Result<(), CatalogError>;
    /// Forgets `node_id`'s copy of `name`; returns whether there was one.
    fn drop_replica(&mut self, name: &str, node_id: &str) -> Result<bool, CatalogError>;
    /// Every node's copy of `name`, whatever its version, by node id (at most 64).
    fn replicas(&mut self, name: &str) -> Result<Vec<ReplicaRecord>, CatalogError>;
    /// How many names have fewer than `want` copies of their current version on nodes whose
    /// last heartbeat is younger than `live_within_ms` (counted by the database, in one query).
    fn under_replicated(&mut self, want: u32, live_within_ms: u64) -> Result<u64, CatalogError>;
    /// The names (with their current version id) this node must restore copies of: it holds
    /// the current version, it is the live holder with the smallest node id (so one node
    /// repairs each name), and fewer than `want` live nodes hold it. By name, at most `limit`.
    fn to_repair(
        &mut self,
        want: u32,
        live_within_ms: u64,
        limit: u32,
    ) -> Result<Vec<(String, u64)>, CatalogError>;
}

/// Inserts or replaces `r` (within the caller's transaction).
pub(super) fn put_replica(tx: &mut impl GenericClient, r: &ReplicaRecord) -> Result<(), TxError> {
    tx.execute(
        "INSERT INTO pool_replicas \
         (name, node_id, version_id, size_bytes, crc32c, created_unix_ms, durable_unix_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (name, node_id) DO UPDATE SET version_id = EXCLUDED.version_id, \
         size_bytes = EXCLUDED.size_bytes, crc32c = EXCLUDED.crc32c, \
         created_unix_ms = EXCLUDED.created_unix_ms, durable_unix_ms = EXCLUDED.durable_unix_ms",
        &[
            &r.name,
            &r.node_id,
            &to_i64(r.version_id),
            &to_i64(r.size_bytes),
            &i64::from(r.crc32c),
            &to_i64(r.created_unix_ms),
            &to_i64(r.durable_unix_ms),
        ],
    )?;
    Ok(())
}

fn out_of_range(location: &str, what: String) -> TxError {
    TxError::Catalog(CatalogError::InvalidRow {
        location: location.to_string(),
        what,
    })
}

/// Reads a node row selected as `node_id, advertise, heartbeat, age, connections, reserved,
/// limit` starting at column `at`.
fn read_node(location: &str, row: &Row, at: usize) -> Result<NodeRecord, TxError> {
    let node_id: String = row.try_get(at)?;
    let numbers: [i64; 5] = [
        row.try_get(at + 2)?,
        row.try_get(at + 3)?,
        row.try_get(at + 4)?,
        row.try_get(at + 5)?,
        row.try_get(at + 6)?,
    ];
    let [Ok(heartbeat_unix_ms), _, Ok(connections), Ok(reserved), Ok(limit)] =
        numbers.map(u64::try_from)
    else {
        return Err(out_of_range(
            location,
            format!("pool node {node_id:?}: a numeric column is negative"),
        ));
    };
    Ok(NodeRecord {
        node_id,
        advertise: row.try_get(at + 1)?,
        heartbeat_unix_ms,
        age_ms: u64::try_from(numbers[1]).unwrap_or(0),
        load: NodeLoad {
            connections,
            bandwidth_reserved_bps: reserved,
            bandwidth_limit_bps: limit,
        },
    })
}

/// Reads a replica row selected as [`REPLICA_COLUMNS`].
fn read_replica(location: &str, row: &Row) -> Result<ReplicaRecord, TxError> {
    let name: String = row.try_get(0)?;
    let numbers: [i64; 5] = [
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(4)?,
        row.try_get(5)?,
        row.try_get(6)?,
    ];
    let (Ok(version_id), Ok(size_bytes), Ok(crc32c), Ok(created_unix_ms), Ok(durable_unix_ms)) = (
        u64::try_from(numbers[0]),
        u64::try_from(numbers[1]),
        u32::try_from(numbers[2]),
        u64::try_from(numbers[3]),
        u64::try_from(numbers[4]),
    ) else {
        return Err(out_of_range(
            location,
            format!("replica of {name:?}: a numeric column is out of range"),
        ));
    };
    Ok(ReplicaRecord {
        name,
        node_id: row.try_get(1)?,
        version_id,
        size_bytes,
        crc32c,
        created_unix_ms,
        durable_unix_ms,
    })
}

const REPLICA_COLUMNS: &str =
    "r.name, r.node_id, r.version_id, r.size_bytes, r.crc32c, r.created_unix_ms, r.durable_unix_ms";

fn node_columns(table: &str) -> String {
    format!(
        "{table}.node_id, {table}.advertise, {table}.heartbeat_unix_ms, \
         {NOW_MS} - {table}.heartbeat_unix_ms, {table}.connections, \
         {table}.bandwidth_reserved_bps, {table}.bandwidth_limit_bps"
    )
}

impl PoolCatalog for PgCatalog {
    fn pool_node_id(&self) -> &str {
        &self.node_id
    }

    fn heartbeat(&mut self, advertise: &str, load: &NodeLoad) -> Result<(), CatalogError> {
        if advertise.len() > ADVERTISE_BYTES_MAX {
            return Err(CatalogError::InvalidRow {
                location: self.location.clone(),
                what: format!(
                    "advertised URL of {} bytes (at most {ADVERTISE_BYTES_MAX})",
                    advertise.len()
                ),
            });
        }
        let node = self.node_id.clone();
        self.conn.with("record a heartbeat", |c| {
            c.execute(
                &format!(
                    "INSERT INTO pool_nodes (node_id, advertise, heartbeat_unix_ms, connections, \
                     bandwidth_reserved_bps, bandwidth_limit_bps) \
                     VALUES ($1, $2, {NOW_MS}, $3, $4, $5) \
                     ON CONFLICT (node_id) DO UPDATE SET advertise = EXCLUDED.advertise, \
                     heartbeat_unix_ms = EXCLUDED.heartbeat_unix_ms, \
                     connections = EXCLUDED.connections, \
                     bandwidth_reserved_bps = EXCLUDED.bandwidth_reserved_bps, \
                     bandwidth_limit_bps = EXCLUDED.bandwidth_limit_bps"
                ),
                &[
                    &node,
                    &advertise,
                    &to_i64(load.connections),
                    &to_i64(load.bandwidth_reserved_bps),
                    &to_i64(load.bandwidth_limit_bps),
                ],
            )?;
            Ok(())
        })
    }

    fn nodes(&mut self) -> Result<Vec<NodeRecord>, CatalogError> {
        let sql = format!(
            "SELECT {} FROM pool_nodes n ORDER BY n.node_id LIMIT {POOL_NODES_MAX}",
            node_columns("n")
        );
        self.collect("read the pool's nodes", &sql, &[], |loc, row| {
            read_node(loc, row, 0)
        })
    }

    fn holders(&mut self, name: &str) -> Result<Vec<Holder>, CatalogError> {
        let sql = format!(
            "SELECT {REPLICA_COLUMNS}, {} FROM pool_replicas r \
             LEFT JOIN pool_nodes n ON n.node_id = r.node_id \
             WHERE r.name = $1 AND r.version_id = \
               (SELECT max(version_id) FROM pool_replicas WHERE name = $1) \
             ORDER BY r.node_id LIMIT {HOLDERS_MAX}",
            node_columns("n")
        );
        self.collect("read the holders of a name", &sql, &[&name], |loc, row| {
            let replica = read_replica(loc, row)?;
            let heard: Option<String> = row.try_get(7)?;
            let node = heard.map(|_| read_node(loc, row, 7)).transpose()?;
            Ok(Holder { replica, node })
        })
    }

    fn record_replica(&mut self, replica: &ReplicaRecord) -> Result<(), CatalogError> {
        if let Some(why) = node_id_problem(&replica.node_id) {
            return Err(CatalogError::InvalidRow {
                location: self.location.clone(),
                what: format!("replica node id {:?}: {why}", replica.node_id),
            });
        }
        self.conn
            .transaction("record a replica", |tx| put_replica(tx, replica))
    }

    fn replicas(&mut self, name: &str) -> Result<Vec<ReplicaRecord>, CatalogError> {
        let sql = format!(
            "SELECT {REPLICA_COLUMNS} FROM pool_replicas r WHERE r.name = $1 \
             ORDER BY r.node_id LIMIT {HOLDERS_MAX}"
        );
        self.collect("read the replicas of a name", &sql, &[&name], read_replica)
    }

    fn under_replicated(&mut self, want: u32, live_within_ms: u64) -> Result<u64, CatalogError> {
        let live = to_i64(live_within_ms);
        let want = i64::from(want);
        let sql = format!(
            "SELECT count(*) FROM (SELECT c.name FROM \
               (SELECT name, max(version_id) AS v FROM pool_replicas GROUP BY name) c \
               LEFT JOIN pool_replicas r ON r.name = c.name AND r.version_id = c.v \
               LEFT JOIN pool_nodes n ON n.node_id = r.node_id \
                 AND {NOW_MS} - n.heartbeat_unix_ms < $1 \
               GROUP BY c.name HAVING count(n.node_id) < $2) u"
        );
        self.conn.with("count under-replicated names", |c| {
            let row = c.query_one(&sql, &[&live, &want])?;
            let n: i64 = row.try_get(0)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn to_repair(
        &mut self,
        want: u32,
        live_within_ms: u64,
        limit: u32,
    ) -> Result<Vec<(String, u64)>, CatalogError> {
        let sql = format!(
            "SELECT c.name, c.v FROM \
               (SELECT name, max(version_id) AS v FROM pool_replicas GROUP BY name) c \
               JOIN pool_replicas r ON r.name = c.name AND r.version_id = c.v \
               JOIN pool_nodes n ON n.node_id = r.node_id \
                 AND {NOW_MS} - n.heartbeat_unix_ms < $1 \
               GROUP BY c.name, c.v HAVING count(*) < $2 AND min(r.node_id) = $3 \
               ORDER BY c.name LIMIT $4"
        );
        let (live, want, me, limit) = (
            to_i64(live_within_ms),
            i64::from(want),
            self.node_id.clone(),
            i64::from(limit),
        );
        let args: [&(dyn postgres::types::ToSql + Sync); 4] = [&live, &want, &me, &limit];
        self.collect("list the names to repair", &sql, &args, |loc, row| {
            let name: String = row.try_get(0)?;
            let v: i64 = row.try_get(1)?;
            let v = u64::try_from(v)
                .map_err(|_| out_of_range(loc, format!("replica of {name:?}: negative version")))?;
            Ok((name, v))
        })
    }

    fn drop_replica(&mut self, name: &str, node_id: &str) -> Result<bool, CatalogError> {
        self.conn.with("drop a replica", |c| {
            let n = c.execute(
                "DELETE FROM pool_replicas WHERE name = $1 AND node_id = $2",
                &[&name, &node_id],
            )?;
            Ok(n > 0)
        })
    }
}
