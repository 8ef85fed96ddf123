//! Stream names: 1 to 200 bytes of `A-Z a-z 0-9 . _ - /`, not starting or ending with `/`, no
//! empty, `.` or `..` component (`PROTOCOL.md`). Pure.

/// Longest stream name, bytes.
pub const STREAM_NAME_BYTES_MAX: usize = 200;

/// Why a stream name is not valid (for a `REFUSE` 3's reason and for command-line errors).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad stream name {name:?}: {why}; use 1 to 200 of A-Z a-z 0-9 . _ - / with no empty, `.` or `..` part, e.g. web-1/access")]
pub struct BadStreamName {
    /// The name as given (cut to 64 characters).
    pub name: String,
    /// The rule it breaks.
    pub why: &'static str,
}

/// Checks a stream name against the protocol's rule.
pub fn validate_stream(name: &str) -> Result<(), BadStreamName> {
    let bad = |why| BadStreamName {
        name: name.chars().take(64).collect(),
        why,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > STREAM_NAME_BYTES_MAX {
        return Err(bad("it is longer than 200 bytes"));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/');
    if !name.bytes().all(allowed) {
        return Err(bad("it holds a character other than A-Z a-z 0-9 . _ - /"));
    }
    if name.starts_with('/') || name.ends_with('/') {
        return Err(bad("it starts or ends with /"));
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(bad("it has an empty, `.` or `..` part"));
    }
    Ok(())
}
