//! The bounds every HTTP parser in this crate obeys.
//!
//! One struct, set at start-up from the configuration and passed by reference into the parsers.
//! This module only holds numbers and checks that they are coherent; it must never be consulted
//! for anything but sizes and counts, and no parser may accept input beyond these bounds.

/// Upper bound on [`HttpLimits::headers_count_max`]: the request parser keeps its header slots
/// on the stack (32 bytes each), so this caps that stack use at 4 KiB.
pub const HEADERS_COUNT_CAP: usize = 128;

/// Size and count limits for parsing requests and request bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest request line (method, target, version; without the CRLF). Beyond it: 414.
    pub request_line_bytes_max: usize,
    /// Largest request head, request line and final empty line included. Beyond it: 431.
    pub header_bytes_max: usize,
    /// Most header fields in one request. Beyond it: 431. At most [`HEADERS_COUNT_CAP`].
    pub headers_count_max: usize,
    /// Most ranges honoured in one `Range` header; more and the whole object is served.
    pub ranges_count_max: usize,
    /// Longest chunk-size line in a chunked body (size, extensions, CRLF). Beyond it: 400.
    pub chunk_line_bytes_max: usize,
    /// Longest chunk extension (everything after the size on its line). Beyond it: 400.
    pub chunk_extension_bytes_max: usize,
    /// Largest trailer section of a chunked body, final CRLF included. Beyond it: 400.
    pub trailer_bytes_max: usize,
    /// Largest decoded request body accepted through chunked coding. Beyond it: 413.
    pub body_bytes_max: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            request_line_bytes_max: 8192,
            header_bytes_max: 16384,
            headers_count_max: 64,
            ranges_count_max: 32,
            chunk_line_bytes_max: 1024,
            chunk_extension_bytes_max: 256,
            trailer_bytes_max: 4096,
            body_bytes_max: 64 * 1024 * 1024 * 1024,
        }
    }
}

const _: () = assert!(HEADERS_COUNT_CAP >= 64);

impl HttpLimits {
    /// Checks that the limits are coherent; call once at start-up and refuse to start on error.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.headers_count_max > HEADERS_COUNT_CAP {
            return Err("headers_count_max is above HEADERS_COUNT_CAP (128); lower it");
        }
        if self.request_line_bytes_max == 0 || self.header_bytes_max == 0 {
            return Err("request_line_bytes_max and header_bytes_max must be positive");
        }
        if self.request_line_bytes_max > self.header_bytes_max {
            return Err("request_line_bytes_max must not exceed header_bytes_max");
        }
        if self.chunk_extension_bytes_max >= self.chunk_line_bytes_max {
            return Err("chunk_extension_bytes_max must be below chunk_line_bytes_max");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_documented_values() {
        let limits = HttpLimits::default();
        assert_eq!(limits.validate(), Ok(()));
        assert_eq!(limits.request_line_bytes_max, 8192);
        assert_eq!(limits.header_bytes_max, 16384);
        assert_eq!(limits.headers_count_max, 64);
    }

    #[test]
    fn incoherent_limits_are_rejected() {
        let too_many = HttpLimits {
            headers_count_max: HEADERS_COUNT_CAP + 1,
            ..Default::default()
        };
        assert!(too_many.validate().is_err());
        let line_over_head = HttpLimits {
            request_line_bytes_max: 20000,
            ..Default::default()
        };
        assert!(line_over_head.validate().is_err());
        let ext_over_line = HttpLimits {
            chunk_extension_bytes_max: 2000,
            ..Default::default()
        };
        assert!(ext_over_line.validate().is_err());
    }
}
