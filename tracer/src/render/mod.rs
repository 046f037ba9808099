//! Renderers: each turns the report model into bytes of one format.

pub mod folded;
pub mod json;
pub mod summary;

use std::path::Path;

use crate::error::{Error, Result};
use crate::report::Report;

/// Writes every file format of a report into `dir`.
pub fn write_all(report: &Report, dir: &Path) -> Result<()> {
    let out = |name: &str, text: String| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| Error::Output {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        })
    };
    out("allocs.folded", folded::allocs_bytes(report))?;
    out("allocs-count.folded", folded::allocs_count(report))?;
    out("fds.folded", folded::fds(report))?;
    out("summary.txt", summary::render(report, Some(dir)))?;
    out("report.json", json::render(report))?;
    Ok(())
}
