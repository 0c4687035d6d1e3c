//! What the cluster stores in and sends through Redis: key and channel names, the value of a
//! registration, the three kinds of pub/sub message between nodes, and the Lua scripts that
//! make each decision atomic inside Redis. No I/O here.
//!
//! * Registration key `bistream:relay:client:<uuid>` (in the configured database), value
//!   `<instance>|<conn>|<node>|<user>` with a TTL (`PX`). `instance` is 16 hex digits, new for
//!   every process, so a restarted node never mistakes its predecessor's entries for its own.
//! * Each process subscribes to one channel, `bistream:relay:<db>:instance:<instance>` (channels
//!   are server-wide in Redis, hence the database in the name).
//! * Messages: `F|<target>|<origin instance>|<user len>|<user><text>` forwards `text` to
//!   `target` on a route cached by the sender (a process that no longer has `target` sends it
//!   on through the forward script); `R|...` is the same, routed by the forward script itself
//!   from Redis's registry: final, never sent on;
//!   `B|<sender>|<user len>|<user><text>` hands a bounce back to the sender's node;
//!   `T|<uuid>|<conn>` tells a node that its connection `conn` lost `uuid` to a newer one.

use uuid::Uuid;

use super::resp::push_num;

/// Prefix of every key and channel.
pub(crate) const PREFIX: &str = "bistream:relay:";

/// The registration key of `uuid`.
pub(crate) fn client_key(uuid: &Uuid) -> String {
    format!("{PREFIX}client:{uuid}")
}

/// Prefix of the per-process channels of database `db` (the instance id follows).
pub(crate) fn channel_prefix(db: i64) -> String {
    format!("{PREFIX}{db}:instance:")
}

/// A registration's value: who holds the UUID, and for which user.
pub(crate) fn registration_value(instance: &str, conn: u64, node: &str, user: &str) -> String {
    format!("{instance}|{conn}|{node}|{user}")
}

/// A message between nodes, borrowed from the received payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NodeMessage<'a> {
    /// Deliver `text` to the local client `target` if it belongs to `user`; bounce to `origin`.
    /// `by_script`: the forward script routed it (final: never sent on). `origin`, `user` and
    /// `text` are not checked here: the receiver checks each is UTF-8 when it uses it (the
    /// user once per run of records of one user, the text once as it makes the message).
    Forward {
        target: Uuid,
        origin: &'a [u8],
        user: &'a [u8],
        text: &'a [u8],
        by_script: bool,
    },
    /// Deliver the bounce `text` (unchecked, as above) to the local client `sender` (never
    /// forwarded further).
    Bounce {
        sender: Uuid,
        user: &'a [u8],
        text: &'a [u8],
    },
    /// The local connection `conn` no longer holds `uuid`: close it 4004.
    Takeover { uuid: Uuid, conn: u64 },
}

/// Why a payload from Redis was not understood.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("unknown message kind")]
    Kind,
    #[error("malformed header")]
    Header,
}

fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn forward_len(origin: &str, user: &str, text: &str) -> usize {
    2 + 36 + 1 + origin.len() + 1 + digits(user.len()) + 1 + user.len() + text.len()
}

/// The length of [`write_framed_forward`]'s output.
pub(crate) fn framed_forward_len(origin: &str, user: &str, text: &str) -> usize {
    let rec = forward_len(origin, user, text);
    digits(rec) + 1 + rec
}

