//! The short human summary printed on stdout (and kept as summary.txt): it formats the report
//! and decides nothing (the verdicts, rankings and readings are the report's).

mod census;
mod format;
mod process;
mod resident;
mod stacks;

use std::fmt::Write as _;
use std::path::Path;

pub use crate::frame::python_line;
pub use format::{coverage_warning, holds_text, human_bytes, suspect_line, thousands, via_text};

use crate::report::{Mode, Report};
use crate::text::clean;

pub fn render(r: &Report, dir: Option<&Path>) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "tracer: traced {} process(es) for {:.1}s{}",
        r.procs.len(),
        r.elapsed.as_secs_f64(),
        if r.min_age.is_zero() {
            String::new()
        } else {
            format!(", reporting what is older than {:?}", r.min_age)
        }
    );
    for p in &r.procs {
        process::section(&mut o, r, p);
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "{}", health_line(r));
    if let Some(d) = dir {
        let _ = writeln!(o, "reports in {}", clean(&d.display().to_string()));
    }
    // The last guard: no control character but our own line breaks.
    crate::text::clean_lines(&o).into_owned()
}

/// The health line: what the kernel side saw and dropped.
pub fn health_line(r: &Report) -> String {
    let h = &r.health;
    let mut line = match r.mode {
        Mode::Exact => format!(
            "health: {} allocator calls, {} frees seen; dropped: {} allocations (map full), {} descriptors (map full)",
            thousands(h.alloc_calls),
            thousands(h.free_calls),
            h.alloc_map_full,
            h.fd_map_full,
        ),
        Mode::Watch => format!(
            "health: {} allocator calls seen in windows; dropped: {} allocations, {} descriptors (map full)",
            thousands(h.alloc_calls),
            h.alloc_map_full,
            h.fd_map_full,
        ),
    };
    if h.closed_dropped > 0 {
        line.push_str(&format!(
            "; {} processes that ended earlier are not listed (at most {} ended ones are kept, those with something growing first)",
            thousands(h.closed_dropped),
            h.closed_kept
        ));
    }
    if h.missed.exited_before_attach > 0 {
        line.push_str(&format!(
            "; {} Python processes found ended before they could be attached (not traced)",
            thousands(h.missed.exited_before_attach)
        ));
    }
    if h.missed.forks_lost > 0 {
        line.push_str(&format!(
            "; {} processes forked by traced ones were not recorded (the kernel's fork map was full): the scan of /proc finds those that live long enough",
            thousands(h.missed.forks_lost)
        ));
    }
    if h.py_stacks_lost > 0 {
        line.push_str(&format!(
            "; {} Python stacks lost (the kernel's Python stack map was full): those allocations and descriptors have native frames only",
            thousands(h.py_stacks_lost)
        ));
    }
    if h.stacks_lost > 0 {
        line.push_str(&format!(
            "; {} native stacks lost (the kernel's stack map was full, or two stacks collided in it): those allocations and descriptors keep their Python frames but have no native frames",
            thousands(h.stacks_lost)
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_stacks_explained_only_when_some_are() {
        let mut r = Report {
            mode: Mode::Exact,
            interval: std::time::Duration::from_secs(10),
            budget: None,
            elapsed: std::time::Duration::from_secs(5),
            started_unix: 0.0,
            min_age: std::time::Duration::ZERO,
            procs: vec![],
            health: Default::default(),
            places: Default::default(),
        };
        assert!(!health_line(&r).contains("lost"), "{}", health_line(&r));
        r.health.stacks_lost = 433;
        let line = health_line(&r);
        assert!(
            line.contains("433 native stacks lost (the kernel's stack map was full"),
            "{line}"
        );
        assert!(
            line.contains("keep their Python frames but have no native frames"),
            "{line}"
        );
    }
}
