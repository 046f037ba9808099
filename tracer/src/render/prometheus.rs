//! /metrics in the Prometheus text exposition format (version 0.0.4): outstanding bytes, objects
//! and open descriptors per process (and descriptor kind), the top growing stacks as a bounded
//! label set, the heap census (tracked objects, the reported containers' lengths), and the
//! tracer's own health.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::frame::{python_line, Frame};
use crate::report::Verdict;
use crate::report::{Report, Resource};

/// Growing stacks exported per process (bounded label cardinality).
const TOP_GROWING: usize = 10;

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    // An entry closed by an exec shares its pid (and often its comm) with the pid's next
    // program: the series are the current program's.
    let procs: Vec<&crate::report::ProcReport> =
        r.procs.iter().filter(|p| p.execd.is_none()).collect();
    let proc_labels = |p: &crate::report::ProcReport| {
        format!(
            "pid=\"{}\",comm=\"{}\",container=\"{}\"",
            p.pid,
            esc(&p.comm),
            esc(p.container.as_deref().unwrap_or(""))
        )
    };
    type Total = fn(&crate::report::ProcReport) -> u64;
    let totals: [(&str, &str, Total); 2] = [
        (
            "tracer_outstanding_bytes",
            "Outstanding bytes (sampled in watch mode).",
            |p| p.total_bytes,
        ),
        (
            "tracer_outstanding_objects",
            "Outstanding allocations (sampled in watch mode).",
            |p| p.total_allocs,
        ),
    ];
    for (name, help, value) in totals {
        family(&mut o, name, "gauge", help);
        for p in procs.iter().copied() {
            let _ = writeln!(o, "{name}{{{}}} {}", proc_labels(p), value(p));
        }
    }
    family(
        &mut o,
        "tracer_open_fds",
        "gauge",
        "Open descriptors created while traced, by kind.",
    );
    for p in procs.iter().copied() {
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        for f in &p.fds {
            let kind = match f.frames.last() {
                Some(Frame::Resource { kind, .. }) => kind.split(' ').next().unwrap_or(kind),
                _ => "fd",
            }
            .to_string();
            *kinds.entry(kind).or_default() += f.count;
        }
        for (k, n) in kinds {
            let _ = writeln!(
                o,
                "tracer_open_fds{{{},kind=\"{}\"}} {n}",
                proc_labels(p),
                esc(&k)
            );
        }
    }
    family(
        &mut o,
        "tracer_growing_stack_bytes_per_minute",
        "gauge",
        "Growth rate of the fastest-growing stacks (top 10 per process), by innermost Python line.",
    );
    for p in procs.iter().copied() {
        let growing = p
            .suspects
            .iter()
            .filter(|s| s.resource == Resource::Memory && s.trend.verdict == Verdict::Growing)
            .take(TOP_GROWING);
        for (rank, s) in growing.enumerate() {
            let _ = writeln!(
                o,
                "tracer_growing_stack_bytes_per_minute{{{},rank=\"{}\",line=\"{}\"}} {:.0}",
                proc_labels(p),
                rank + 1,
                esc(&python_line(&s.frames)),
                s.trend.per_min
            );
        }
    }
    family(
        &mut o,
        "tracer_census_objects",
        "gauge",
        "Objects tracked by the gc at the last heap census.",
    );
    for p in procs.iter().copied() {
        if let Some(c) = p.census.as_ref().filter(|c| c.passes > 0) {
            let _ = writeln!(
                o,
                "tracer_census_objects{{{}}} {}",
                proc_labels(p),
                c.objects
            );
        }
    }
    family(
        &mut o,
        "tracer_census_container_items",
        "gauge",
        "Length of the lists, dicts and sets the heap census reports (at most 12 per process), by name.",
    );
    for p in procs.iter().copied() {
        for k in p.census.iter().flat_map(|c| &c.containers) {
            let _ = writeln!(
                o,
                "tracer_census_container_items{{{},name=\"{}\",type=\"{}\",verdict=\"{}\"}} {}",
                proc_labels(p),
                esc(&k.name),
                esc(&k.type_name),
                k.trend.verdict,
                k.len
            );
        }
    }
    let h = &r.health;
    family(
        &mut o,
        "tracer_allocator_calls_total",
        "counter",
        "Allocator probe hits.",
    );
    let _ = writeln!(o, "tracer_allocator_calls_total {}", h.alloc_calls);
    family(
        &mut o,
        "tracer_dropped_total",
        "counter",
        "Events dropped because a map was full, by map.",
    );
    let _ = writeln!(
        o,
        "tracer_dropped_total{{map=\"allocations\"}} {}",
        h.alloc_map_full
    );
    let _ = writeln!(
        o,
        "tracer_dropped_total{{map=\"descriptors\"}} {}",
        h.fd_map_full
    );
    family(
        &mut o,
        "tracer_map_fullness_ratio",
        "gauge",
        "Entries over capacity of the kernel maps, by map.",
    );
    let _ = writeln!(
        o,
        "tracer_map_fullness_ratio{{map=\"allocations\"}} {:.6}",
        h.alloc_entries as f64 / tracer_common::ALLOC_MAP_CAPACITY as f64
    );
    let _ = writeln!(
        o,
        "tracer_map_fullness_ratio{{map=\"descriptors\"}} {:.6}",
        h.fd_entries as f64 / tracer_common::FD_MAP_CAPACITY as f64
    );
    family(
        &mut o,
        "tracer_stacks_lost_total",
        "counter",
        "Stacks the kernel could not record.",
    );
    let _ = writeln!(o, "tracer_stacks_lost_total {}", h.stacks_lost);
    family(
        &mut o,
        "tracer_traced_processes",
        "gauge",
        "Processes traced (alive).",
    );
    let _ = writeln!(
        o,
        "tracer_traced_processes {}",
        r.procs.iter().filter(|p| p.exited_after.is_none()).count()
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