/// Appends a forward record framed for a batch: `<len>|<record>`. A batch payload is a
/// sequence of these (it starts with a digit, which tells it from the single `B` and `T`
/// messages).
pub(crate) fn write_framed_forward(
    out: &mut Vec<u8>,
    by_script: bool,
    target: &Uuid,
    origin: &str,
    user: &str,
    text: &str,
) {
    let rec = forward_len(origin, user, text);
    let mut id = [0u8; 36];
    let id = target.hyphenated().encode_lower(&mut id);
    push_num(out, rec);
    out.extend_from_slice(if by_script { b"|R|" } else { b"|F|" });
    out.extend_from_slice(id.as_bytes());
    out.push(b'|');
    out.extend_from_slice(origin.as_bytes());
    out.push(b'|');
    push_num(out, user.len());
    out.push(b'|');
    out.extend_from_slice(user.as_bytes());
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
pub(crate) fn encode_forward(target: &Uuid, origin: &str, user: &str, text: &str) -> Vec<u8> {
    let mut out = framed_forward(target, origin, user, text);
    let start = out.iter().position(|b| *b == b'|').map_or(0, |i| i + 1);
    out.drain(..start);
    out
}

#[cfg(test)]
pub(crate) fn framed_forward(target: &Uuid, origin: &str, user: &str, text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_framed_forward(&mut out, false, target, origin, user, text);
    assert_eq!(out.len(), framed_forward_len(origin, user, text));
    out
}

/// Whether `payload` is a batch of framed forwards.
pub(crate) fn is_batch(payload: &[u8]) -> bool {
    payload.first().is_some_and(u8::is_ascii_digit)
}

/// The records of a batch payload; an error ends the iteration.
pub(crate) fn batch_records(mut b: &[u8]) -> impl Iterator<Item = Result<&[u8], DecodeError>> {
    std::iter::from_fn(move || {
        if b.is_empty() {
            return None;
        }
        let next = length_field(b).and_then(|(len, rest)| {
            if rest.len() < len {
                return Err(DecodeError::Header);
            }
            Ok(rest.split_at(len))
        });
        match next {
            Ok((rec, rest)) => {
                b = rest;
                Some(Ok(rec))
            }
            Err(e) => {
                b = &[];
                Some(Err(e))
            }
        }
    })
}

pub(crate) fn encode_bounce(sender: &Uuid, user: &str, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + user.len() + text.len());
    out.extend_from_slice(format!("B|{sender}|{}|", user.len()).as_bytes());
    out.extend_from_slice(user.as_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

#[cfg(test)]
pub(crate) fn encode_takeover(uuid: &Uuid, conn: u64) -> Vec<u8> {
    format!("T|{uuid}|{conn}").into_bytes()
}

/// Splits off `field|` from the front of `b` (a field is at most 63 bytes).
fn field(b: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let i = b
        .iter()
        .take(64)
        .position(|c| *c == b'|')
        .ok_or(DecodeError::Header)?;
    match (b.get(..i), b.get(i + 1..)) {
        (Some(f), Some(rest)) => Ok((f, rest)),
        _ => Err(DecodeError::Header),
    }
}

/// A decimal number: 1 to 20 ASCII digits (no sign, no spaces), at most `usize::MAX`.
fn number(f: &[u8]) -> Result<usize, DecodeError> {
    if f.is_empty() || f.len() > 20 {
        return Err(DecodeError::Header);
    }
    f.iter().try_fold(0usize, |n, d| match d {
        b'0'..=b'9' => n
            .checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(d - b'0')))
            .ok_or(DecodeError::Header),
        _ => Err(DecodeError::Header),
    })
}

/// Splits off `<length>|` from the front of `b`.
fn length_field(b: &[u8]) -> Result<(usize, &[u8]), DecodeError> {
    let (f, rest) = field(b)?;
    Ok((number(f)?, rest))
}

/// Splits off `<hyphenated uuid>|` (the only form the nodes write) from the front of `b`.
fn uuid_field(b: &[u8]) -> Result<(Uuid, &[u8]), DecodeError> {
    match (b.get(..36), b.get(36), b.get(37..)) {
        (Some(id), Some(b'|'), Some(rest)) => Ok((
            Uuid::try_parse_ascii(id).map_err(|_| DecodeError::Header)?,
            rest,
        )),
        _ => Err(DecodeError::Header),
    }
}

