//! The bytes of the two probe messages (sans-IO): the peer list a monitor sends a node, and the
//! echo nodes exchange to measure round trips. Integers are little-endian.
//!
//! Peer list (monitor to node):
//!
//! ```text
//! offset size
//!  0     2    magic "OP"
//!  2     1    version (1)
//!  3     1    flags: bit 0 = a 32-byte HMAC-SHA256 of every byte before it ends the datagram
//!  4     8    seq: grows with every list the monitor sends (the node drops older ones)
//! 12     1    peers (<= 20), each: 4 tag, 1 family (4 or 6), 4 or 16 address, 2 port
//!       [32   HMAC-SHA256, when flags bit 0]
//! ```
//!
//! Echo (node to node): exactly [`ECHO_BYTES`] bytes, "OE", version 1, kind (1 request,
//! 2 reply), an 8-byte nonce. A reply is the request with its kind changed; the prober takes a
//! reply only with the nonce it sent that peer last, so a reply cannot be made up blindly.
//!
//! Decoding checks every bound and never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::status::{mac, mac_ok, MAC_BYTES, PEERS_MAX};

/// The first two bytes of a peer list.
pub const PEERS_MAGIC: [u8; 2] = *b"OP";
/// The first two bytes of an echo.
pub const ECHO_MAGIC: [u8; 2] = *b"OE";
const VERSION: u8 = 1;
const FLAG_MAC: u8 = 1;
/// The size of every echo datagram.
pub const ECHO_BYTES: usize = 12;
/// The largest peer list, MAC included.
pub const PEERS_BYTES_MAX: usize = 13 + PEERS_MAX * (4 + 1 + 16 + 2) + MAC_BYTES;

/// One peer a node is to probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its tag (`status::node_tag` of its id): how the node names it in its report.
    pub tag: u32,
    /// Where its status socket is, as the monitor sees it: probes go there.
    pub addr: SocketAddr,
}

/// Encodes a peer list into `out` (cleared first), signed with `key` when given; at most
/// [`PEERS_MAX`] of `peers` are written.
pub fn encode_peers(seq: u64, peers: &[Peer], key: Option<&[u8]>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&PEERS_MAGIC);
    out.push(VERSION);
    out.push(if key.is_some() { FLAG_MAC } else { 0 });
    out.extend_from_slice(&seq.to_le_bytes());
    let peers = &peers[..peers.len().min(PEERS_MAX)];
    out.push(peers.len() as u8);
    for p in peers {
        out.extend_from_slice(&p.tag.to_le_bytes());
        match p.addr.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&p.addr.port().to_le_bytes());
    }
    if let Some(key) = key {
        let tag = mac(key, out);
        out.extend_from_slice(&tag);
    }
}

/// Why a peer list was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeersError {
    /// Not a peer list, or out of its bounds.
    Malformed,
    /// A key is configured and the MAC is missing or wrong.
    Unauthenticated,
}

/// Decodes a peer list into `peers` (cleared first) and returns its sequence number. With
/// `key`, only a list signed with it is taken.
pub fn decode_peers(
    bytes: &[u8],
    key: Option<&[u8]>,
    peers: &mut Vec<Peer>,
) -> Result<u64, PeersError> {
    peers.clear();
    if bytes.len() > PEERS_BYTES_MAX || bytes.len() < 13 || bytes[..2] != PEERS_MAGIC {
        return Err(PeersError::Malformed);
    }
    if bytes[2] != VERSION || bytes[3] & !FLAG_MAC != 0 {
        return Err(PeersError::Malformed);
    }
    let body = if bytes[3] & FLAG_MAC != 0 {
        let end = bytes.len().checked_sub(MAC_BYTES).filter(|&e| e >= 13);
        let end = end.ok_or(PeersError::Malformed)?;
        if let Some(key) = key {
            if !mac_ok(key, &bytes[..end], &bytes[end..]) {
                return Err(PeersError::Unauthenticated);
            }
        }
        &bytes[..end]
    } else {
        if key.is_some() {
            return Err(PeersError::Unauthenticated);
        }
        bytes
    };
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&body[4..12]);
    let count = usize::from(body[12]);
    if count > PEERS_MAX {
        return Err(PeersError::Malformed);
    }
    let mut rest = &body[13..];
    for _ in 0..count {
        let (tag, family) = match rest {
            [a, b, c, d, f, tail @ ..] => {
                rest = tail;
                (u32::from_le_bytes([*a, *b, *c, *d]), *f)
            }
            _ => return Err(PeersError::Malformed),
        };
        let ip_len = match family {
            4 => 4,
            6 => 16,
            _ => return Err(PeersError::Malformed),
        };
        if rest.len() < ip_len + 2 {
            return Err(PeersError::Malformed);
        }
        let (ip, tail) = rest.split_at(ip_len);
        let ip = match <[u8; 4]>::try_from(ip) {
            Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
            Err(_) => {
                let mut v6 = [0u8; 16];
                v6.copy_from_slice(ip);
                IpAddr::V6(Ipv6Addr::from(v6))
            }
        };
        let port = u16::from_le_bytes([tail[0], tail[1]]);
        rest = &tail[2..];
        peers.push(Peer {
            tag,
            addr: SocketAddr::new(ip, port),
        });
    }
    if !rest.is_empty() {
        peers.clear();
        return Err(PeersError::Malformed);
    }
    Ok(u64::from_le_bytes(seq))
}

