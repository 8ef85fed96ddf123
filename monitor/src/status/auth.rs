//! A datagram's checks on arrival: decoding, the HMAC-SHA256 with the shared key, and the replay
//! window (per node, kept by the node table), each failure counted by kind. Sans-IO.
//!
//! With a key, a datagram without a MAC or with a wrong one is refused (`Unauthenticated`); the
//! MAC is compared in constant time. Without a key, MACs are not checked: anyone who can reach
//! the port can report, as with any unauthenticated UDP protocol.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::wire::{decode, DecodeError};
use super::Status;

/// Bytes of the MAC that ends a signed datagram.
pub const MAC_BYTES: usize = 32;

/// The HMAC-SHA256 of `bytes` with `key`.
pub(crate) fn mac(key: &[u8], bytes: &[u8]) -> [u8; MAC_BYTES] {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(bytes);
    m.finalize().into_bytes().into()
}

pub(crate) fn mac_ok(key: &[u8], bytes: &[u8], tag: &[u8]) -> bool {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(bytes);
    m.verify_slice(tag).is_ok()
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Over the size bound.
    Oversized,
    /// Ended before its last field.
    Truncated,
    /// Not a status, or a field out of bounds.
    Malformed,
    /// A key is configured and the MAC is missing or wrong.
    Unauthenticated,
    /// Its sequence number was seen already, or is too old, for its node.
    Replayed,
    /// A new node, and the table is full of fresh ones.
    TableFull,
}

/// Datagrams accepted and dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IntakeCounts {
    /// Accepted and shown.
    pub accepted: u64,
    /// Dropped: over the size bound.
    pub oversized: u64,
    /// Dropped: ended early.
    pub truncated: u64,
    /// Dropped: not a status datagram, or out of bounds.
    pub malformed: u64,
    /// Dropped: missing or wrong MAC.
    pub unauthenticated: u64,
    /// Dropped: replayed or too old.
    pub replayed: u64,
    /// Dropped: a new node while the table was full.
    pub table_full: u64,
}

impl IntakeCounts {
    /// Counts one dropped datagram.
    pub fn count(&mut self, why: Rejection) {
        let c = match why {
            Rejection::Oversized => &mut self.oversized,
            Rejection::Truncated => &mut self.truncated,
            Rejection::Malformed => &mut self.malformed,
            Rejection::Unauthenticated => &mut self.unauthenticated,
            Rejection::Replayed => &mut self.replayed,
            Rejection::TableFull => &mut self.table_full,
        };
        *c += 1;
    }

    /// Every dropped datagram.
    pub fn dropped(&self) -> u64 {
        self.oversized
            + self.truncated
            + self.malformed
            + self.unauthenticated
            + self.replayed
            + self.table_full
    }
}

/// The first checks of an arriving datagram: format and key.
pub struct Intake {
    key: Option<Vec<u8>>,
}

impl Intake {
    /// Checks with `key` (`None`: MACs are not checked).
    pub fn new(key: Option<&[u8]>) -> Intake {
        Intake {
            key: key.map(<[u8]>::to_vec),
        }
    }

    /// The status in `datagram`, or why it is dropped.
    pub fn check(&self, datagram: &[u8]) -> Result<Status, Rejection> {
        let decoded = decode(datagram).map_err(|e| match e {
            DecodeError::Oversized(_) => Rejection::Oversized,
            DecodeError::Truncated => Rejection::Truncated,
            DecodeError::Malformed(_) => Rejection::Malformed,
        })?;
        if let Some(key) = &self.key {
            match decoded.mac {
                Some((signed, tag)) if mac_ok(key, signed, tag) => {}
                _ => return Err(Rejection::Unauthenticated),
            }
        }
        Ok(decoded.status)
    }
}

/// A sliding window over one node's sequence numbers (as IPsec's): a number is taken once, and
/// only if it is newer than the highest seen or among the [`ReplayWindow::SPAN`] before it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayWindow {
    highest: u64,
    /// Bit i: `highest - i` was taken.
    seen: u64,
    any: bool,
}

impl ReplayWindow {
    /// How far behind the highest a late datagram may be.
    pub const SPAN: u64 = 64;

    /// Takes `seq` if it is new; false for a replay or one too old.
    pub fn take(&mut self, seq: u64) -> bool {
        if !self.any {
            *self = ReplayWindow {
                highest: seq,
                seen: 1,
                any: true,
            };
            return true;
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= Self::SPAN {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = seq;
            return true;
        }
        let behind = self.highest - seq;
        if behind >= Self::SPAN || self.seen & (1 << behind) != 0 {
            return false;
        }
        self.seen |= 1 << behind;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::{encode, Role};
    use super::*;

    #[test]
    fn a_key_refuses_unsigned_and_wrongly_signed_datagrams() {
        let s = Status::new("n", Role::Serve);
        let with_key = Intake::new(Some(b"right"));
        assert_eq!(
            with_key.check(&encode(&s, None).unwrap()),
            Err(Rejection::Unauthenticated)
        );
        assert_eq!(
            with_key.check(&encode(&s, Some(b"wrong")).unwrap()),
            Err(Rejection::Unauthenticated)
        );
        let mut flipped = encode(&s, Some(b"right")).unwrap();
        flipped[5] ^= 1;
        assert_eq!(with_key.check(&flipped), Err(Rejection::Unauthenticated));
        assert_eq!(
            with_key.check(&encode(&s, Some(b"right")).unwrap()),
            Ok(s.clone())
        );
        // Without a key, signed and unsigned are taken alike.
        let open = Intake::new(None);
        assert_eq!(open.check(&encode(&s, Some(b"x")).unwrap()), Ok(s.clone()));
        assert_eq!(open.check(b"OM\x01"), Err(Rejection::Truncated));
    }

    #[test]
    fn the_window_takes_each_number_once_and_late_ones_within_its_span() {
        let mut w = ReplayWindow::default();
        assert!(w.take(100));
        assert!(!w.take(100));
        assert!(w.take(103));
        assert!(w.take(101), "late but within the span");
        assert!(!w.take(101));
        assert!(!w.take(103 - ReplayWindow::SPAN), "too old");
        assert!(w.take(10_000));
        assert!(!w.take(103));
    }

    #[test]
    fn counts_add_up() {
        let mut c = IntakeCounts::default();
        for r in [
            Rejection::Oversized,
            Rejection::Replayed,
            Rejection::Replayed,
        ] {
            c.count(r);
        }
        assert_eq!((c.replayed, c.dropped()), (2, 3));
    }
}
