//! Folded stacks (Brendan Gregg's format): `root;frame;leaf WEIGHT`, one stack per line, root
//! first. Read by flamegraph.pl, inferno, speedscope and Pyroscope.

use std::collections::BTreeMap;

use crate::frame::{Frame, Marker};
use crate::report::Report;

/// Makes a frame safe for the format: no `;` (separator) and no line breaks.
pub fn sanitize(frame: &str) -> String {
    let s: String = frame
        .chars()
        .map(|c| match c {
            ';' => ':',
            '\n' | '\r' | '\t' => ' ',
            c => c,
        })
        .collect();
    if s.is_empty() {
        "[unknown]".into()
    } else {
        s
    }
}

/// Renders weighted stacks; identical stacks are merged, zero weights dropped, lines sorted.
pub fn render(stacks: impl IntoIterator<Item = (Vec<String>, u64)>) -> String {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for (frames, w) in stacks {
        if w == 0 || frames.is_empty() {
            continue;
        }
        let key = frames
            .iter()
            .map(|f| sanitize(f))
            .collect::<Vec<_>>()
            .join(";");
        *merged.entry(key).or_default() += w;
    }
    let mut out = String::new();
    for (k, w) in merged {
        out.push_str(&k);
        out.push(' ');
        out.push_str(&w.to_string());
        out.push('\n');
    }
    out
}

fn with_root(root: &[Frame], frames: &[Frame]) -> Vec<String> {
    let mut v = Vec::with_capacity(frames.len() + root.len());
    v.extend(root.iter().map(Frame::to_string));
    if frames.is_empty() {
        v.push(Frame::Marker(Marker::NoStack).to_string());
    } else {
        v.extend(frames.iter().map(Frame::to_string));
    }
    v
}

pub fn allocs_bytes(r: &Report) -> String {
    render(r.procs.iter().flat_map(|p| {
        let root = p.root_frames();
        p.allocs
            .iter()
            .map(move |a| (with_root(&root, &a.frames), a.bytes))
    }))
}

pub fn allocs_count(r: &Report) -> String {
    render(r.procs.iter().flat_map(|p| {
        let root = p.root_frames();
        p.allocs
            .iter()
            .map(move |a| (with_root(&root, &a.frames), a.count))
    }))
}

pub fn fds(r: &Report) -> String {
    render(r.procs.iter().flat_map(|p| {
        let root = p.root_frames();
        p.fds
            .iter()
            .map(move |f| (with_root(&root, &f.frames), f.count))
    }))
}

/// Bytes gained since the first checkpoint, for the stacks that grew.
pub fn growth(r: &Report) -> String {
    render(r.procs.iter().flat_map(|p| {
        let root = p.root_frames();
        p.growth
            .iter()
            .map(move |(frames, gained)| (with_root(&root, frames), *gained))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_sorts_and_sanitizes() {
        let s = render(vec![
            (vec!["p (pid 1)".into(), "b".into()], 3),
            (vec!["p (pid 1)".into(), "a;x".into()], 2),
            (vec!["p (pid 1)".into(), "b".into()], 4),
            (vec!["p (pid 1)".into(), "zero".into()], 0),
            (vec!["p (pid 1)".into(), "line\nbreak".into()], 1),
        ]);
        assert_eq!(
            s,
            "p (pid 1);a:x 2\np (pid 1);b 7\np (pid 1);line break 1\n"
        );
        for line in s.lines() {
            let (stack, w) = line.rsplit_once(' ').unwrap();
            assert!(w.parse::<u64>().is_ok());
            assert!(!stack.is_empty());
        }
    }

    #[test]
    fn empty_frames_are_named() {
        assert_eq!(sanitize(""), "[unknown]");
        assert_eq!(
            with_root(&[Frame::Container("r".into())], &[]),
            vec!["container r".to_string(), "[no stack]".to_string()]
        );
    }
}
