//! The request head parser on arbitrary bytes: never panics, and what it accepts keeps the
//! promises the session relies on (consumed within the input, a normalized path, no smuggling).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oasis_net::http::{parse_request, HttpLimits, Parse};

fuzz_target!(|data: &[u8]| {
    let limits = HttpLimits::default();
    let Ok(Parse::Complete(head, consumed)) = parse_request(data, &limits) else {
        return;
    };
    assert!(consumed <= data.len());
    assert!(consumed <= limits.header_bytes_max);
    assert!(head.path == "*" || head.path.starts_with('/'), "{:?}", head.path);
    assert!(
        !head.path.split('/').any(|seg| seg == ".." || seg == "."),
        "unnormalized path {:?}",
        head.path
    );
    // Content-Length together with chunked is refused, never resolved one way or the other.
    assert!(!(head.chunked && head.content_length.is_some()));
});
