//! Bearer tokens: generation, the hash a catalog stores, and constant-time comparison.
//!
//! A token is `oasis_` followed by the unpadded base64url text of 32 bytes from the operating
//! system's random source (49 ASCII characters). It is shown to its user once; the server keeps
//! only its SHA-256 ([`hash`]), so a leaked catalog does not leak usable tokens. A token carries
//! 256 random bits, so an unsalted fast hash is enough: there is nothing to guess from it.
//!
//! This module does not look tokens up, expire them, or decide what they allow.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Length in bytes of the random part (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// What every token starts with, so that one is recognizable in a config file or a leak scan.
pub const TOKEN_PREFIX: &str = "oasis_";

/// Characters of the base64url text of [`TOKEN_BYTES`] bytes, without padding.
pub(crate) const B64_32_CHARS: usize = (TOKEN_BYTES * 8).div_ceil(6);

/// Length in characters (and bytes: all ASCII) of a whole token.
pub const TOKEN_CHARS: usize = TOKEN_PREFIX.len() + B64_32_CHARS;

const _: () = assert!(B64_32_CHARS == 43 && TOKEN_CHARS == 49);

/// A fresh token: "oasis_" + base64url-no-pad of 32 random bytes from the OS (getrandom).
/// Shown once to the user.
///
/// # Panics
/// When the operating system's random source fails, which on Linux means `getrandom(2)` is
/// missing or broken: no token may be made without it.
pub fn generate() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    if let Err(err) = getrandom::fill(&mut bytes) {
        panic!("the operating system's random source failed ({err}); cannot make a token");
    }
    let mut token = String::with_capacity(TOKEN_CHARS);
    token.push_str(TOKEN_PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut token);
    debug_assert_eq!(token.len(), TOKEN_CHARS);
    token
}

/// SHA-256 of the token text: what the catalog stores.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two byte strings (time depends only on lengths).
///
/// Unequal lengths answer `false` at once; equal lengths are compared in full, without a
/// branch on the bytes, so a timing observer learns nothing about where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keeps the optimizer from turning the loop into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// Whether `s` looks like a token this module generated (prefix, length, alphabet): lets
/// callers reject junk before hashing.
///
/// The random part must be canonical base64url: its last character may only carry zero
/// padding bits, so each token has exactly one spelling.
pub fn looks_like_token(s: &str) -> bool {
    s.len() == TOKEN_CHARS
        && s.strip_prefix(TOKEN_PREFIX)
            .is_some_and(|text| decode_b64_32(text).is_some())
}

/// Decodes the canonical unpadded base64url text of exactly 32 bytes; `None` for any other
/// length, a character outside the alphabet, or non-zero padding bits.
pub(crate) fn decode_b64_32(text: &str) -> Option<[u8; 32]> {
    if text.len() != B64_32_CHARS {
        return None;
    }
    // The engine's length estimate for 43 characters is 33 bytes; the decoded count is exact.
    let mut out = [0u8; 33];
    let written = URL_SAFE_NO_PAD.decode_slice(text, &mut out).ok()?;
    if written != 32 {
        return None;
    }
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&out[..32]);
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_documented_shape_and_differ() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), TOKEN_CHARS);
        assert!(a.starts_with("oasis_"), "{a}");
        assert!(a[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert!(looks_like_token(&a) && looks_like_token(&b));
        // 256 random bits each: equal would mean the random source is broken.
        assert_ne!(a, b);
    }

    #[test]
    fn hash_is_sha256_of_the_text() {
        // FIPS 180-2 test vector: SHA-256("abc").
        let expected = [
            0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
            0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61,
            0xf2, 0x00, 0x15, 0xad,
        ];
        assert_eq!(hash("abc"), expected);
        let token = generate();
        assert_eq!(hash(&token), hash(&token.clone()));
        assert_ne!(hash(&token), hash(&generate()));
    }

    #[test]
    fn ct_eq_compares_content_and_length() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"same bytes", b"same bytes"));
        assert!(!ct_eq(b"same bytes", b"same bytez"));
        assert!(!ct_eq(b"Same bytes", b"same bytes"));
        assert!(!ct_eq(b"short", b"shorter"));
        assert!(!ct_eq(b"", b"x"));
        let h = hash("x");
        let mut other = h;
        other[31] ^= 1;
        assert!(ct_eq(&h, &h) && !ct_eq(&h, &other));
    }

    #[test]
    fn looks_like_token_refuses_junk() {
        let token = generate();
        let random = &token[TOKEN_PREFIX.len()..];
        assert!(!looks_like_token(""));
        assert!(!looks_like_token(random), "no prefix");
        assert!(
            !looks_like_token(&format!("OASIS_{random}")),
            "prefix is case-sensitive"
        );
        assert!(!looks_like_token(&format!("oasis-{random}")));
        assert!(!looks_like_token(&token[..TOKEN_CHARS - 1]), "too short");
        assert!(!looks_like_token(&format!("{token}A")), "too long");
        assert!(!looks_like_token(&format!("{token}=")), "padding");
        for bad in ['+', '/', '=', ' ', '.', 'é'] {
            let mut s = token.clone();
            s.replace_range(10..11, &bad.to_string());
            assert!(!looks_like_token(&s), "{s:?}");
        }
        // 43 characters hold 258 bits: the last one's two low bits must be zero ('A' is 0,
        // 'B' is 1), so "...B" is a second spelling of nothing this module makes.
        let zeros = format!("oasis_{}", "A".repeat(43));
        assert!(looks_like_token(&zeros));
        let mut non_canonical = zeros.clone();
        non_canonical.replace_range(48..49, "B");
        assert!(!looks_like_token(&non_canonical));
    }

    #[test]
    fn decode_b64_32_round_trips() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 11) as u8);
        let text = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(decode_b64_32(&text), Some(bytes));
        assert_eq!(decode_b64_32(&text[..42]), None);
        assert_eq!(decode_b64_32(&URL_SAFE_NO_PAD.encode([0u8; 33])), None);
    }
}
