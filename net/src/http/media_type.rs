//! The `Content-Type` an uploader sends: RFC 9110 §8.3.1 media type syntax.
//!
//! `type "/" subtype *( OWS ";" OWS name "=" ( token / quoted-string ) )`. This module only
//! judges syntax; it never maps names to types (that is storage's extension table).

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

fn is_quoted_string(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return false;
    };
    let mut escaped = false;
    for b in inner.bytes() {
        match (escaped, b) {
            (true, b'\t' | b' '..=b'~' | 0x80..=0xff) => escaped = false,
            (true, _) => return false,
            (false, b'\\') => escaped = true,
            (false, b'"') => return false,
            (false, b'\t' | b' '..=b'~' | 0x80..=0xff) => {}
            (false, _) => return false,
        }
    }
    !escaped
}

/// Whether `value` is a well-formed media type, e.g. `video/mp4` or `text/plain; charset=utf-8`.
pub fn is_valid_media_type(value: &str) -> bool {
    let mut parts = value.split(';');
    let essence = parts
        .next()
        .unwrap_or_default()
        .trim_end_matches([' ', '\t']);
    let Some((ty, subtype)) = essence.split_once('/') else {
        return false;
    };
    if !is_token(ty) || !is_token(subtype) {
        return false;
    }
    parts.all(|param| {
        let param = param.trim_matches([' ', '\t']);
        match param.split_once('=') {
            Some((name, v)) => is_token(name) && (is_token(v) || is_quoted_string(v)),
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        for ok in [
            "video/mp4",
            "application/vnd.apple.mpegurl",
            "text/plain; charset=utf-8",
            "text/plain;charset=\"utf-8\"",
            "video/mp4; codecs=\"avc1.42E01E, mp4a.40.2\"",
        ] {
            assert!(is_valid_media_type(ok), "{ok}");
        }
        for bad in [
            "",
            "video",
            "video/",
            "/mp4",
            "video /mp4",
            "video/mp4;",
            "video/mp4; codecs",
            "video/mp4; a=\"unterminated",
            "text/plain; charset=utf 8",
            "vidéo/mp4",
        ] {
            assert!(!is_valid_media_type(bad), "{bad:?}");
        }
    }
}
