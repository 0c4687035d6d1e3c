//! Frame codec tests: byte vectors produced by the Python `rsocket` 0.4.20 package, edge
//! cases, and round-trip properties.

use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Bytes {
    let v: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    Bytes::from(v)
}

fn both_ways(hexs: &str, f: &Frame) {
    assert_eq!(decode(hex(hexs)).unwrap(), *f, "decode {hexs}");
    assert_eq!(encode(f).freeze(), hex(hexs), "encode {f:?}");
    assert_eq!(f.encoded_len(), hexs.len() / 2);
}

#[test]
fn python_rsocket_vectors() {
    both_ways(
        "0000000004000001000000004e2000015f90276d6573736167652f782e72736f636b65742e636f6d706f736974652d6d657461646174612e7630106170706c69636174696f6e2f6a736f6e",
        &Frame::Setup(Setup {
            version: (1, 0),
            keepalive_ms: 20_000,
            max_lifetime_ms: 90_000,
            resume_token: None,
            lease: false,
            metadata_mime: crate::MIME_COMPOSITE.into(),
            data_mime: crate::MIME_JSON.into(),
            payload: Payload::default(),
        }),
    );
    both_ways(
        "000000011100000009fe000005046563686f7b2278223a317d",
        &Frame::RequestResponse {
            stream: 1,
            follows: false,
            payload: Payload::new(
                Some(hex("fe000005046563686f")),
                Bytes::from_static(b"{\"x\":1}"),
            ),
        },
    );
    both_ways(
        "0000000228606869",
        &Frame::Payload {
            stream: 2,
            follows: false,
            complete: true,
            next: true,
            payload: Payload::data(&b"hi"[..]),
        },
    );
    both_ways(
        "000000000c8000000000000000056162",
        &Frame::Keepalive {
            respond: true,
            position: 5,
            data: Bytes::from_static(b"ab"),
        },
    );
    both_ways(
        "000000032c0000000201626f6f6d",
        &Frame::Error {
            stream: 3,
            code: ErrorCode::ApplicationError,
            message: "boom".into(),
        },
    );
    both_ways("00000001200000000007", &Frame::RequestN { stream: 1, n: 7 });
    both_ways(
        "0000000518000000000364",
        &Frame::RequestStream {
            stream: 5,
            follows: false,
            initial_n: 3,
            payload: Payload::data(&b"d"[..]),
        },
    );
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    assert!(matches!(
        decode(hex("0000")),
        Err(DecodeError::Truncated(_))
    ));
    // REQUEST_RESPONSE with M and a metadata length past the end.
    assert!(matches!(
        decode(hex("0000000111000000ff")),
        Err(DecodeError::BadLength("metadata", 255))
    ));
    // M flag but not even a length.
    assert!(decode(hex("000000011100")).is_err());
    // SETUP on stream 1, REQUEST_RESPONSE on stream 0.
    assert!(matches!(
        decode(hex("00000001040000010000000000000000000000")),
        Err(DecodeError::WrongStream(FrameType::Setup, 1))
    ));
    assert!(matches!(
        decode(hex("000000001000")),
        Err(DecodeError::WrongStream(FrameType::RequestResponse, 0))
    ));
    // REQUEST_N 0 and a missing n.
    assert!(decode(hex("00000001200000000000")).is_err());
    assert!(decode(hex("000000012000")).is_err());
    // SETUP with a MIME length past the end.
    assert!(decode(hex("0000000004000001000000004e2000015f9027")).is_err());
    // Unknown type 0x3F (EXT) with and without the I flag.
    assert_eq!(
        decode(hex("00000003fe00")).unwrap(),
        Frame::Unknown {
            stream: 3,
            frame_type: 0x3F,
            ignore: true
        }
    );
    assert_eq!(
        decode(hex("00000003fc00")).unwrap(),
        Frame::Unknown {
            stream: 3,
            frame_type: 0x3F,
            ignore: false
        }
    );
    // The reserved stream-id bit is ignored.
    assert_eq!(
        decode(hex("8000000124000000")).unwrap(),
        Frame::Cancel { stream: 1 }
    );
}

