//! /metrics as a `prometheus-client` registry: outstanding bytes, objects and open descriptors per
//! process (and descriptor kind), the top growing stacks as a bounded label set, the heap census
//! (tracked objects, the reported containers' lengths), and the tracer's own health. The text is
//! the OpenMetrics exposition that Prometheus scrapes (`CONTENT_TYPE`).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::frame::{python_line, Frame};
use crate::report::{ProcReport, Report, Resource, Verdict};

/// The content type of `render`'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Growing stacks exported per process (bounded label cardinality).
const TOP_GROWING: usize = 10;

type FloatGauge = Gauge<f64, AtomicU64>;

/// The labels of a process's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Proc {
    pid: u32,
    comm: String,
    container: String,
}

impl Proc {
    fn of(p: &ProcReport) -> Proc {
        Proc {
            pid: p.pid,
            comm: p.comm.clone(),
            container: p.container.clone().unwrap_or_default(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FdKind {
    #[prometheus(flatten)]
    proc: Proc,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Growing {
    #[prometheus(flatten)]
    proc: Proc,
    rank: usize,
    line: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResidentPart {
    #[prometheus(flatten)]
    proc: Proc,
    part: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Tasks {
    #[prometheus(flatten)]
    proc: Proc,
    coroutine: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Container {
    #[prometheus(flatten)]
    proc: Proc,
    name: String,
    r#type: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Map {
    map: &'static str,
}

/// The registry of one report. Counters carry the kernel's running totals (registered without
/// their `_total` suffix, which the encoding adds).
pub fn registry(r: &Report) -> Registry {
    let mut reg = Registry::default();
    // An entry closed by an exec shares its pid (and often its comm) with the pid's next
    // program: the series are the current program's.
    let procs: Vec<&ProcReport> = r.procs.iter().filter(|p| p.execd.is_none()).collect();

    let bytes = Family::<Proc, Gauge>::default();
    let objects = Family::<Proc, Gauge>::default();
    let fds = Family::<FdKind, Gauge>::default();
    let growing = Family::<Growing, FloatGauge>::default();
    let census = Family::<Proc, Gauge>::default();
    let items = Family::<Container, Gauge>::default();
    let resident = Family::<ResidentPart, Gauge>::default();
    let tasks = Family::<Tasks, Gauge>::default();
    for p in procs.iter().copied() {
        let labels = Proc::of(p);
        bytes.get_or_create(&labels).set(p.total_bytes as i64);
        objects.get_or_create(&labels).set(p.total_allocs as i64);
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        for f in &p.fds {
            let kind = match f.frames.last() {
                Some(Frame::Resource { kind, .. }) => kind.split(' ').next().unwrap_or(kind),
                _ => "fd",
            }
            .to_string();
            *kinds.entry(kind).or_default() += f.count;
        }
        for (kind, n) in kinds {
            let proc = labels.clone();
            fds.get_or_create(&FdKind { proc, kind }).set(n as i64);
        }
        let top = p
            .suspects
            .iter()
            .filter(|s| s.resource == Resource::Memory && s.trend.verdict == Verdict::Growing)
            .take(TOP_GROWING);
        for (rank, s) in top.enumerate() {
            let key = Growing {
                proc: labels.clone(),
                rank: rank + 1,
                line: python_line(&s.frames),
            };
            growing.get_or_create(&key).set(s.trend.per_min);
        }
        if let Some(c) = p.census.as_ref().filter(|c| c.passes > 0) {
            census.get_or_create(&labels).set(c.objects as i64);
        }
        for k in p.census.iter().flat_map(|c| &c.containers) {
            let key = Container {
                proc: labels.clone(),
                name: k.name.clone(),
                r#type: k.type_name.clone(),
                verdict: k.trend.verdict.to_string(),
            };
            items.get_or_create(&key).set(k.len as i64);
        }
        for t in p.census.iter().filter_map(|c| c.tasks.as_ref()) {
            for g in &t.by_coroutine {
                let key = Tasks {
                    proc: labels.clone(),
                    coroutine: g.coroutine.to_string(),
                    verdict: g.trend.verdict.to_string(),
                };
                tasks.get_or_create(&key).set(g.count as i64);
            }
        }
        for part in p.resident.iter().flat_map(|r| &r.parts) {
            let key = ResidentPart {
                proc: labels.clone(),
                part: part.part.key().to_string(),
                verdict: part.trend.verdict.to_string(),
            };
            resident.get_or_create(&key).set(part.bytes as i64);
        }
    }
    reg.register(
        "tracer_resident_bytes",
        "Resident memory by part (they sum to the process's resident size): Python objects, the allocators' free space, malloc's heap, large blocks, stacks, code, files",
        resident,
    );
    reg.register(
        "tracer_outstanding_bytes",
        "Outstanding bytes (sampled in watch mode)",
        bytes,
    );
    reg.register(
        "tracer_outstanding_objects",
        "Outstanding allocations (sampled in watch mode)",
        objects,
    );
    reg.register(
        "tracer_open_fds",
        "Open descriptors created while traced, by kind",
        fds,
    );
    reg.register(
        "tracer_growing_stack_bytes_per_minute",
        "Growth rate of the fastest-growing stacks (top 10 per process), by innermost Python line",
        growing,
    );
    reg.register(
        "tracer_census_objects",
        "Objects tracked by the gc at the last heap census",
        census,
    );
    reg.register(
        "tracer_asyncio_tasks",
        "Pending asyncio tasks at the last heap census, by coroutine (function and the line most of them wait at; at most 10 per process) and verdict",
        tasks,
    );
    reg.register(
        "tracer_census_container_items",
        "Length of the lists, dicts and sets the heap census reports (at most 12 per process), by name",
        items,
    );

    let h = &r.health;
    let calls = Counter::<u64>::default();
    calls.inc_by(h.alloc_calls);
    reg.register("tracer_allocator_calls", "Allocator probe hits", calls);
    let dropped = Family::<Map, Counter>::default();
    let fullness = Family::<Map, FloatGauge>::default();
    let maps = [
        (
            "allocations",
            h.alloc_map_full,
            h.alloc_entries as f64 / tracer_common::ALLOC_MAP_CAPACITY as f64,
        ),
        (
            "descriptors",
            h.fd_map_full,
            h.fd_entries as f64 / tracer_common::FD_MAP_CAPACITY as f64,
        ),
    ];
    for (map, full, ratio) in maps {
        dropped.get_or_create(&Map { map }).inc_by(full);
        fullness.get_or_create(&Map { map }).set(ratio);
    }
    reg.register(
        "tracer_dropped",
        "Events dropped because a map was full, by map",
        dropped,
    );
    reg.register(
        "tracer_map_fullness_ratio",
        "Entries over capacity of the kernel maps, by map",
        fullness,
    );
    let missed = Counter::<u64>::default();
    missed.inc_by(h.missed.exited_before_attach + h.missed.forks_lost);
    reg.register(
        "tracer_missed_processes",
        "Python processes found that could not be traced (ended before they could be attached, or forks the kernel could not record)",
        missed,
    );
    let lost = Counter::<u64>::default();
    lost.inc_by(h.stacks_lost);
    reg.register(
        "tracer_stacks_lost",
        "Stacks the kernel could not record",
        lost,
    );
    let alive = Gauge::<i64>::default();
    alive.set(r.procs.iter().filter(|p| p.exited_after.is_none()).count() as i64);
    reg.register("tracer_traced_processes", "Processes traced (alive)", alive);
    reg
}

/// The exposition text of one report.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut o, &registry(r));
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use std::time::Duration;

    #[test]
    fn health_series_and_names() {
        let mut r = Report {
            mode: Mode::Exact,
            interval: Duration::from_secs(10),
            budget: None,
            elapsed: Duration::from_secs(5),
            started_unix: 0.0,
            min_age: Duration::ZERO,
            procs: vec![],
            health: Default::default(),
            places: Default::default(),
        };
        r.health.alloc_calls = 12;
        r.health.fd_map_full = 3;
        r.health.fd_entries = tracer_common::FD_MAP_CAPACITY as u64 / 4;
        let text = render(&r);
        for line in [
            "# TYPE tracer_allocator_calls counter",
            "tracer_allocator_calls_total 12",
            "tracer_dropped_total{map=\"descriptors\"} 3",
            "tracer_dropped_total{map=\"allocations\"} 0",
            "tracer_map_fullness_ratio{map=\"descriptors\"} 0.25",
            "tracer_stacks_lost_total 0",
            "tracer_traced_processes 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut reg = Registry::default();
        let f = Family::<Proc, Gauge>::default();
        let proc = Proc {
            pid: 7,
            comm: "a\"b\\c\nd".into(),
            container: String::new(),
        };
        f.get_or_create(&proc).set(1);
        reg.register("t", "T", f);
        let mut o = String::new();
        prometheus_client::encoding::text::encode(&mut o, &reg).unwrap();
        assert!(
            o.contains("t{pid=\"7\",comm=\"a\\\"b\\\\c\\nd\",container=\"\"} 1"),
            "{o}"
        );
    }
}
