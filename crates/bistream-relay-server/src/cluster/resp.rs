//! A minimal RESP2 codec for the cluster's two hot Redis connections (the publisher's and the
//! subscriber's), so that each is driven straight from the task that uses it: no connection
//! driver task in between, commands written in big pipelines with no round trip awaited, and
//! pub/sub pushes handled where they are read. No I/O here.
//!
//! Only what those connections need: commands as arrays of bulk strings, and replies of the five
//! RESP2 kinds. Lengths from the server are checked against [`MAX_BULK`] and nesting against
//! [`MAX_DEPTH`], so a confused peer is a clear error, not a huge allocation.

use std::ops::Range;

/// Largest bulk string or array accepted (Redis's own `proto-max-bulk-len` default).
pub(crate) const MAX_BULK: usize = 512 * 1024 * 1024;
/// Deepest nesting of arrays accepted (our replies nest at most twice).
const MAX_DEPTH: usize = 4;

/// Appends the header of a command of `args` arguments.
pub(crate) fn command(out: &mut Vec<u8>, args: usize) {
    out.push(b'*');
    push_num(out, args);
    out.extend_from_slice(b"\r\n");
}

/// Appends one argument.
pub(crate) fn arg(out: &mut Vec<u8>, a: &[u8]) {
    bulk_header(out, a.len());
    out.extend_from_slice(a);
    out.extend_from_slice(b"\r\n");
}

/// Appends the header of an argument of `len` bytes; the caller writes the bytes, then
/// [`end_arg`].
pub(crate) fn bulk_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    push_num(out, len);
    out.extend_from_slice(b"\r\n");
}

