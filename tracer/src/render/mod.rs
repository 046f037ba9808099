//! Renderers: each turns the report model into bytes of one format.

pub mod folded;
pub mod json;
pub mod pprof;
pub mod speedscope;
pub mod summary;
pub mod svg;

use std::path::Path;

use crate::output::OutputDir;
use crate::report::Report;

/// Output formats (`--format`); summary.txt is always written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// allocs.folded, allocs-count.folded, fds.folded, growth.folded
    Folded,
    /// allocs.svg, fds.svg, growth.svg (interactive flame graphs)
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

/// The formats of `--format` (default: folded, svg, json).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Formats(pub Vec<Format>);

/// The files of the chosen formats of a report, with summary.txt: (name, bytes), the most
/// useful first (what fits of a set on a full disk is written in this order).
pub fn files(report: &Report, dir: Option<&Path>, formats: &[Format]) -> Vec<(String, Vec<u8>)> {
    let want = |f: Format| formats.contains(&f) || formats.contains(&Format::All);
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| out.push((name.to_string(), bytes));
    let allocs = folded::allocs_bytes(report);
    let fds = folded::fds(report);
    let growth = folded::growth(report);
    add("summary.txt", summary::render(report, dir).into_bytes());
    if want(Format::Json) {
        add("report.json", json::render(report).into_bytes());
    }
    if want(Format::Folded) {
        add("allocs.folded", allocs.clone().into_bytes());
        add(
            "allocs-count.folded",
            folded::allocs_count(report).into_bytes(),
        );
        add("fds.folded", fds.clone().into_bytes());
        add("growth.folded", growth.clone().into_bytes());
    }
    if want(Format::Svg) {
        let what = if report.budget.is_some() {
            "Sampled outstanding bytes by stack (watch mode)"
        } else {
            "Outstanding bytes by stack"
        };
        add(
            "allocs.svg",
            svg::render(&allocs, what, "bytes").into_bytes(),
        );
        add(
            "fds.svg",
            svg::render(&fds, "Open descriptors by stack", "descriptors").into_bytes(),
        );
        // What grew since the first checkpoint: the leak without the start-up imports.
        add(
            "growth.svg",
            svg::render(&growth, "Bytes gained since the first checkpoint", "bytes").into_bytes(),
        );
    }
    if want(Format::Pprof) {
        add("profile.pb.gz", pprof::encode(report));
    }
    if want(Format::Speedscope) {
        add("speedscope.json", speedscope::render(report).into_bytes());
    }
    out
}

/// Writes the chosen formats of a report, and summary.txt, into `dir` as one set (see
/// `OutputDir::write_set`: the previous set stays whole if this one cannot be written).
pub fn write_all(
    report: &Report,
    dir: &OutputDir,
    formats: &[Format],
) -> std::result::Result<(), crate::output::WriteError> {
    dir.write_set(&files(report, Some(&dir.current_path()), formats))
}

/// `--format`: a comma-separated list of formats (`all` for every one).
pub fn parse_formats(s: &str) -> std::result::Result<Formats, String> {
    use clap::ValueEnum as _;
    let names: Vec<String> = Format::value_variants()
        .iter()
        .filter_map(|f| f.to_possible_value().map(|v| v.get_name().to_string()))
        .collect();
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!(
                "'{s}' has an empty format name: give a comma-separated list of {}",
                names.join(", ")
            ));
        }
        let f = Format::from_str(part, true)
            .map_err(|_| format!("unknown format '{part}': choose among {}", names.join(", ")))?;
        if !out.contains(&f) {
            out.push(f);
        }
    }
    Ok(Formats(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_lists() {
        assert_eq!(
            parse_formats("json,svg").unwrap().0,
            vec![Format::Json, Format::Svg]
        );
        assert_eq!(parse_formats("ALL").unwrap().0, vec![Format::All]);
        assert!(parse_formats("json,,svg")
            .unwrap_err()
            .contains("empty format name"));
        assert!(parse_formats("json,xml")
            .unwrap_err()
            .contains("unknown format 'xml'"));
        assert!(parse_formats("").is_err());
    }
}
