//! Signed links for private media: a path that opens one object, or every object under a
//! package prefix, until a time, optionally only for one client address.
//!
//! Refusals follow nginx's `secure_link`: a malformed, altered or wrongly signed link answers
//! 403, an expired one 410 ([`LinkError::status`]). This module only signs and checks paths; it
//! does not read the clock (`now_unix` is an argument), look objects up, or decide who may sign.
//!
//! # Format
//!
//! Everything the signature covers is in the path, never in the query, so a link to a package
//! survives HLS relative URI resolution: from `/s/<sig>/<exp>/1/show/index.m3u8` a player
//! resolves `seg1.ts` to `/s/<sig>/<exp>/1/show/seg1.ts` and `720p/index.m3u8` to
//! `/s/<sig>/<exp>/1/show/720p/index.m3u8`, and both verify.
//!
//! ```text
//! /s/<sig>/<expires>/<scope>/<name>
//! ```
//!
//! Byte by byte (the caller passes the raw request path, still percent-encoded, without the
//! `?query`; a `?` or `#` inside it is malformed):
//!
//! 1. `/s/`: three bytes, the route.
//! 2. `<sig>`: exactly 43 base64url characters (`A-Z a-z 0-9 - _`, no `=`) holding the 32 bytes
//!    of an HMAC-SHA256; the last character's two spare bits must be zero. Then `/`.
//! 3. `<expires>`: the last valid second as Unix time, 1 to 12 ASCII digits, no sign, no
//!    leading zero (`0` itself is allowed). The link is expired when `now_unix > expires`.
//!    Then `/`.
//! 4. `<scope>`: 1 or 2 ASCII digits without a leading zero, `0` to `16`, optionally followed
//!    by `i`. `0` signs exactly the whole name (one object); `k` signs the name's first `k`
//!    `/`-separated components with the `/` after them (a package prefix: `show/` for `1`,
//!    `a/b/` for `2`), and the name must then have more than `k` components. The `i` suffix
//!    binds the link to the client address given at signing. Then `/`.
//! 5. `<name>`: the rest of the path, the object name. Raw bytes are printable ASCII other than
//!    `\`, `?` and `#`; `%` starts an escape of two hex digits (either case), decoded once.
//!    The decoded name is UTF-8 of 1 to 1024 bytes, without control bytes or `\`; its
//!    `/`-separated segments are neither empty (no leading, trailing or doubled `/`) nor `.`
//!    nor `..`, and no `/` comes from an escape (`%2F`). At most 3072 raw bytes.
//!
//! The signature is HMAC-SHA256 under the current key over the UTF-8 bytes of
//!
//! ```text
//! oasis-link-v1\n<expires>\n<scope digits>\n<signed part>\n<address>
//! ```
//!
//! with `<expires>` and `<scope digits>` exactly as in the path (the digits without `i`),
//! `<signed part>` the decoded whole name (scope 0) or decoded prefix ending in `/`, and
//! `<address>` the client address as Rust prints it (IPv4 dotted quad, IPv6 in RFC 5952 form,
//! an IPv4-mapped IPv6 address as its IPv4 form) for an `i` link, or nothing.
//!
//! The name is signed decoded, so `%73how/x` and `show/x` are the same link; [`sign`] writes
//! names with every byte outside `A-Z a-z 0-9 - . _ ~ ! $ & ' ( ) * + , ; = : @ /` escaped.
//!
//! The address is not written in the path (a shared link does not tell where its owner was),
//! so a verifier checks an `i` link's signature over the requesting client's address. A
//! mismatch then cannot tell an altered link from another address: it is reported as
//! [`LinkError::WrongAddress`], before expiry, like every failed signature.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::token::{ct_eq, decode_b64_32};
use crate::http::percent_decode;

mod memo;
pub use memo::LinkMemo;

