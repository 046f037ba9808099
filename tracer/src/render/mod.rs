//! Renderers: each turns the report model into bytes of one format.

pub mod folded;
pub mod json;
pub mod pprof;
pub mod prometheus;
pub mod speedscope;
pub mod summary;
pub mod svg;

use std::path::Path;

use crate::error::{Error, Result};
use crate::report::Report;

/// Output formats (`--format`); summary.txt is always written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// allocs.folded, allocs-count.folded, fds.folded, growth.folded
    Folded,
    /// allocs.svg, fds.svg (interactive flame graphs)
    Svg,
    /// report.json
    Json,
    /// profile.pb.gz (pprof)
    Pprof,
    /// speedscope.json
    Speedscope,
    /// every format
    All,
}

pub const DEFAULT_FORMATS: [Format; 3] = [Format::Folded, Format::Svg, Format::Json];

/// Writes the chosen formats of a report into `dir`, and summary.txt.
pub fn write_all(report: &Report, dir: &Path, formats: &[Format]) -> Result<()> {
    let want = |f: Format| formats.contains(&f) || formats.contains(&Format::All);
    let out = |name: &str, bytes: Vec<u8>| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| Error::Output {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        })
    };
    let allocs = folded::allocs_bytes(report);
    let fds = folded::fds(report);
    if want(Format::Folded) {
        out("allocs.folded", allocs.clone().into_bytes())?;
        out(
            "allocs-count.folded",
            folded::allocs_count(report).into_bytes(),
        )?;
        out("fds.folded", fds.clone().into_bytes())?;
        out("growth.folded", folded::growth(report).into_bytes())?;
    }
    if want(Format::Svg) {
        let what = if report.budget.is_some() {
            "Sampled outstanding bytes by stack (watch mode)"
        } else {
            "Outstanding bytes by stack"
        };
        out(
            "allocs.svg",
            svg::render(&allocs, what, "bytes").into_bytes(),
        )?;
        out(
            "fds.svg",
            svg::render(&fds, "Open descriptors by stack", "descriptors").into_bytes(),
        )?;
    }
    if want(Format::Json) {
        out("report.json", json::render(report).into_bytes())?;
    }
    if want(Format::Pprof) {
        out("profile.pb.gz", pprof::encode(report))?;
    }
    if want(Format::Speedscope) {
        out("speedscope.json", speedscope::render(report).into_bytes())?;
    }
    out(
        "summary.txt",
        summary::render(report, Some(dir)).into_bytes(),
    )?;
    Ok(())
}
