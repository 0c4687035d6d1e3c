//! Connection behaviour on tokio's paused clock, over in-memory streams (no sockets, so the
//! clock can jump): keepalive pings and the 1011 close, the registration deadline, and the
//! buffer rebuild after a large message.
