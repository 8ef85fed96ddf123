//! The status datagram's bytes (version 3; versions 2, without the pool block, and 1, without
//! the round-trip list either, are still read). Integers are little-endian; a string is one length
//! byte then that many UTF-8 bytes; a list is one count byte then its items.
//!
//! ```text
//! offset size
//!  0     2    magic "OM"
//!  2     1    version (3; 2 and 1 are read too)
//!  3     1    flags: bit 0 = a 32-byte HMAC-SHA256 of every byte before it ends the datagram;
//!             the other bits are 0
//!  4     1+n  node id                     (n <= 48)
//!        1    role (1 serve, 2 logd, 3 agent, 4 monitor)
//!        1+n  software version            (n <= 24)
//!        8    uptime_ms
//!        4    pid
//!        8    seq
//!        4    interval_ms
//!        8    config_generation
//!        1    level (0 normal, 1 warning, 2 critical)
//!        1    accounts (<= 10), each: 1+n resource (n <= 16), 8 used, 8 limit, 1 level
//!        4    active_streams
//!        8*6  sent_bytes, received_bytes, requests, errors, warning events, critical events
//!        1    streams (<= 8), each: 1+n name (n <= 24), 8 durable_offset
//!        1    processes (<= 8), each: 1+n name (n <= 16), 1 state, 4 restarts, 4 pid
//!        1    round trips (<= 20; version 2 on), each: 4 peer tag, 4 rtt_us
//!        1    pool block (version 3 on): 0 none, 1 one follows:
//!        1      flags: bit 0 = the catalog was reachable at the last heartbeat
//!        2      nodes live   2 nodes known
//!        4      under-replicated objects (0xffff_ffff: not counted)
//!        4      replication queue
//!       [32   HMAC-SHA256, when flags bit 0]
//! ```
//!
//! Decoding checks everything: the size bound, magic, version, flags, every length against its
//! bound, UTF-8, codes, and that nothing follows the last field (or the MAC). It never panics.

use super::*;

/// The first two bytes of every status datagram.
pub const MAGIC: [u8; 2] = *b"OM";
/// The encoding's version; a datagram of another version (but 1 and 2) is refused.
pub const VERSION: u8 = 3;
/// Still read: version 3 without the pool block.
const VERSION_2: u8 = 2;
/// Still read: version 2 without the round-trip list.
const VERSION_1: u8 = 1;
/// The pool block's "not counted" under-replicated count.
const NOT_COUNTED: u32 = u32::MAX;
const FLAG_MAC: u8 = 1;

/// The largest datagram the bounds allow, MAC included.
const WORST_BYTES: usize = 4
    + (1 + NODE_ID_BYTES_MAX)
    + 1
    + (1 + VERSION_BYTES_MAX)
    + 8
    + 4
    + 8
    + 4
    + 8
    + 1
    + 1
    + ACCOUNTS_MAX * (1 + ACCOUNT_NAME_BYTES_MAX + 17)
    + 4
    + 8 * 6
    + 1
    + STREAMS_MAX * (1 + STREAM_NAME_BYTES_MAX + 8)
    + 1
    + PROCESSES_MAX * (1 + PROCESS_NAME_BYTES_MAX + 9)
    + 1
    + PEERS_MAX * 8
    + 1
    + 13
    + MAC_BYTES;
const _: () = assert!(WORST_BYTES <= MAX_DATAGRAM_BYTES);

/// Why a datagram was not a status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than [`MAX_DATAGRAM_BYTES`].
    #[error("datagram of {0} bytes is over the {MAX_DATAGRAM_BYTES}-byte bound")]
    Oversized(usize),
    /// Ends before its last field.
    #[error("datagram ends early")]
    Truncated,
    /// Not a status datagram, or a field out of its bounds or codes.
    #[error("malformed status datagram: {0}")]
    Malformed(&'static str),
}

/// A decoded status and, when the datagram carries one, its MAC and the bytes it covers.
pub struct Decoded<'a> {
    /// The status.
    pub status: Status,
    /// `(signed bytes, mac)` when flags bit 0 is set.
    pub mac: Option<(&'a [u8], &'a [u8])>,
}

