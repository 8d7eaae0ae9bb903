//! `net`: node-to-node and client transport over TCP with mutual TLS.
//!
//! Architecture invariant: `net` never interprets frame contents. It moves length-prefixed frames
//! (see `frame`) between authenticated peers; the only frames it writes itself are
//! `FRAME_KIND_NET_ERROR` reports about framing and back-pressure.

pub mod frame;