#[test]
fn setup_with_lease_and_resume_token() {
    let f = Frame::Setup(Setup {
        version: (1, 0),
        keepalive_ms: 1,
        max_lifetime_ms: 2,
        resume_token: Some(Bytes::from_static(b"tok")),
        lease: true,
        metadata_mime: "a".into(),
        data_mime: "b".into(),
        payload: Payload::new(Some(Bytes::new()), Bytes::from_static(b"d")),
    });
    let b = encode(&f);
    // flags: M | R | L
    assert_eq!(u16::from_be_bytes([b[4], b[5]]) & 0x3FF, 0x1C0);
    assert_eq!(decode(b.freeze()).unwrap(), f);
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_payload() -> impl Strategy<Value = Payload> {
    (proptest::option::of(arb_bytes(64)), arb_bytes(64)).prop_map(|(m, d)| Payload::new(m, d))
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let sid = 1u32..=0x7FFF_FFFF;
    let n = 1u32..=0x7FFF_FFFF;
    let pos = 0u64..=0x7FFF_FFFF_FFFF_FFFF;
    prop_oneof![
        (
            any::<(u16, u16)>(),
            0u32..=0x7FFF_FFFF,
            0u32..=0x7FFF_FFFF,
            proptest::option::of(arb_bytes(16)),
            any::<bool>(),
            "[ -~]{0,40}",
            "[ -~]{0,40}",
            arb_payload()
        )
            .prop_map(|(version, k, l, resume_token, lease, mm, dm, payload)| {
                Frame::Setup(Setup {
                    version,
                    keepalive_ms: k,
                    max_lifetime_ms: l,
                    resume_token,
                    lease,
                    metadata_mime: mm,
                    data_mime: dm,
                    payload,
                })
            }),
        (
            0u32..=0x7FFF_FFFF,
            0u32..=0x7FFF_FFFF,
            proptest::option::of(arb_bytes(16))
        )
            .prop_map(|(ttl_ms, requests, metadata)| Frame::Lease {
                ttl_ms,
                requests,
                metadata
            }),
        (any::<bool>(), pos.clone(), arb_bytes(32)).prop_map(|(respond, position, data)| {
            Frame::Keepalive {
                respond,
                position,
                data,
            }
        }),
        (sid.clone(), any::<bool>(), arb_payload()).prop_map(|(stream, follows, payload)| {
            Frame::RequestResponse {
                stream,
                follows,
                payload,
            }
        }),
        (sid.clone(), any::<bool>(), arb_payload()).prop_map(|(stream, follows, payload)| {
            Frame::RequestFnf {
                stream,
                follows,
                payload,
            }
        }),
        (sid.clone(), any::<bool>(), n.clone(), arb_payload()).prop_map(
            |(stream, follows, initial_n, payload)| Frame::RequestStream {
                stream,
                follows,
                initial_n,
                payload,
            }
        ),
        (
            sid.clone(),
            any::<bool>(),
            any::<bool>(),
            n.clone(),
            arb_payload()
        )
            .prop_map(|(stream, follows, complete, initial_n, payload)| {
                Frame::RequestChannel {
                    stream,
                    follows,
                    complete,
                    initial_n,
                    payload,
                }
            }),
        (sid.clone(), n).prop_map(|(stream, n)| Frame::RequestN { stream, n }),
        sid.clone().prop_map(|stream| Frame::Cancel { stream }),
        (
            sid.clone(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            arb_payload()
        )
            .prop_map(
                |(stream, follows, complete, next, payload)| Frame::Payload {
                    stream,
                    follows,
                    complete,
                    next,
                    payload,
                }
            ),
        (0u32..=0x7FFF_FFFF, any::<u32>(), ".{0,40}").prop_map(|(stream, code, message)| {
            Frame::Error {
                stream,
                code: ErrorCode::from_code(code),
                message,
            }
        }),
        arb_bytes(64).prop_map(|metadata| Frame::MetadataPush { metadata }),
        (any::<(u16, u16)>(), arb_bytes(32), pos.clone(), pos.clone()).prop_map(
            |(version, token, a, b)| Frame::Resume {
                version,
                token,
                last_received_server: a,
                first_available_client: b,
            }
        ),
        pos.prop_map(|p| Frame::ResumeOk {
            last_received_client: p
        }),
    ]
}

proptest! {
    #[test]
    fn round_trip(f in arb_frame()) {
        let b = encode(&f);
        prop_assert_eq!(b.len(), f.encoded_len());
        prop_assert_eq!(decode(b.freeze()).unwrap(), f);
    }

    #[test]
    fn arbitrary_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = decode(Bytes::from(v));
    }
}