/// The route every signed link path starts with.
pub const LINK_PREFIX: &str = "/s/";
/// Largest decoded object name, in bytes.
pub const NAME_BYTES_MAX: usize = 1024;
/// Largest raw (percent-encoded) object name, in bytes: every byte escaped.
pub const NAME_RAW_BYTES_MAX: usize = 3 * NAME_BYTES_MAX;
/// Most name components a prefix scope may sign.
pub const SCOPE_COMPONENTS_MAX: usize = 16;
/// Most digits of `<expires>`.
pub const EXPIRES_DIGITS_MAX: usize = 12;
/// Latest expiry a link can carry (Unix seconds): twelve nines.
pub const EXPIRES_UNIX_MAX: u64 = 999_999_999_999;
/// Shortest key accepted, in bytes.
pub const KEY_BYTES_MIN: usize = 32;
/// Longest key accepted, in bytes.
pub const KEY_BYTES_MAX: usize = 1024;
/// Most keys at once: the current one and the previous one during a rotation.
pub const KEYS_MAX: usize = 2;

const SCOPE_DIGITS_MAX: usize = 2;
const MESSAGE_DOMAIN: &[u8] = b"oasis-link-v1\n";

const _: () = assert!(EXPIRES_UNIX_MAX.ilog10() as usize + 1 == EXPIRES_DIGITS_MAX);
const _: () = assert!(SCOPE_COMPONENTS_MAX.ilog10() as usize + 1 == SCOPE_DIGITS_MAX);

/// The keys links are signed and checked with: the first signs, all verify; 1..=2 keys.
///
/// Each key's HMAC state is prepared once here and cloned per signature. Every set of keys
/// made by [`LinkKeys::new`] has an id of its own (a clone shares it), which is what a
/// [`LinkMemo`] keys its entries on: a reload's new keys never meet links verified under old ones.
#[derive(Clone)]
pub struct LinkKeys {
    macs: Vec<Hmac<Sha256>>,
    id: u64,
}

/// The last [`LinkKeys`] id handed out (ids start at 1; 0 marks an empty memo slot).
static LINK_KEYS_LAST_ID: AtomicU64 = AtomicU64::new(0);

impl LinkKeys {
    /// Keys from configuration text; each at least 32 bytes (as given: text is used as
    /// bytes). Err with a clear message otherwise, or when 0 or more than 2 keys.
    pub fn new(keys: &[impl AsRef<[u8]>]) -> Result<LinkKeys, String> {
        if keys.is_empty() || keys.len() > KEYS_MAX {
            return Err(format!(
                "signed links need 1 or {KEYS_MAX} keys (the current one, then the previous one \
                 while links it signed are still in use); {} given",
                keys.len()
            ));
        }
        let mut macs = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            let key = key.as_ref();
            let which = index + 1;
            if key.len() < KEY_BYTES_MIN {
                return Err(format!(
                    "link key {which} is {} bytes; use at least {KEY_BYTES_MIN} random bytes, \
                     e.g. the output of `openssl rand -base64 48`",
                    key.len()
                ));
            }
            if key.len() > KEY_BYTES_MAX {
                return Err(format!(
                    "link key {which} is {} bytes; keys longer than {KEY_BYTES_MAX} bytes add \
                     nothing, use 32 to 64 random bytes",
                    key.len()
                ));
            }
            let mac = Hmac::<Sha256>::new_from_slice(key)
                .map_err(|err| format!("link key {which} cannot key HMAC-SHA256: {err}"))?;
            macs.push(mac);
        }
        let id = LINK_KEYS_LAST_ID.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(LinkKeys { macs, id })
    }
}

impl fmt::Debug for LinkKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        f.debug_struct("LinkKeys")
            .field("keys", &self.macs.len())
            .finish()
    }
}