/// What an echo datagram is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// A peer asks for a reply with this nonce.
    Request(u64),
    /// A peer answers the request with this nonce.
    Reply(u64),
}

/// The bytes of `echo`.
pub fn encode_echo(echo: Echo) -> [u8; ECHO_BYTES] {
    let (kind, nonce) = match echo {
        Echo::Request(n) => (1, n),
        Echo::Reply(n) => (2, n),
    };
    let mut out = [0u8; ECHO_BYTES];
    out[..2].copy_from_slice(&ECHO_MAGIC);
    out[2] = VERSION;
    out[3] = kind;
    out[4..].copy_from_slice(&nonce.to_le_bytes());
    out
}

/// The echo in `bytes`, if it is exactly one.
pub fn decode_echo(bytes: &[u8]) -> Option<Echo> {
    let b: &[u8; ECHO_BYTES] = bytes.try_into().ok()?;
    if b[..2] != ECHO_MAGIC || b[2] != VERSION {
        return None;
    }
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&b[4..]);
    let nonce = u64::from_le_bytes(nonce);
    match b[3] {
        1 => Some(Echo::Request(nonce)),
        2 => Some(Echo::Reply(nonce)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer() -> impl Strategy<Value = Peer> {
        (
            any::<u32>(),
            prop_oneof![
                any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
                any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
            ],
            any::<u16>(),
        )
            .prop_map(|(tag, ip, port)| Peer {
                tag,
                addr: SocketAddr::new(ip, port),
            })
    }

    #[test]
    fn the_largest_list_fits_and_a_wrong_key_or_a_cut_is_refused() {
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 7);
        let peers = vec![Peer { tag: 9, addr: v6 }; PEERS_MAX + 5];
        let mut out = Vec::new();
        encode_peers(3, &peers, Some(b"key"), &mut out);
        assert_eq!(out.len(), PEERS_BYTES_MAX);
        let mut got = Vec::new();
        assert_eq!(decode_peers(&out, Some(b"key"), &mut got), Ok(3));
        assert_eq!(got, peers[..PEERS_MAX]);
        assert_eq!(
            decode_peers(&out, Some(b"other"), &mut got),
            Err(PeersError::Unauthenticated)
        );
        for len in 0..out.len() {
            assert!(decode_peers(&out[..len], None, &mut got).is_err());
        }
        encode_peers(4, &peers[..1], None, &mut out);
        assert_eq!(
            decode_peers(&out, Some(b"key"), &mut got),
            Err(PeersError::Unauthenticated),
            "with a key an unsigned list is refused"
        );
    }

    #[test]
    fn echoes_are_exact() {
        let req = encode_echo(Echo::Request(42));
        assert_eq!(decode_echo(&req), Some(Echo::Request(42)));
        let mut rep = req;
        rep[3] = 2;
        assert_eq!(decode_echo(&rep), Some(Echo::Reply(42)));
        assert_eq!(decode_echo(&req[..11]), None);
        assert_eq!(decode_echo(&[req.as_slice(), &[0]].concat()), None);
        rep[3] = 3;
        assert_eq!(decode_echo(&rep), None);
    }

    proptest! {
        #[test]
        fn peer_lists_round_trip(
            seq in any::<u64>(),
            peers in proptest::collection::vec(peer(), 0..=PEERS_MAX),
            signed in any::<bool>(),
        ) {
            let key = signed.then_some(&b"k"[..]);
            let mut out = Vec::new();
            encode_peers(seq, &peers, key, &mut out);
            prop_assert!(out.len() <= PEERS_BYTES_MAX);
            let mut got = Vec::new();
            prop_assert_eq!(decode_peers(&out, key, &mut got), Ok(seq));
            prop_assert_eq!(got, peers);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut got = Vec::new();
            let _ = decode_peers(&bytes, None, &mut got);
            let _ = decode_peers(&bytes, Some(b"k"), &mut got);
            let _ = decode_echo(&bytes);
        }
    }
}