/// Encodes `status` (which must be within its bounds: see [`Status::fit`]); with `key`, signs
/// it. Returns `None` when a bound is exceeded.
pub fn encode(status: &Status, key: Option<&[u8]>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(if key.is_some() { FLAG_MAC } else { 0 });
    put_str(&mut out, &status.node, NODE_ID_BYTES_MAX)?;
    out.push(status.role.code());
    put_str(&mut out, &status.version, VERSION_BYTES_MAX)?;
    out.extend_from_slice(&status.uptime_ms.to_le_bytes());
    out.extend_from_slice(&status.pid.to_le_bytes());
    out.extend_from_slice(&status.seq.to_le_bytes());
    out.extend_from_slice(&status.interval_ms.to_le_bytes());
    out.extend_from_slice(&status.config_generation.to_le_bytes());
    out.push(status.level as u8);
    put_count(&mut out, status.accounts.len(), ACCOUNTS_MAX)?;
    for a in &status.accounts {
        put_str(&mut out, &a.resource, ACCOUNT_NAME_BYTES_MAX)?;
        out.extend_from_slice(&a.used.to_le_bytes());
        out.extend_from_slice(&a.limit.to_le_bytes());
        out.push(a.level as u8);
    }
    out.extend_from_slice(&status.active_streams.to_le_bytes());
    for c in [
        status.sent_bytes_total,
        status.received_bytes_total,
        status.requests_total,
        status.errors_total,
        status.warning_events_total,
        status.critical_events_total,
    ] {
        out.extend_from_slice(&c.to_le_bytes());
    }
    put_count(&mut out, status.streams.len(), STREAMS_MAX)?;
    for s in &status.streams {
        put_str(&mut out, &s.name, STREAM_NAME_BYTES_MAX)?;
        out.extend_from_slice(&s.durable_offset.to_le_bytes());
    }
    put_count(&mut out, status.processes.len(), PROCESSES_MAX)?;
    for p in &status.processes {
        put_str(&mut out, &p.name, PROCESS_NAME_BYTES_MAX)?;
        out.push(p.state);
        out.extend_from_slice(&p.restarts.to_le_bytes());
        out.extend_from_slice(&p.pid.to_le_bytes());
    }
    put_count(&mut out, status.rtts.len(), PEERS_MAX)?;
    for r in &status.rtts {
        out.extend_from_slice(&r.peer.to_le_bytes());
        out.extend_from_slice(&r.rtt_us.to_le_bytes());
    }
    match &status.pool {
        None => out.push(0),
        Some(p) => {
            out.push(1);
            out.push(u8::from(p.catalog_reachable));
            out.extend_from_slice(&p.nodes_live.to_le_bytes());
            out.extend_from_slice(&p.nodes_total.to_le_bytes());
            let under = p
                .under_replicated
                .map_or(NOT_COUNTED, |n| n.min(NOT_COUNTED - 1));
            out.extend_from_slice(&under.to_le_bytes());
            out.extend_from_slice(&p.replication_queued.to_le_bytes());
        }
    }
    if let Some(key) = key {
        let mac = auth::mac(key, &out);
        out.extend_from_slice(&mac);
    }
    debug_assert!(out.len() <= MAX_DATAGRAM_BYTES);
    Some(out)
}

fn put_str(out: &mut Vec<u8>, s: &str, max: usize) -> Option<()> {
    put_count(out, s.len(), max)?;
    out.extend_from_slice(s.as_bytes());
    Some(())
}

fn put_count(out: &mut Vec<u8>, n: usize, max: usize) -> Option<()> {
    if n > max {
        return None;
    }
    out.push(u8::try_from(n).ok()?);
    Some(())
}

