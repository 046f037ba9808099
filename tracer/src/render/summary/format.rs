//! The summary's small pieces of text: amounts, counts, a stack on one line, a suspect's row,
//! the coverage warning, what a container holds.

use crate::frame::{python_line, Frame};
use crate::report::census::Holds;
use crate::report::{Coverage, Resource, Suspect, Verdict};
use crate::text::clean;

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The innermost frames of a stack, leaf first, for one line of text.
pub(super) fn short_stack(frames: &[Frame], n: usize) -> String {
    if frames.is_empty() {
        return "[no stack]".into();
    }
    let mut v: Vec<String> = frames.iter().rev().take(n).map(Frame::to_string).collect();
    if frames.len() > n {
        v.push("...".into());
    }
    v.join(" <- ")
}

fn amount(resource: Resource, v: f64) -> String {
    match resource {
        Resource::Memory => human_bytes(v.max(0.0) as u64),
        Resource::Descriptors => format!("{:.0} fds", v),
    }
}

pub fn suspect_line(s: &Suspect) -> String {
    let rate = if s.trend.verdict == Verdict::Growing {
        format!("+{}/min", amount(s.resource, s.trend.per_min))
    } else {
        "-".into()
    };
    let what = match s.resource {
        Resource::Memory => python_line(&s.frames),
        Resource::Descriptors => {
            let kind = s.frames.last().map(Frame::to_string).unwrap_or_default();
            let site = python_line(&s.frames[..s.frames.len().saturating_sub(1)]);
            format!("{site} {kind}")
        }
    };
    format!(
        "    {:<8} {:>14} {:>11} {:>9} {:>7}  {}{}",
        s.trend.verdict.to_string(),
        rate,
        amount(s.resource, s.now as f64),
        match s.resource {
            Resource::Memory => thousands(s.count),
            Resource::Descriptors => "-".into(),
        },
        s.oldest_age
            .map(|a| format!("{:.0}s", a.as_secs_f64()))
            .unwrap_or_else(|| "-".into()),
        what,
        via_text(s)
    )
}

/// "  via getLogger (logging/__init__.py:1403)": the library line below a suspect's application
/// frame that holds the most, and how many others there are.
pub fn via_text(s: &Suspect) -> String {
    let Some(v) = s.via.first() else {
        return String::new();
    };
    let more = if s.via.len() > 1 {
        format!(" (+{} more)", s.via.len() - 1)
    } else {
        String::new()
    };
    format!("  via {}{more}", python_line(&v.frames))
}

/// The one-line coverage warning for a process, if its allocation view is incomplete.
pub fn coverage_warning(c: &Coverage) -> Option<String> {
    match c {
        Coverage::Good { .. } | Coverage::Windowed { .. } | Coverage::CensusOnly => None,
        Coverage::Low { reason } => Some(format!(
            "WARNING: allocation coverage is LOW: {}; outstanding bytes below are a lower bound (descriptors are exact)",
            clean(reason)
        )),
        Coverage::None { reason } => {
            Some(format!("WARNING: allocations are NOT traced: {} (descriptors are exact)", clean(reason)))
        }
    }
}

/// What a container holds, in a few words: "dict x16, ~232 B each".
pub fn holds_text(h: &Holds) -> String {
    let types: Vec<String> = h
        .types
        .iter()
        .take(3)
        .map(|(t, n)| format!("{} x{n}", clean(t)))
        .collect();
    let own = if h.mean_deep_bytes > h.mean_bytes {
        format!(
            " with what each holds alone (~{} itself)",
            human_bytes(h.mean_bytes as u64)
        )
    } else {
        String::new()
    };
    let shared = if h.shared_bytes >= 1.0 {
        format!(
            ", {} shared (interned strings, small ints, objects in several items: counted once)",
            human_bytes(h.shared_bytes as u64)
        )
    } else {
        String::new()
    };
    format!(
        "newest {}: {}, ~{} each{own}{shared}",
        h.sampled,
        types.join(", "),
        human_bytes(h.mean_deep_bytes.max(h.mean_bytes) as u64)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }

    #[test]
    fn suspects_read_at_the_application_line_via_the_library() {
        let via = |f: &str, line| crate::report::Via {
            frames: vec![
                Frame::python("getLogger", "logging/__init__.py", Some(2150)),
                Frame::python(f, "logging/__init__.py", Some(line)),
            ],
            now: 10,
        };
        let mut s = Suspect {
            resource: Resource::Memory,
            frames: vec![Frame::python("user", "app.py", Some(9))],
            now: 2048,
            count: 3,
            trend: crate::report::Trend {
                verdict: Verdict::Growing,
                per_min: 1024.0,
                gained: 2048.0,
            },
            oldest_age: None,
            app_frame: Some(Frame::python("user", "app.py", Some(9))),
            via: vec![via("getLogger", 1403), via("isEnabledFor", 1805)],
        };
        let line = suspect_line(&s);
        assert!(
            line.contains("+1.0 KiB/min")
                && line.ends_with(
                    "  user (app.py:9)  via getLogger (logging/__init__.py:1403) (+1 more)"
                ),
            "{line}"
        );
        s.via.truncate(1);
        assert!(suspect_line(&s).ends_with("via getLogger (logging/__init__.py:1403)"));
        // Descriptors: the application line, the kind, then the library line.
        s.resource = Resource::Descriptors;
        s.frames = vec![
            Frame::python("spool", "app.py", Some(51)),
            Frame::Resource {
                kind: "file".into(),
                name: None,
            },
        ];
        s.via = vec![crate::report::Via {
            frames: vec![Frame::python("mkstemp", "tempfile.py", Some(357))],
            now: 4,
        }];
        assert!(
            suspect_line(&s).ends_with("spool (app.py:51) [file]  via mkstemp (tempfile.py:357)"),
            "{}",
            suspect_line(&s)
        );
        s.via.clear();
        assert!(suspect_line(&s).ends_with("spool (app.py:51) [file]"));
    }

    #[test]
    fn stacks_leaf_first() {
        let f: Vec<Frame> = ["a", "b", "c"].iter().map(|s| Frame::native(s)).collect();
        assert_eq!(short_stack(&f, 2), "c <- b <- ...");
        assert_eq!(short_stack(&[], 2), "[no stack]");
    }
}