/// Ends an argument started with [`bulk_header`].
pub(crate) fn end_arg(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal (no formatting machinery: this runs for every message).
pub(crate) fn push_num(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// One reply (or pub/sub push) from Redis, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int(i64),
    /// `None`: the null bulk string.
    Bulk(Option<&'a [u8]>),
    /// `None`: the null array.
    Array(Option<Vec<Reply<'a>>>),
}

impl Reply<'_> {
    /// The error text of an error reply.
    pub(crate) fn error_text(&self) -> Option<String> {
        match self {
            Reply::Error(e) => Some(String::from_utf8_lossy(e).into_owned()),
            _ => None,
        }
    }
}

/// The server sent something that is not RESP2 (or over our limits).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed reply from Redis: {0}")]
pub(crate) struct ProtocolError(&'static str);

/// Parses the first complete reply in `b`: `Ok(None)` if more bytes are needed, else the
/// reply and how many bytes it took.
pub(crate) fn parse(b: &[u8]) -> Result<Option<(Reply<'_>, usize)>, ProtocolError> {
    parse_at(b, 0, 0)
}

/// Finds every complete reply at the front of `b` (a subscribed connection's input): sets
/// `payloads` to where the payload of each pub/sub `message` among them lies in `b` (other
/// replies are skipped) and returns how many bytes the complete replies take.
pub(crate) fn message_payloads(
    b: &[u8],
    payloads: &mut Vec<Range<usize>>,
) -> Result<usize, ProtocolError> {
    payloads.clear();
    let mut at = 0;
    while let Some((r, next)) = parse_at(b, at, 0)? {
        if let Reply::Array(Some(items)) = r {
            if let [Reply::Bulk(Some(b"message")), _, Reply::Bulk(Some(payload))] = items.as_slice()
            {
                payloads.push(range_in(b, payload));
            }
        }
        at = next;
    }
    Ok(at)
}

/// Where `part` (a slice borrowed from `base`) lies in `base`.
fn range_in(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
    start..start + part.len()
}

fn parse_at(
    b: &[u8],
    pos: usize,
    depth: usize,
) -> Result<Option<(Reply<'_>, usize)>, ProtocolError> {
    let Some(rest) = b.get(pos..) else {
        return Ok(None);
    };
    let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") else {
        if rest.len() > 64 && rest.first() != Some(&b'+') && rest.first() != Some(&b'-') {
            return Err(ProtocolError("line too long"));
        }
        return Ok(None);
    };
    let (Some(&kind), Some(line)) = (rest.first(), rest.get(1..nl)) else {
        return Err(ProtocolError("empty line"));
    };
    let after = pos + nl + 2;
    match kind {
        b'+' => Ok(Some((Reply::Simple(line), after))),
        b'-' => Ok(Some((Reply::Error(line), after))),
        b':' => Ok(Some((Reply::Int(int(line)?), after))),
        b'$' => {
            let n = int(line)?;
            if n < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let n = len(n)?;
            let end = after + n;
            match (b.get(after..end), b.get(end..end + 2)) {
                (Some(data), Some(b"\r\n")) => Ok(Some((Reply::Bulk(Some(data)), end + 2))),
                (Some(_), Some(_)) => Err(ProtocolError("bulk string not ended by CRLF")),
                _ => Ok(None),
            }
        }
        b'*' => {
            let n = int(line)?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            if depth >= MAX_DEPTH {
                return Err(ProtocolError("arrays nested too deep"));
            }
            let n = len(n)?;
            // Each element takes at least 3 bytes: do not trust the count for the allocation.
            let mut items = Vec::with_capacity(n.min(b.len().saturating_sub(after) / 3 + 1));
            let mut at = after;
            for _ in 0..n {
                match parse_at(b, at, depth + 1)? {
                    Some((r, next)) => {
                        items.push(r);
                        at = next;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        _ => Err(ProtocolError("unknown reply type")),
    }
}

fn int(line: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProtocolError("bad integer"))
}

fn len(n: i64) -> Result<usize, ProtocolError> {
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= MAX_BULK)
        .ok_or(ProtocolError("length over the limit"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, 3);
        arg(&mut out, b"PUBLISH");
        arg(&mut out, b"ch");
        bulk_header(&mut out, 12);
        out.extend_from_slice(b"hello");
        out.extend_from_slice(b" world!");
        end_arg(&mut out);
        assert_eq!(
            out,
            b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$12\r\nhello world!\r\n"
        );
        let mut z = Vec::new();
        arg(&mut z, b"");
        assert_eq!(z, b"$0\r\n\r\n");
    }

    #[test]
    fn replies_of_every_kind_and_partial_input() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhe\r\no\r\n:7\r\n";
        let (r, n) = parse(msg).unwrap().unwrap();
        assert_eq!(
            r,
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"message")),
                Reply::Bulk(Some(b"ch")),
                Reply::Bulk(Some(b"he\r\no")),
            ]))
        );
        assert_eq!(parse(&msg[n..]).unwrap().unwrap(), (Reply::Int(7), 4));
        // Every proper prefix is incomplete, never an error.
        for i in 0..n {
            assert_eq!(parse(&msg[..i]).unwrap(), None, "prefix {i}");
        }
        assert_eq!(parse(b"+OK\r\n").unwrap().unwrap().0, Reply::Simple(b"OK"));
        let (e, _) = parse(b"-NOSCRIPT No matching script\r\n").unwrap().unwrap();
        assert_eq!(e.error_text().unwrap(), "NOSCRIPT No matching script");
        assert_eq!(parse(b"$-1\r\n").unwrap().unwrap().0, Reply::Bulk(None));
        assert_eq!(parse(b"*-1\r\n").unwrap().unwrap().0, Reply::Array(None));
        assert_eq!(
            parse(b"*2\r\n:-2\r\n$0\r\n\r\n").unwrap().unwrap().0,
            Reply::Array(Some(vec![Reply::Int(-2), Reply::Bulk(Some(b""))]))
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b"$5\r\nhelloXX",
            b"$999999999999\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
            b"\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&[b'$'; 100]).is_err());
    }

    /// A push of `payload` on `channel`, as Redis sends it.
    fn push(out: &mut Vec<u8>, channel: &[u8], payload: &[u8]) {
        command(out, 3);
        arg(out, b"message");
        arg(out, channel);
        arg(out, payload);
    }

    #[test]
    fn message_payloads_skip_other_replies_and_stop_at_a_partial_one() {
        let mut b = Vec::new();
        push(&mut b, b"ch", b"one");
        b.extend_from_slice(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
        push(&mut b, b"ch", b"");
        let whole = b.len();
        push(&mut b, b"ch", b"partial");
        b.truncate(b.len() - 3);
        let mut ranges = Vec::new();
        assert_eq!(message_payloads(&b, &mut ranges).unwrap(), whole);
        let got: Vec<&[u8]> = ranges.iter().map(|r| &b[r.clone()]).collect();
        assert_eq!(got, vec![&b"one"[..], b""]);
        assert_eq!(message_payloads(b"", &mut ranges).unwrap(), 0);
        assert!(ranges.is_empty());
        assert!(message_payloads(b"?\r\n", &mut ranges).is_err());
    }

    proptest::proptest! {
        /// The all-at-once scan agrees with parsing one reply at a time (the slow path), at
        /// every cut of the input.
        #[test]
        fn message_payloads_agree_with_one_at_a_time(
            payloads in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..6),
            cut in 0usize..400,
        ) {
            let mut b = Vec::new();
            for (i, p) in payloads.iter().enumerate() {
                if i % 3 == 2 {
                    b.extend_from_slice(b":7\r\n");
                }
                push(&mut b, b"bistream:relay:0:instance:x", p);
            }
            let b = &b[..cut.min(b.len())];
            let mut expected = Vec::new();
            let mut at = 0;
            while let Some((r, n)) = parse(&b[at..]).unwrap() {
                if let Reply::Array(Some(items)) = r {
                    if let [Reply::Bulk(Some(b"message")), _, Reply::Bulk(Some(p))] = items.as_slice() {
                        expected.push(p.to_vec());
                    }
                }
                at += n;
            }
            let mut ranges = Vec::new();
            proptest::prop_assert_eq!(message_payloads(b, &mut ranges).unwrap(), at);
            let got: Vec<Vec<u8>> = ranges.iter().map(|r| b[r.clone()].to_vec()).collect();
            proptest::prop_assert_eq!(got, expected);
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse(&b);
        }
    }
}
