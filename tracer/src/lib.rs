//! tracer as a library: the modules of the `tracer` command (main.rs only parses the command line
//! and calls one of them), open to integration tests and benchmarks.
//!
//! The CPython decoding (remote memory, layouts, frames, the heap census), /proc and the text of
//! targets are the `tracer-cpython` crate (tracer/cpython, no BPF in it), seen here as
//! `crate::python`, `crate::procfs` and `crate::text`.

pub use tracer_cpython as python;
pub use tracer_cpython::{procfs, text};

pub mod batch;
pub mod cli;
pub mod collect;
pub mod config;
pub mod discover;
pub mod doctor;
pub mod error;
pub mod frame;
pub mod launch;
pub mod native;
pub mod output;
pub mod place;
pub mod probes;
pub mod record;
pub mod render;
pub mod report;
pub mod resident;
pub mod signals;
pub mod sink;
pub mod snapshot;
pub mod symbolize;
pub mod util;
pub mod verdict;
