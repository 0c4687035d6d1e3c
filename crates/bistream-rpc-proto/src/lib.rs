//! The slipstream rpc protocol without sockets: frames and their JSON codec ([`frame`]), error
//! codes ([`ErrorCode`]), the typed parse of a received item or `data` ([`item`]: serde_json's
//! answer, cheaper for scalars), and the [`Engine`], a sans-IO state machine that turns received
//! frames into [`Event`]s and local actions into encoded frames. Transports and the router live in
//! `bistream-rpc`; a second codec (RSocket) can drive the same engine events.
//!
//! # Example
//!
//! ```
//! use bistream_rpc_proto::{Engine, EngineConfig, Event, Model, Side};
//!
//! // Base protocol on both ends (with extensions on, the initiator's first frame is `hello`).
//! let mut a = EngineConfig::new(Side::Initiator, "peer-a");
//! a.extensions = false;
//! let mut b = EngineConfig::new(Side::Acceptor, "peer-b");
//! b.extensions = false;
//! let mut caller = Engine::new(a);
//! let mut callee = Engine::new(b);
//! let id = 0;
//! caller.start_call(id, Model::RequestResponse, r#"{"operation":"echo","x":1}"#)?;
//! // Ship the caller's frames to the callee.
//! for f in caller.take_output() {
//!     callee.on_frame(&f, &|op| (op == "echo").then_some(Model::RequestResponse));
//! }
//! let Some(Event::Serve { key, data, .. }) = callee.next_event() else { panic!() };
//! callee.respond(&key, data.get())?;
//! for f in callee.take_output() {
//!     caller.on_frame(&f, &|_| None);
//! }
//! match caller.next_event() {
//!     Some(Event::Response { call, data }) => {
//!         assert_eq!(call, id);
//!         assert_eq!(data.get(), r#"{"operation":"echo","x":1}"#);
//!     }
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), bistream_rpc_proto::EngineError>(())
//! ```
#![forbid(unsafe_code)]

pub mod batch;
pub mod close;
pub mod engine;
pub mod fast;
pub mod frame;
pub mod item;
pub mod types;
pub mod ws;

pub use batch::TextBatch;
pub use engine::{Engine, NotUtf8};
pub use frame::{
    decode, decode_ref, encode, DecodeError, ErrorCode, Extension, Frame, FrameRef, FrameType,
    Hello, Model, RequestId, PROTOCOL_VERSION,
};
pub use item::from_item;
pub use types::{
    CallFailure, CallIdHasher, CallMap, EngineConfig, EngineError, Event, Limits, Negotiated,
    ServeKey, Side, Stats, Target,
};
