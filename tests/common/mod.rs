#![allow(dead_code)]
//! Helpers for the end-to-end tests: run the real tracer binary against real Python processes.

pub mod apps;
mod bpf;
mod builds;
mod labels;
mod process;
mod report;

pub use bpf::*;
pub use builds::*;
pub use labels::*;
pub use process::*;
pub use report::*;
