//! A worker's memo of the signed links it has verified. An HLS player fetches every segment of a
//! package through one link, and a hot object's link is asked for again and again; with the
//! memo a worker pays one HMAC per link (and set of keys), not one per request.
//!
//! An entry holds everything the signature covers (the expiry, the scope, the signed part of the
//! name, the bound address), the signature, and the id of the keys that verified it. A request
//! is answered from the memo only when all of it is equal, so the memo says what the HMAC would:
//! a link altered anywhere the signature covers misses, and is verified (and refused) in full.
//! Refusals are never kept, and expiry is checked on every request. The signature is compared in
//! constant time, after the fields a link shows anyway.
//!
//! A memo has a fixed number of slots, picked by the signature's first two bytes (uniform: they
//! are HMAC output); a newly verified link takes its slot from whatever held it. A signed part
//! longer than an entry holds is verified on every request.

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::IpAddr;

use super::{check_signature, opens_at, parse, LinkError, LinkKeys, SignedPath};
use crate::auth::token::ct_eq;

/// Slots in a memo (a power of two): about 100 KiB a worker.
const SLOTS: usize = 512;
/// The longest signed part (decoded name, or prefix) an entry holds, in bytes.
const SIGNED_BYTES_MAX: usize = 128;

#[derive(Clone)]
struct Entry {
    /// The [`LinkKeys`] id that verified the link; 0 marks an empty slot.
    keys_id: u64,
    expires_unix: u64,
    components: usize,
    /// The client address an address-bound link was verified for (canonical form).
    address: Option<IpAddr>,
    signed_len: usize,
    signed: [u8; SIGNED_BYTES_MAX],
    sig: [u8; 32],
}

impl Entry {
    const EMPTY: Entry = Entry {
        keys_id: 0,
        expires_unix: 0,
        components: 0,
        address: None,
        signed_len: 0,
        signed: [0; SIGNED_BYTES_MAX],
        sig: [0; 32],
    };

    fn holds(&self, keys_id: u64, link: &SignedPath<'_>, address: Option<IpAddr>) -> bool {
        self.keys_id == keys_id
            && self.expires_unix == link.expires_unix
            && self.components == link.components
            && self.address == address
            && self.signed[..self.signed_len] == *link.signed_part().as_bytes()
            && ct_eq(&self.sig, &link.sig)
    }
}

/// Links verified by one worker: see the module doc.
pub struct LinkMemo {
    slots: Box<[Entry]>,
    hits: u64,
    checked: u64,
}

thread_local! {
    /// Each worker thread's memo, made at its first signed link.
    static THIS_THREAD: RefCell<LinkMemo> = RefCell::new(LinkMemo::new());
}

impl Default for LinkMemo {
    fn default() -> Self {
        LinkMemo::new()
    }
}

impl LinkMemo {
    pub fn new() -> LinkMemo {
        LinkMemo {
            slots: vec![Entry::EMPTY; SLOTS].into_boxed_slice(),
            hits: 0,
            checked: 0,
        }
    }

    /// [`LinkMemo::verify`] with the calling thread's memo (a worker's own: no lock, nothing
    /// shared between workers).
    pub fn verify_on_this_thread<'a>(
        keys: &LinkKeys,
        path: &'a str,
        now_unix: u64,
        client: IpAddr,
    ) -> Result<Cow<'a, str>, LinkError> {
        THIS_THREAD.with(|memo| memo.borrow_mut().verify(keys, path, now_unix, client))
    }

    /// What [`super::verify`] answers for the same arguments, with an HMAC only for a link this
    /// memo does not hold as verified under `keys`.
    pub fn verify<'a>(
        &mut self,
        keys: &LinkKeys,
        path: &'a str,
        now_unix: u64,
        client: IpAddr,
    ) -> Result<Cow<'a, str>, LinkError> {
        let link = parse(path)?;
        let address = link.address_bound.then(|| client.to_canonical());
        let slot = usize::from(u16::from_le_bytes([link.sig[0], link.sig[1]])) % SLOTS;
        if self.slots[slot].holds(keys.id, &link, address) {
            self.hits += 1;
        } else {
            check_signature(keys, &link, client)?;
            self.checked += 1;
            let signed = link.signed_part().as_bytes();
            if signed.len() <= SIGNED_BYTES_MAX {
                let entry = &mut self.slots[slot];
                entry.keys_id = keys.id;
                entry.expires_unix = link.expires_unix;
                entry.components = link.components;
                entry.address = address;
                entry.signed_len = signed.len();
                entry.signed[..signed.len()].copy_from_slice(signed);
                entry.sig = link.sig;
            }
        }
        opens_at(link, now_unix)
    }

    /// Requests answered from the memo since it was made.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Signatures checked with an HMAC that passed, since the memo was made.
    pub fn checked(&self) -> u64 {
        self.checked
    }
}

#[cfg(test)]
mod tests;
