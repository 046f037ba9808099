//! Reading what the tracer writes as text: folded stacks, frame labels, and the workloads' own
//! files (marked lines, done files).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::*;

/// Parses folded stacks, checking the format on the way.
pub fn parse_folded(text: &str) -> Vec<(Vec<String>, u64)> {
    text.lines()
        .map(|l| {
            let (stack, w) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad folded line: {l}"));
            let w: u64 = w.parse().unwrap_or_else(|_| panic!("bad weight: {l}"));
            (stack.split(';').map(str::to_string).collect(), w)
        })
        .collect()
}

/// Sum of weights per leaf frame.
pub fn by_leaf(stacks: &[(Vec<String>, u64)]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (f, w) in stacks {
        *m.entry(f.last().cloned().unwrap_or_default()).or_default() += w;
    }
    m
}

pub fn total(stacks: &[(Vec<String>, u64)]) -> u64 {
    stacks.iter().map(|(_, w)| w).sum()
}

/// What a workload wrote in its done file (`--done-file`: leak.py, lines.py), the fields the
/// tests read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Done {
    pub pid: u32,
    /// leak.py: the paths of the files it leaked.
    #[serde(default)]
    pub files: Vec<String>,
    /// leak.py `--tracemalloc`: what tracemalloc measured of the leak (bytes).
    pub tracemalloc_bytes: Option<i64>,
    /// leak.py `--tracemalloc-total`: everything tracemalloc traced (bytes).
    pub tracemalloc_total: Option<i64>,
    /// lines.py `--tracemalloc`: bytes tracemalloc measured per line of lines.py.
    pub tracemalloc_lines: Option<BTreeMap<u32, i64>>,
}

/// A workload's done file, parsed.
pub fn read_done(path: &Path) -> Done {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
}

/// Lines of service.py marked `# TAG` (LEAK:log, CACHE, NOLEAK:fd...).
pub fn service_marked(tag: &str) -> Vec<u32> {
    std::fs::read_to_string(workload("service.py"))
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            l.split_once("  # ")
                .and_then(|(_, c)| c.split_whitespace().next())
                == Some(tag)
        })
        .map(|(i, _)| i as u32 + 1)
        .collect()
}

/// The service.py line of a report's "function (/path/service.py:LINE)" label.
pub fn service_line(label: &str) -> Option<u32> {
    let loc = label.split_once(" (")?.1.strip_suffix(')')?;
    let (file, n) = loc.rsplit_once(':')?;
    file.ends_with("/service.py").then(|| n.parse().ok())?
}

/// The same, strictly, for a label that is a Python frame or a stack's leaf: None for a frame
/// of another file, a frame whose line is unknown (`function (/path/service.py)`) or a leaf
/// that is no Python frame; a panic for a label that names service.py but does not read as
/// either (a test that compares lines would pass on nothing if the labels stopped reading).
pub fn service_line_strict(label: &str) -> Option<u32> {
    if !label.contains("service.py") {
        return None;
    }
    let lineless = label
        .split_once(" (")
        .is_some_and(|(_, loc)| loc.ends_with("/service.py)"));
    let line = service_line(label);
    assert!(
        line.is_some() || lineless,
        "a service.py frame that does not read as `function (/path/service.py:LINE)`: {label:?}"
    );
    line
}

/// The line number of the first line of a workload that contains `text`.
pub fn line_of(script: &str, text: &str) -> usize {
    std::fs::read_to_string(workload(script))
        .unwrap()
        .lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("{text:?} not in {script}"))
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_lines_read_strictly() {
        assert_eq!(
            service_line_strict("handle_leak (/w/tests/workloads/service.py:42)"),
            Some(42)
        );
        assert_eq!(
            service_line_strict("append (/usr/lib/python3.11/json/__init__.py:3)"),
            None
        );
        assert_eq!(service_line_strict("[unknown]"), None);
        assert_eq!(service_line_strict("handle_leak (/w/service.py)"), None);
        for bad in [
            "handle_leak (/w/service.py line 42)",
            "handle_leak (/w/service.py:x)",
            "/w/service.py:42",
        ] {
            assert!(std::panic::catch_unwind(|| service_line_strict(bad)).is_err());
        }
    }
}