/// What a link opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Exactly one object, by its name (`films/a.mp4`).
    Object(&'a str),
    /// Every object under a package prefix, which ends with `/` (`show/`, `a/b/`).
    Prefix(&'a str),
}

/// The path (starting with "/s/") of a link to `scope`, valid until `expires_unix`, optionally
/// bound to `ip`; for a prefix scope, `object` is the object within it the link opens (e.g.
/// "show/index.m3u8"), which must start with the prefix. For an object scope, `object` is that
/// object's name again. Err for invalid input (prefix without '/', object outside prefix, more
/// than 16 components, a name the format refuses, an expiry past [`EXPIRES_UNIX_MAX`]).
///
/// Names are given decoded (as stored); the path carries them percent-encoded.
pub fn sign(
    keys: &LinkKeys,
    scope: Scope<'_>,
    object: &str,
    expires_unix: u64,
    ip: Option<IpAddr>,
) -> Result<String, String> {
    if expires_unix > EXPIRES_UNIX_MAX {
        return Err(format!(
            "link expiry {expires_unix} is past {EXPIRES_UNIX_MAX} (Unix seconds, 12 digits); \
             pass a Unix time in seconds"
        ));
    }
    check_name(object).map_err(|why| format!("object name {object:?} {why}"))?;
    let (components, signed_part) = match scope {
        Scope::Object(name) => {
            if name != object {
                return Err(format!(
                    "an object link opens its own object: {name:?} was signed but {object:?} \
                     asked for"
                ));
            }
            (0, object)
        }
        Scope::Prefix(prefix) => {
            let Some(stem) = prefix.strip_suffix('/') else {
                return Err(format!(
                    "prefix {prefix:?} must end with '/' (e.g. \"show/\")"
                ));
            };
            check_name(stem).map_err(|why| format!("prefix {prefix:?} {why}"))?;
            let components = stem.split('/').count();
            if components > SCOPE_COMPONENTS_MAX {
                return Err(format!(
                    "prefix {prefix:?} has {components} components; at most \
                     {SCOPE_COMPONENTS_MAX} can be signed"
                ));
            }
            if !object.starts_with(prefix) {
                return Err(format!(
                    "object {object:?} is not inside prefix {prefix:?}; pass an object whose \
                     name starts with the prefix (e.g. its playlist)"
                ));
            }
            (components, prefix)
        }
    };
    let expires = expires_unix.to_string();
    let scope_digits = components.to_string();
    let address = ip.map(address_text);
    let mac = link_mac(
        &keys.macs[0],
        &expires,
        &scope_digits,
        signed_part,
        address.as_deref().unwrap_or(""),
    );
    let mut path = String::with_capacity(LINK_PREFIX.len() + 64 + 3 * object.len());
    path.push_str(LINK_PREFIX);
    URL_SAFE_NO_PAD.encode_string(mac, &mut path);
    path.push('/');
    path.push_str(&expires);
    path.push('/');
    path.push_str(&scope_digits);
    if address.is_some() {
        path.push('i');
    }
    path.push('/');
    encode_name(object, &mut path);
    debug_assert!(
        parse(&path).is_ok(),
        "sign wrote a path parse refuses: {path}"
    );
    Ok(path)
}

/// A signed link path taken apart and checked for form; its signature is not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPath<'a> {
    sig: [u8; 32],
    expires_digits: &'a str,
    expires_unix: u64,
    scope_digits: &'a str,
    components: usize,
    address_bound: bool,
    name: Cow<'a, str>,
    signed_bytes: usize,
}

impl<'a> SignedPath<'a> {
    /// The last second (Unix time) the link is valid in.
    pub fn expires_unix(&self) -> u64 {
        self.expires_unix
    }

    /// How many name components the signature covers: 0 for the whole name (one object).
    pub fn scope_components(&self) -> usize {
        self.components
    }

    /// Whether the link only opens for the client address it was signed for.
    pub fn is_address_bound(&self) -> bool {
        self.address_bound
    }

    /// The object name the link asks for, percent-decoded.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The part of [`name`](Self::name) the signature covers: all of it, or the prefix up to
    /// and including the `k`-th `/`.
    pub fn signed_part(&self) -> &str {
        &self.name[..self.signed_bytes]
    }