/// `<len>|<user><text>` → (user, text), both unchecked.
fn user_and_text(b: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let (len, rest) = length_field(b)?;
    if rest.len() < len {
        return Err(DecodeError::Header);
    }
    let (user, text) = rest.split_at(len);
    Ok((user, text))
}

impl<'a> NodeMessage<'a> {
    /// Parses a payload received on this node's channel.
    pub(crate) fn decode(b: &'a [u8]) -> Result<NodeMessage<'a>, DecodeError> {
        match b {
            [kind @ (b'F' | b'R'), b'|', rest @ ..] => {
                let (target, rest) = uuid_field(rest)?;
                let (origin, rest) = field(rest)?;
                let (user, text) = user_and_text(rest)?;
                Ok(NodeMessage::Forward {
                    target,
                    origin,
                    user,
                    text,
                    by_script: *kind == b'R',
                })
            }
            [b'B', b'|', rest @ ..] => {
                let (sender, rest) = uuid_field(rest)?;
                let (user, text) = user_and_text(rest)?;
                Ok(NodeMessage::Bounce { sender, user, text })
            }
            [b'T', b'|', rest @ ..] => {
                let (uuid, rest) = uuid_field(rest)?;
                let conn = number(rest)? as u64;
                Ok(NodeMessage::Takeover { uuid, conn })
            }
            _ => Err(DecodeError::Kind),
        }
    }
}

/// Forward a batch: `KEYS[i]` the key of message i's target; `ARGV[1]` the channel prefix,
/// `ARGV[2i]` the sender's user of message i, `ARGV[2i+1]` its framed record. Messages to the
/// same process go out as ONE `PUBLISH` of their concatenated records, in order. Returns, per
/// message, two items: a status, -1 (no such registration), -2 (another user's) or the number
/// of processes that received it (0: the holder's process is gone but its entry has not
/// expired yet); and the holder's instance ('' unless the status is positive), which the
/// sender caches to `PUBLISH` directly next time.
pub(crate) const FORWARD_LUA: &str = r"
local out, groups, order = {}, {}, {}
for i = 1, #KEYS do
  out[2 * i - 1], out[2 * i] = -1, ''
  local v = redis.call('GET', KEYS[i])
  if v then
    local inst, user = string.match(v, '^([^|]*)|[^|]*|[^|]*|(.*)$')
    if user ~= ARGV[2 * i] then
      out[2 * i - 1] = -2
    else
      local g = groups[inst]
      if not g then
        g = { recs = {}, idx = {} }
        groups[inst] = g
        order[#order + 1] = inst
      end
      g.recs[#g.recs + 1] = ARGV[2 * i + 1]
      g.idx[#g.idx + 1] = i
    end
  end
end
for _, inst in ipairs(order) do
  local g = groups[inst]
  local n = redis.call('PUBLISH', ARGV[1] .. inst, table.concat(g.recs))
  for _, i in ipairs(g.idx) do
    out[2 * i - 1] = n
    if n > 0 then out[2 * i] = inst end
  end
end
return out
";

/// Claim or refresh: `KEYS[1]` the key; `ARGV` = value, TTL in ms, user, channel prefix,
/// uuid, mode (`claim` or `refresh`).
/// Returns 1 (held, TTL refreshed), 2 (was missing: written again), 0 (another user holds
/// it), 3 (refresh only: a newer registration of the same user holds it).
/// A claim that takes the UUID from another process tells that process (`T` message).
pub(crate) const CLAIM_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
local r = 2
if v then
  local inst, conn, user = string.match(v, '^([^|]*)|([^|]*)|[^|]*|(.*)$')
  if user ~= ARGV[3] then return 0 end
  if ARGV[6] == 'refresh' then return 3 end
  local mine = string.match(ARGV[1], '^([^|]*)|')
  if inst and inst ~= mine then
    redis.call('PUBLISH', ARGV[4] .. inst, 'T|' .. ARGV[5] .. '|' .. conn)
  end
  r = 1
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return r
";

/// Release: deletes `KEYS[1]` only if it still holds `ARGV[1]` (ours). Returns 1 or 0.
pub(crate) const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let u = Uuid::new_v4();
        let text = "{\"x\":\"é|\"}";
        let user = "al|ce";
        let f = encode_forward(&u, "0123456789abcdef", user, text);
        assert_eq!(
            NodeMessage::decode(&f).unwrap(),
            NodeMessage::Forward {
                target: u,
                origin: b"0123456789abcdef",
                user: user.as_bytes(),
                text: text.as_bytes(),
                by_script: false,
            }
        );
        let b = encode_bounce(&u, "", text);
        assert_eq!(
            NodeMessage::decode(&b).unwrap(),
            NodeMessage::Bounce {
                sender: u,
                user: b"",
                text: text.as_bytes()
            }
        );
        let t = encode_takeover(&u, 42);
        assert_eq!(
            NodeMessage::decode(&t).unwrap(),
            NodeMessage::Takeover { uuid: u, conn: 42 }
        );
    }

    #[test]
    fn batches() {
        let (u, v) = (Uuid::new_v4(), Uuid::new_v4());
        let mut b = framed_forward(&u, "o", "al|ce", "{\"a\":1}");
        b.extend(framed_forward(&v, "o", "", "é"));
        assert!(is_batch(&b));
        let recs: Vec<_> = batch_records(&b)
            .map(|r| NodeMessage::decode(r.unwrap()).unwrap())
            .collect();
        assert_eq!(recs.len(), 2);
        assert!(
            matches!(recs[1], NodeMessage::Forward { target, text, .. } if target == v && text == "é".as_bytes())
        );
        let mut bad = b.clone();
        bad.extend_from_slice(b"99|x");
        assert!(batch_records(&bad).last().unwrap().is_err());
        assert!(batch_records(b"x|").next().unwrap().is_err());
        assert!(!is_batch(b"B|"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let u = Uuid::new_v4();
        for bad in [
            &b""[..],
            b"X|",
            b"F|",
            b"F|not-a-uuid|o|0|",
            b"T|00000000-0000-0000-0000-000000000000|x",
            b"B|00000000-0000-0000-0000-000000000000|99|ab",
            b"B|00000000-0000-0000-0000-000000000000|-1|ab",
        ] {
            assert!(NodeMessage::decode(bad).is_err(), "{bad:?}");
        }
        // Origin, user and text are left to the receiver to check (once each, as it uses them).
        let mut bad_user = encode_forward(&u, "o", "\u{e9}", "t");
        let at = bad_user.len() - 3;
        bad_user[at] = 0xff;
        assert!(matches!(
            NodeMessage::decode(&bad_user),
            Ok(NodeMessage::Forward {
                user: [0xff, 0xa9],
                ..
            })
        ));
        // Only the hyphenated UUID form the nodes write is accepted.
        let simple = format!("F|{}|o|0|t", u.simple());
        assert_eq!(
            NodeMessage::decode(simple.as_bytes()),
            Err(DecodeError::Header)
        );
    }

    #[test]
    fn numbers_are_plain_digits() {
        assert_eq!(number(b"0"), Ok(0));
        assert_eq!(number(b"1234567890"), Ok(1_234_567_890));
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b" 1",
            b"1a",
            b"99999999999999999999",
        ] {
            assert_eq!(number(bad), Err(DecodeError::Header), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// The byte-level number parser agrees with the standard one on its domain.
        #[test]
        fn number_agrees_with_str_parse(n in proptest::num::u64::ANY) {
            let s = n.to_string();
            proptest::prop_assert_eq!(number(s.as_bytes()).ok(), usize::try_from(n).ok());
        }

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = NodeMessage::decode(&b);
            for r in batch_records(&b).flatten() {
                let _ = NodeMessage::decode(r);
            }
        }
    }
}
