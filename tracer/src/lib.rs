//! tracer as a library: the modules of the `tracer` command (main.rs only parses the command line
//! and calls one of them), open to integration tests and benchmarks.

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
pub mod procfs;
pub mod python;
pub mod record;
pub mod render;
pub mod report;
pub mod resident;
pub mod signals;
pub mod sink;
pub mod snapshot;
pub mod symbolize;
pub mod text;
pub mod util;
pub mod verdict;