    /// The decoded name, owned or borrowed from the path.
    pub fn into_name(self) -> Cow<'a, str> {
        self.name
    }
}

/// Takes a raw request path (without the query) apart as the module doc describes; only
/// [`LinkError::Malformed`] comes out of here.
pub fn parse(path: &str) -> Result<SignedPath<'_>, LinkError> {
    let rest = path.strip_prefix(LINK_PREFIX).ok_or(LinkError::Malformed)?;
    let (sig_text, rest) = rest.split_once('/').ok_or(LinkError::Malformed)?;
    let (expires_digits, rest) = rest.split_once('/').ok_or(LinkError::Malformed)?;
    let (scope_field, raw_name) = rest.split_once('/').ok_or(LinkError::Malformed)?;

    let sig = decode_b64_32(sig_text).ok_or(LinkError::Malformed)?;
    let expires_unix =
        parse_decimal(expires_digits, EXPIRES_DIGITS_MAX).ok_or(LinkError::Malformed)?;
    let (scope_digits, address_bound) = match scope_field.strip_suffix('i') {
        Some(digits) => (digits, true),
        None => (scope_field, false),
    };
    let components = parse_decimal(scope_digits, SCOPE_DIGITS_MAX)
        .and_then(|k| usize::try_from(k).ok())
        .filter(|&k| k <= SCOPE_COMPONENTS_MAX)
        .ok_or(LinkError::Malformed)?;

    let name = decode_name(raw_name).ok_or(LinkError::Malformed)?;
    check_name(&name).map_err(|_| LinkError::Malformed)?;
    let signed_bytes = if components == 0 {
        name.len()
    } else {
        // The k-th '/' ends the prefix; names never end with '/', so one more component follows.
        name.match_indices('/')
            .nth(components - 1)
            .map(|(at, _)| at + 1)
            .ok_or(LinkError::Malformed)?
    };
    Ok(SignedPath {
        sig,
        expires_digits,
        expires_unix,
        scope_digits,
        components,
        address_bound,
        name,
        signed_bytes,
    })
}

/// Why a link does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// Not a path of the documented form, or a name the format refuses.
    Malformed,
    /// The signature matches none of the keys: an altered link, or one signed with a key no
    /// longer configured.
    BadSignature,
    /// Correctly signed, but past its expiry.
    Expired,
    /// An address-bound link whose signature does not match for the requesting client: another
    /// address, or an altered link (the two cannot be told apart).
    WrongAddress,
}

impl LinkError {
    /// The HTTP status to answer with: 410 for [`Expired`](Self::Expired), 403 otherwise.
    pub fn status(self) -> u16 {
        match self {
            Self::Expired => 410,
            Self::Malformed | Self::BadSignature | Self::WrongAddress => 403,
        }
    }

    /// What was wrong, for logs (not sent to the client).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed signed link (expected /s/<sig>/<expires>/<scope>/<name>)",
            Self::BadSignature => {
                "signed link does not match any key (altered, or signed with a retired key)"
            }
            Self::Expired => "signed link has expired",
            Self::WrongAddress => "signed link is bound to another client address (or was altered)",
        }
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for LinkError {}

/// Verifies with every key (the current first); returns the object name (percent-decoded,
/// owned or borrowed) the link opens.
///
/// Order: form ([`LinkError::Malformed`]), signature ([`LinkError::BadSignature`], or
/// [`LinkError::WrongAddress`] for an address-bound link), then expiry
/// ([`LinkError::Expired`], only for a correctly signed link; expired means
/// `now_unix > expires`). A valid link costs one HMAC under the current key, two when the
/// previous key signed it.
pub fn verify<'a>(
    keys: &LinkKeys,
    path: &'a str,
    now_unix: u64,
    client: IpAddr,
) -> Result<Cow<'a, str>, LinkError> {
    let link = parse(path)?;
    check_signature(keys, &link, client)?;
    opens_at(link, now_unix)
}

