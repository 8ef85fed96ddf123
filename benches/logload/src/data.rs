//! The bytes every log benchmark sends: syslog-style lines, one stream per connection, each line
//! naming its connection and sequence number so a receiver's output can be checked for lost and
//! repeated lines. The same bytes go to `oasis logd` (in `DATA` frames), to rsyslog and to the
//! plain baselines.
//!
//! A line: `<13>Dec  6 12:00:00 bench app[CONN]: CONN SEQ FILLER\n`, 90 to 250 bytes, its filler
//! drawn from (conn, seq). Lines never start with a digit (rsyslog's `imptcp` would take one for
//! an octet count).

use std::collections::HashMap;

/// The letters of a line's filler.
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ=:/.";

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Line `seq` of connection `conn`.
pub fn line(conn: u32, seq: u64, out: &mut Vec<u8>) {
    let mut h = mix((u64::from(conn) << 40) ^ seq);
    out.extend_from_slice(
        format!("<13>Dec  6 12:00:00 bench app[{conn}]: {conn:05} {seq:010} ").as_bytes(),
    );
    let filler = 40 + (h % 160) as usize;
    for i in 0..filler {
        if i % 12 == 0 {
            h = mix(h);
        }
        out.push(ALPHABET[((h >> ((i % 12) * 5)) % ALPHABET.len() as u64) as usize]);
    }
    out.push(b'\n');
}

/// Connection `conn`'s stream: whole lines, at least `bytes` of them; and how many lines.
pub fn stream(conn: u32, bytes: u64) -> (Vec<u8>, u64) {
    let mut out = Vec::with_capacity(bytes as usize + 256);
    let mut seq = 0;
    while (out.len() as u64) < bytes {
        line(conn, seq, &mut out);
        seq += 1;
    }
    (out, seq)
}

/// Lost and repeated lines of received output against what `conns` connections of `lines`
/// lines each sent.
#[derive(Debug, Default)]
pub struct Tally {
    /// Lines sent that are not in the output.
    pub lost: u64,
    /// Lines in the output more often than once (each extra copy counted).
    pub duplicated: u64,
    /// Output lines that are not lines sent (cut, mangled).
    pub corrupt: u64,
    /// Lines in the output.
    pub held: u64,
}

/// Counts `output` (any number of chunks, e.g. files) against `lines[conn]` lines sent by each
/// connection.
pub fn tally<'a>(lines: &[u64], output: impl IntoIterator<Item = &'a [u8]>) -> Tally {
    let mut seen: HashMap<(u32, u64), u32> = HashMap::new();
    let mut t = Tally::default();
    let mut want = Vec::new();
    for chunk in output {
        for l in chunk.split_inclusive(|&b| b == b'\n') {
            t.held += 1;
            let Some((conn, seq)) = parse(l) else {
                t.corrupt += 1;
                continue;
            };
            want.clear();
            line(conn, seq, &mut want);
            if want != l || (conn as usize) >= lines.len() || seq >= lines[conn as usize] {
                t.corrupt += 1;
                continue;
            }
            *seen.entry((conn, seq)).or_default() += 1;
        }
    }
    for (conn, &n) in lines.iter().enumerate() {
        for seq in 0..n {
            match seen.get(&(conn as u32, seq)) {
                None => t.lost += 1,
                Some(&k) => t.duplicated += u64::from(k - 1),
            }
        }
    }
    t
}

/// The connection and sequence number a line claims.
fn parse(l: &[u8]) -> Option<(u32, u64)> {
    let text = std::str::from_utf8(l).ok()?;
    let rest = text.split_once("]: ")?.1;
    let mut parts = rest.split(' ');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_lost_repeated_and_corrupt() {
        let (a, na) = stream(0, 2000);
        let (b, nb) = stream(1, 1000);
        assert!(a.len() >= 2000 && a[0] == b'<');
        let clean = tally(&[na, nb], [&a[..], &b[..]]);
        assert_eq!((clean.lost, clean.duplicated, clean.corrupt), (0, 0, 0));
        assert_eq!(clean.held, na + nb);
        // b's first line twice, a's last line missing, and a line cut in two.
        let first_b = b.iter().position(|&c| c == b'\n').unwrap() + 1;
        let last_a = a[..a.len() - 1].iter().rposition(|&c| c == b'\n').unwrap() + 1;
        let mut out = a[..last_a].to_vec();
        out.extend_from_slice(&b[..first_b]);
        out.extend_from_slice(&b[..first_b / 2]);
        out.push(b'\n');
        out.extend_from_slice(&b);
        let t = tally(&[na, nb], [&out[..]]);
        assert_eq!((t.lost, t.duplicated, t.corrupt), (1, 1, 1));
    }
}
