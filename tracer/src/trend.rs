//! The verdicts moved to `verdict.rs`; this name stays until every caller says `verdict`.

pub use crate::verdict::*;