/// Whether one of `keys` signed `link` for `client`: the HMAC half of [`verify`].
fn check_signature(
    keys: &LinkKeys,
    link: &SignedPath<'_>,
    client: IpAddr,
) -> Result<(), LinkError> {
    let address = link.address_bound.then(|| address_text(client));
    let address = address.as_deref().unwrap_or("");
    let signed = keys.macs.iter().any(|key| {
        let mac = link_mac(
            key,
            link.expires_digits,
            link.scope_digits,
            link.signed_part(),
            address,
        );
        ct_eq(&mac, &link.sig)
    });
    if signed {
        Ok(())
    } else if link.address_bound {
        Err(LinkError::WrongAddress)
    } else {
        Err(LinkError::BadSignature)
    }
}

/// The name a correctly signed `link` opens at `now_unix`, or [`LinkError::Expired`].
fn opens_at(link: SignedPath<'_>, now_unix: u64) -> Result<Cow<'_, str>, LinkError> {
    if now_unix > link.expires_unix {
        return Err(LinkError::Expired);
    }
    Ok(link.into_name())
}

/// HMAC-SHA256 of the signed message (see the module doc) under a prepared key.
fn link_mac(
    key: &Hmac<Sha256>,
    expires_digits: &str,
    scope_digits: &str,
    signed_part: &str,
    address: &str,
) -> [u8; 32] {
    let mut mac = key.clone();
    mac.update(MESSAGE_DOMAIN);
    mac.update(expires_digits.as_bytes());
    mac.update(b"\n");
    mac.update(scope_digits.as_bytes());
    mac.update(b"\n");
    mac.update(signed_part.as_bytes());
    mac.update(b"\n");
    mac.update(address.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The client address as signed: IPv4-mapped IPv6 as IPv4, IPv6 in RFC 5952 form.
fn address_text(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

/// A decimal number of 1..=`digits_max` ASCII digits without a leading zero; `None` otherwise.
fn parse_decimal(text: &str, digits_max: usize) -> Option<u64> {
    let valid = !text.is_empty()
        && text.len() <= digits_max
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    // At most 12 digits: fits a u64 with room to spare.
    valid.then(|| text.parse().ok()).flatten()
}

/// The raw name decoded once: `None` for a byte the format refuses raw, a bad escape, an
/// escaped `/`, or bytes that are not UTF-8. Borrowed when there is no escape.
fn decode_name(raw: &str) -> Option<Cow<'_, str>> {
    if raw.len() > NAME_RAW_BYTES_MAX
        || raw
            .bytes()
            .any(|b| !(0x21..=0x7e).contains(&b) || matches!(b, b'\\' | b'?' | b'#'))
    {
        return None;
    }
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    let decoded = percent_decode(raw.as_bytes())?;
    let slashes = |bytes: &[u8]| bytes.iter().filter(|&&b| b == b'/').count();
    // More '/' after decoding than before: one came from %2F, which would move a boundary.
    if slashes(&decoded) != slashes(raw.as_bytes()) {
        return None;
    }
    String::from_utf8(decoded).ok().map(Cow::Owned)
}

/// Whether a decoded name is one the format accepts; `Err` says why not, to follow the name.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > NAME_BYTES_MAX {
        return Err("is longer than 1024 bytes");
    }
    if name.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("contains a control character");
    }
    if name.contains('\\') {
        return Err("contains a backslash");
    }
    for segment in name.split('/') {
        match segment {
            "" => return Err("has an empty segment (a leading, trailing or doubled '/')"),
            "." | ".." => return Err("has a '.' or '..' segment"),
            _ => {}
        }
    }
    Ok(())
}

/// Appends `name` to `out`, escaping (as `%XX`) every byte a path may not carry raw or that
/// could read as something else: all but unreserved characters, sub-delims, `:`, `@`, `/`.
pub(crate) fn encode_name(name: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in name.as_bytes() {
        let raw = byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&byte);
        if raw {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests;