/// Decodes one datagram. The MAC, if any, is returned for the caller to verify.
pub fn decode(datagram: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    if datagram.len() > MAX_DATAGRAM_BYTES {
        return Err(DecodeError::Oversized(datagram.len()));
    }
    let mut r = Reader(datagram);
    if r.take(2)? != MAGIC {
        return Err(DecodeError::Malformed("not a status datagram (magic)"));
    }
    let version = r.u8()?;
    if !(VERSION_1..=VERSION).contains(&version) {
        return Err(DecodeError::Malformed("unknown version"));
    }
    let flags = r.u8()?;
    if flags & !FLAG_MAC != 0 {
        return Err(DecodeError::Malformed("unknown flags"));
    }
    let (body, mac) = if flags & FLAG_MAC != 0 {
        let end = datagram
            .len()
            .checked_sub(MAC_BYTES)
            .filter(|&e| e >= 4)
            .ok_or(DecodeError::Truncated)?;
        (&datagram[..end], Some((&datagram[..end], &datagram[end..])))
    } else {
        (datagram, None)
    };
    let mut r = Reader(&body[4..]);
    let node = r.str(NODE_ID_BYTES_MAX)?;
    if node.is_empty() {
        return Err(DecodeError::Malformed("empty node id"));
    }
    let role = Role::from_code(r.u8()?).ok_or(DecodeError::Malformed("unknown role"))?;
    let mut status = Status::new(&node, role);
    status.version = r.str(VERSION_BYTES_MAX)?;
    status.uptime_ms = r.u64()?;
    status.pid = r.u32()?;
    status.seq = r.u64()?;
    status.interval_ms = r.u32()?;
    status.config_generation = r.u64()?;
    status.level = r.level()?;
    for _ in 0..r.count(ACCOUNTS_MAX)? {
        status.accounts.push(Account {
            resource: r.str(ACCOUNT_NAME_BYTES_MAX)?,
            used: r.u64()?,
            limit: r.u64()?,
            level: r.level()?,
        });
    }
    status.active_streams = r.u32()?;
    status.sent_bytes_total = r.u64()?;
    status.received_bytes_total = r.u64()?;
    status.requests_total = r.u64()?;
    status.errors_total = r.u64()?;
    status.warning_events_total = r.u64()?;
    status.critical_events_total = r.u64()?;
    for _ in 0..r.count(STREAMS_MAX)? {
        status.streams.push(Stream {
            name: r.str(STREAM_NAME_BYTES_MAX)?,
            durable_offset: r.u64()?,
        });
    }
    for _ in 0..r.count(PROCESSES_MAX)? {
        status.processes.push(Process {
            name: r.str(PROCESS_NAME_BYTES_MAX)?,
            state: r.u8()?,
            restarts: r.u32()?,
            pid: r.u32()?,
        });
    }
    if version >= VERSION_2 {
        for _ in 0..r.count(PEERS_MAX)? {
            status.rtts.push(Rtt {
                peer: r.u32()?,
                rtt_us: r.u32()?,
            });
        }
    }
    if version >= VERSION {
        status.pool = match r.u8()? {
            0 => None,
            1 => {
                let flags = r.u8()?;
                if flags & !1 != 0 {
                    return Err(DecodeError::Malformed("unknown pool flags"));
                }
                let nodes_live = r.u16()?;
                let nodes_total = r.u16()?;
                if nodes_live > nodes_total {
                    return Err(DecodeError::Malformed("more pool nodes live than known"));
                }
                let under = r.u32()?;
                Some(PoolSummary {
                    catalog_reachable: flags & 1 != 0,
                    nodes_live,
                    nodes_total,
                    under_replicated: (under != NOT_COUNTED).then_some(under),
                    replication_queued: r.u32()?,
                })
            }
            _ => return Err(DecodeError::Malformed("unknown pool block")),
        };
    }
    if !r.0.is_empty() {
        return Err(DecodeError::Malformed("bytes after the last field"));
    }
    Ok(Decoded { status, mac })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn level(&mut self) -> Result<Level, DecodeError> {
        Level::from_code(self.u8()?).ok_or(DecodeError::Malformed("unknown level"))
    }

    fn count(&mut self, max: usize) -> Result<usize, DecodeError> {
        let n = usize::from(self.u8()?);
        if n > max {
            return Err(DecodeError::Malformed("a list or string over its bound"));
        }
        Ok(n)
    }

    fn str(&mut self, max: usize) -> Result<String, DecodeError> {
        let n = self.count(max)?;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| DecodeError::Malformed("a string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full() -> Status {
        let mut s = Status::new("host-a/127.0.0.1:8080", Role::Logd);
        s.version = "0.1.0".into();
        s.uptime_ms = 12_345;
        s.pid = 4242;
        s.seq = 1 << 50;
        s.config_generation = 3;
        s.level = Level::Warning;
        s.accounts = (0..ACCOUNTS_MAX)
            .map(|i| Account {
                resource: "x".repeat(ACCOUNT_NAME_BYTES_MAX),
                used: i as u64,
                limit: u64::MAX,
                level: Level::Critical,
            })
            .collect();
        s.streams = vec![
            Stream {
                name: "s".repeat(STREAM_NAME_BYTES_MAX),
                durable_offset: 7
            };
            STREAMS_MAX
        ];
        s.processes = vec![
            Process {
                name: "p".repeat(PROCESS_NAME_BYTES_MAX),
                state: 4,
                restarts: 9,
                pid: 1,
            };
            PROCESSES_MAX
        ];
        s.rtts = (0..PEERS_MAX as u32)
            .map(|i| Rtt {
                peer: u32::MAX - i,
                rtt_us: i + 1,
            })
            .collect();
        s.node = "n".repeat(NODE_ID_BYTES_MAX);
        s.version = "v".repeat(VERSION_BYTES_MAX);
        s.pool = Some(PoolSummary {
            catalog_reachable: true,
            nodes_live: 2,
            nodes_total: 3,
            under_replicated: Some(17),
            replication_queued: 5,
        });
        s
    }

    #[test]
    fn a_version_1_datagram_is_read_without_round_trips() {
        let mut s = full();
        s.rtts.clear();
        s.pool = None;
        let mut bytes = encode(&s, None).unwrap();
        // Version 1 is version 3 without the round-trip count and the pool block (the last two
        // bytes here, both 0).
        bytes[2] = 1;
        assert_eq!(bytes.pop(), Some(0));
        assert_eq!(bytes.pop(), Some(0));
        assert_eq!(decode(&bytes).unwrap().status, s);
        let mut over = full();
        over.rtts.push(Rtt::default());
        assert!(encode(&over, None).is_none());
    }

    #[test]
    fn a_version_2_datagram_is_read_without_the_pool_block() {
        let mut s = full();
        s.pool = None;
        let mut bytes = encode(&s, None).unwrap();
        bytes[2] = 2;
        assert_eq!(bytes.pop(), Some(0));
        assert_eq!(decode(&bytes).unwrap().status, s);
    }

    #[test]
    fn a_pool_block_out_of_its_codes_is_refused() {
        let good = encode(&full(), None).unwrap();
        // The block is the last 14 bytes: 1 presence, 1 flags, 2 live, 2 known, 4 + 4.
        let at = good.len() - 14;
        let mut b = good.clone();
        b[at] = 2;
        assert_eq!(
            decode(&b).err(),
            Some(DecodeError::Malformed("unknown pool block"))
        );
        let mut b = good.clone();
        b[at + 1] = 2;
        assert_eq!(
            decode(&b).err(),
            Some(DecodeError::Malformed("unknown pool flags"))
        );
        let mut b = good.clone();
        b[at + 2] = 9;
        assert_eq!(
            decode(&b).err(),
            Some(DecodeError::Malformed("more pool nodes live than known"))
        );
        let mut uncounted = full();
        uncounted.pool.as_mut().unwrap().under_replicated = None;
        let bytes = encode(&uncounted, None).unwrap();
        assert_eq!(decode(&bytes).unwrap().status, uncounted);
    }

    #[test]
    fn the_largest_status_fits_and_round_trips_signed() {
        let s = full();
        let bytes = encode(&s, Some(b"key")).unwrap();
        assert!(bytes.len() <= MAX_DATAGRAM_BYTES, "{}", bytes.len());
        let d = decode(&bytes).unwrap();
        assert_eq!(d.status, s);
        let (signed, mac) = d.mac.unwrap();
        assert_eq!(mac, auth::mac(b"key", signed).as_slice());
    }

    #[test]
    fn every_truncation_is_refused() {
        for key in [None, Some(&b"k"[..])] {
            let bytes = encode(&full(), key).unwrap();
            for len in 0..bytes.len() {
                assert!(decode(&bytes[..len]).is_err(), "length {len} decoded");
            }
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let good = encode(&full(), None).unwrap();
        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(decode(&b), Err(DecodeError::Malformed(_))));
        let mut b = good.clone();
        b[2] = 4;
        assert_eq!(
            decode(&b).err(),
            Some(DecodeError::Malformed("unknown version"))
        );
        let mut b = good.clone();
        b[3] = 4;
        assert_eq!(
            decode(&b).err(),
            Some(DecodeError::Malformed("unknown flags"))
        );
        let mut b = good.clone();
        b.push(0);
        assert!(decode(&b).is_err());
        assert_eq!(
            decode(&vec![0; MAX_DATAGRAM_BYTES + 1]).err(),
            Some(DecodeError::Oversized(MAX_DATAGRAM_BYTES + 1))
        );
        let mut over = full();
        over.processes.push(Process::default());
        assert!(encode(&over, None).is_none());
    }

    fn name(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[a-zA-Z0-9/:._é-]{{0,{max}}}"))
            .unwrap()
            .prop_map(move |mut s| {
                super::super::cut(&mut s, max);
                s
            })
    }

    fn status() -> impl Strategy<Value = Status> {
        (
            (name(NODE_ID_BYTES_MAX), 1u8..=4, name(VERSION_BYTES_MAX)),
            (
                any::<u64>(),
                any::<u32>(),
                any::<u64>(),
                any::<u32>(),
                0u8..3,
            ),
            proptest::collection::vec(
                (
                    name(ACCOUNT_NAME_BYTES_MAX),
                    any::<u64>(),
                    any::<u64>(),
                    0u8..3,
                ),
                0..=ACCOUNTS_MAX,
            ),
            proptest::collection::vec(any::<u64>(), 6),
            proptest::collection::vec((name(STREAM_NAME_BYTES_MAX), any::<u64>()), 0..=STREAMS_MAX),
            proptest::collection::vec(
                (
                    name(PROCESS_NAME_BYTES_MAX),
                    any::<u8>(),
                    any::<u32>(),
                    any::<u32>(),
                ),
                0..=PROCESSES_MAX,
            ),
            proptest::collection::vec((any::<u32>(), any::<u32>()), 0..=PEERS_MAX),
            proptest::option::of((
                any::<bool>(),
                any::<u16>(),
                any::<u16>(),
                proptest::option::of(0..NOT_COUNTED),
                any::<u32>(),
            )),
        )
            .prop_map(
                |((node, role, version), (up, pid, seq, iv, lvl), acc, c, st, pr, rt, pool)| {
                    let node = if node.is_empty() { "n".into() } else { node };
                    let mut s = Status::new(&node, Role::from_code(role).unwrap());
                    s.version = version;
                    s.uptime_ms = up;
                    s.pid = pid;
                    s.seq = seq;
                    s.interval_ms = iv;
                    s.level = Level::from_code(lvl).unwrap();
                    s.accounts = acc
                        .into_iter()
                        .map(|(resource, used, limit, l)| Account {
                            resource,
                            used,
                            limit,
                            level: Level::from_code(l).unwrap(),
                        })
                        .collect();
                    s.sent_bytes_total = c[0];
                    s.received_bytes_total = c[1];
                    s.requests_total = c[2];
                    s.errors_total = c[3];
                    s.warning_events_total = c[4];
                    s.critical_events_total = c[5];
                    s.streams = st
                        .into_iter()
                        .map(|(name, durable_offset)| Stream {
                            name,
                            durable_offset,
                        })
                        .collect();
                    s.processes = pr
                        .into_iter()
                        .map(|(name, state, restarts, pid)| Process {
                            name,
                            state,
                            restarts,
                            pid,
                        })
                        .collect();
                    s.rtts = rt
                        .into_iter()
                        .map(|(peer, rtt_us)| Rtt { peer, rtt_us })
                        .collect();
                    s.pool = pool.map(|(catalog_reachable, a, b, under_replicated, queued)| {
                        PoolSummary {
                            catalog_reachable,
                            nodes_live: a.min(b),
                            nodes_total: a.max(b),
                            under_replicated,
                            replication_queued: queued,
                        }
                    });
                    s
                },
            )
    }

    proptest! {
        #[test]
        fn round_trip(s in status(), signed in any::<bool>()) {
            let key = signed.then_some(&b"shared key"[..]);
            let bytes = encode(&s, key).unwrap();
            prop_assert!(bytes.len() <= MAX_DATAGRAM_BYTES);
            let d = decode(&bytes).unwrap();
            prop_assert_eq!(d.mac.is_some(), signed);
            prop_assert_eq!(d.status, s);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            let _ = decode(&bytes);
        }
    }
}
