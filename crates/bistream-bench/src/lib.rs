//! Benchmark harness: each bistream part measured against its real peer and its floor.
#![forbid(unsafe_code)]
