//! report.json read through serde into typed structs: the parts the tests read (schema
//! `tracer-report/1`, see tracer/src/render/json.rs). Fields the tests do not read, and fields
//! added later, are ignored.

use std::path::Path;

use serde::{Deserialize, Deserializer};

/// A number the tracer may write as null (a NaN or infinite rate): NaN then.
fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// report.json.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    pub schema: String,
    /// "exact" or "watch".
    pub mode: String,
    pub elapsed_s: f64,
    pub interval_s: f64,
    pub started_unix: f64,
    pub processes: Vec<Process>,
    pub health: Health,
}

/// One process entry (one per program a pid ran while traced).
#[derive(Debug, Clone, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
    /// The container's short id, None on the host.
    pub container: Option<String>,
    pub interpreter: String,
    /// None while alive.
    pub exited_after_s: Option<f64>,
    /// The program the process exec'd (None: it did not).
    pub exec_into: Option<String>,
    pub checkpoints: u64,
    pub outstanding_bytes: u64,
    pub outstanding_allocations: u64,
    pub open_fds: u64,
    pub sampled: bool,
    pub suspects: Vec<Suspect>,
    pub census: Option<Census>,
    pub resident: Option<Resident>,
    pub heap_growth: Vec<HeapGrowth>,
    pub warning: Option<String>,
}

/// A stack judged for memory or descriptors.
#[derive(Debug, Clone, Deserialize)]
pub struct Suspect {
    /// "memory" or "descriptors".
    pub resource: String,
    pub verdict: String,
    #[serde(deserialize_with = "rate")]
    pub growth_per_min: f64,
    pub now: u64,
    pub objects: u64,
    pub oldest_age_s: Option<f64>,
    /// The innermost Python frame (`function (file:LINE)`), or the stack's leaf.
    pub line: String,
    pub stack: Vec<String>,
    pub app_frame: Option<String>,
    pub via: Vec<Via>,
}

/// A library path below a suspect's application frame.
#[derive(Debug, Clone, Deserialize)]
pub struct Via {
    pub line: String,
    pub stack: Vec<String>,
    pub now: u64,
}

/// The heap census.
#[derive(Debug, Clone, Deserialize)]
pub struct Census {
    pub passes: u64,
    pub partial_passes: u64,
    pub objects: u64,
    pub stack_samples: u64,
    pub rss_bytes: u64,
    pub rss_verdict: String,
    #[serde(deserialize_with = "rate")]
    pub rss_growth_per_min: f64,
    pub error: Option<String>,
    pub containers: Vec<Container>,
    pub types: Vec<TypeCount>,
    /// None: no asyncio task seen.
    pub tasks: Option<Tasks>,
    /// Resident memory grows and nothing the census reaches does.
    #[serde(default)]
    pub rss_unexplained_growth: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Container {
    pub name: String,
    pub named: bool,
    #[serde(rename = "type")]
    pub type_name: String,
    pub len: u64,
    pub verdict: String,
    #[serde(deserialize_with = "rate")]
    pub growth_per_min: f64,
    /// "global", "local" or "unreached".
    pub root: String,
    pub fed_from: Option<FedFrom>,
    pub uses: Vec<String>,
    pub stacks: Vec<CensusStack>,
    pub holds: Option<Holds>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FedFrom {
    pub app_frame: String,
    pub via: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CensusStack {
    /// Root first.
    pub frames: Vec<String>,
    pub samples: u64,
}

/// What a growing container's newest items are.
#[derive(Debug, Clone, Deserialize)]
pub struct Holds {
    pub sampled: u64,
    /// (type name, items), most common first.
    pub types: Vec<(String, u64)>,
    pub mean_bytes: f64,
    pub mean_deep_bytes: f64,
    pub shared_bytes: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TypeCount {
    pub name: String,
    pub count: u64,
    pub verdict: String,
    #[serde(deserialize_with = "rate")]
    pub growth_per_min: f64,
    pub held_at: Option<String>,
}

/// Pending asyncio tasks.
#[derive(Debug, Clone, Deserialize)]
pub struct Tasks {
    pub pending: u64,
    pub verdict: String,
    #[serde(deserialize_with = "rate")]
    pub growth_per_min: f64,
    /// (seconds since tracing began, pending) at each complete pass.
    pub series: Vec<(f64, u64)>,
    pub by_coroutine: Vec<TaskGroup>,
}

/// The pending tasks of one coroutine function.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskGroup {
    pub coroutine: String,
    pub count: u64,
    pub verdict: String,
    #[serde(deserialize_with = "rate")]
    pub growth_per_min: f64,
    pub awaited_by: Vec<AwaitedBy>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AwaitedBy {
    /// The awaiting task's coroutine; None: no task awaits them.
    pub coroutine: Option<String>,
    pub count: u64,
}

/// Resident memory, by part.
#[derive(Debug, Clone, Deserialize)]
pub struct Resident {
    pub rss_bytes: u64,
    pub verdict: String,
    #[serde(deserialize_with = "rate")]
    pub growth_per_min: f64,
    pub readings: u64,
    /// Each reading's total: (seconds, bytes).
    pub series: Vec<(f64, u64)>,
    pub parts: Vec<Part>,
    pub small_object_allocator: SmallObjects,
    pub malloc: Malloc,
    pub threads: u64,
    pub notes: Vec<String>,
    pub reading: Option<Reading>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Part {
    /// small_objects, malloc_in_use, ... (they sum to rss_bytes).
    pub part: String,
    pub label: String,
    pub bytes: u64,
    pub verdict: String,
    #[serde(deserialize_with = "rate")]
    pub growth_per_min: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SmallObjects {
    pub pool_size: u64,
    pub arenas: u64,
    pub pools: u64,
    pub empty_pools: u64,
    pub in_use_bytes: u64,
    pub resident_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Malloc {
    pub heaps: u64,
    pub in_use_bytes: u64,
    pub free_bytes: u64,
    pub free_chunks: u64,
    pub resident_bytes: u64,
    pub free_resident_bytes: u64,
    pub trimmable_bytes: u64,
    pub partial: bool,
}

/// What the resident figures say.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Reading {
    Grows {
        part: String,
    },
    Fragmented {
        free_bytes: u64,
        trimmable_bytes: u64,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub struct HeapGrowth {
    pub line: String,
    pub stack: Vec<String>,
    pub brk_bytes: u64,
    pub mapped_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Health {
    pub allocator_calls: u64,
    pub dropped_allocations: u64,
    pub dropped_descriptors: u64,
    pub stacks_lost: u64,
    pub python_stacks_lost: u64,
    pub ended_not_listed: u64,
    pub missed: Missed,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Missed {
    pub exited_before_attach: u64,
    pub forks_lost: u64,
}

/// report.json of an output directory.
pub fn read_report(dir: &Path) -> Report {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Report {
    /// The entries of a pid (one per program it ran while traced).
    pub fn entries(&self, pid: u32) -> Vec<&Process> {
        self.processes.iter().filter(|p| p.pid == pid).collect()
    }

    /// The only entry of a pid.
    pub fn process(&self, pid: u32) -> &Process {
        match self.entries(pid)[..] {
            [p] => p,
            ref e => panic!("{} entries of pid {pid}: {e:?}", e.len()),
        }
    }

    /// The first process entry.
    pub fn first(&self) -> &Process {
        self.processes.first().expect("a process in report.json")
    }
}

impl Process {
    /// The census; panics when it was not taken.
    pub fn census(&self) -> &Census {
        self.census
            .as_ref()
            .unwrap_or_else(|| panic!("no census for pid {}", self.pid))
    }

    /// The census's containers (none without a census).
    pub fn containers(&self) -> &[Container] {
        self.census.as_ref().map_or(&[], |c| &c.containers[..])
    }

    /// The resident memory figures; panics when they were not read.
    pub fn resident(&self) -> &Resident {
        self.resident
            .as_ref()
            .unwrap_or_else(|| panic!("no resident figures for pid {}", self.pid))
    }

    /// The suspects of a resource ("memory" or "descriptors").
    pub fn suspects_of<'a>(&'a self, resource: &'a str) -> impl Iterator<Item = &'a Suspect> {
        self.suspects.iter().filter(move |s| s.resource == resource)
    }

    /// Every frame label and name the entry shows: its suspects' lines and stacks, its
    /// census's containers (names, uses, stacks, where fed from), types (where held) and
    /// tasks (coroutines), its heap growth.
    pub fn labels(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for s in &self.suspects {
            out.push(&s.line);
            out.extend(s.stack.iter().map(String::as_str));
            out.extend(s.app_frame.as_deref());
            for v in &s.via {
                out.push(&v.line);
                out.extend(v.stack.iter().map(String::as_str));
            }
        }
        if let Some(c) = &self.census {
            out.extend(c.error.as_deref());
            for k in &c.containers {
                out.push(&k.name);
                out.extend(k.uses.iter().map(String::as_str));
                for s in &k.stacks {
                    out.extend(s.frames.iter().map(String::as_str));
                }
                if let Some(f) = &k.fed_from {
                    out.push(&f.app_frame);
                    out.extend(f.via.as_deref());
                }
                if let Some(h) = &k.holds {
                    out.extend(h.types.iter().map(|t| t.0.as_str()));
                }
            }
            for t in &c.types {
                out.push(&t.name);
                out.extend(t.held_at.as_deref());
            }
            for g in c.tasks.iter().flat_map(|t| &t.by_coroutine) {
                out.push(&g.coroutine);
                out.extend(g.awaited_by.iter().filter_map(|a| a.coroutine.as_deref()));
            }
        }
        for g in &self.heap_growth {
            out.push(&g.line);
            out.extend(g.stack.iter().map(String::as_str));
        }
        out
    }
}

/// Census passes a verdict needs (the tracer's `MIN_CHECKPOINTS`): with fewer, everything is
/// `unknown`, and "nothing grows" would say nothing.
pub const JUDGED_PASSES: u64 = 4;

/// The healthy twin's claim about a process: its census ran without error, long enough to
/// judge, and nothing it found grows: no container, no type, no pending asyncio tasks.
pub fn assert_nothing_grows(p: &Process, what: &str) {
    let pid = p.pid;
    let c = p.census();
    assert!(c.error.is_none(), "{what}: pid {pid}: {c:?}");
    assert!(
        c.passes >= JUDGED_PASSES,
        "{what}: pid {pid}: {} census passes, too few to judge: {c:?}",
        c.passes
    );
    let growing: Vec<&Container> = c.growing().collect();
    assert!(growing.is_empty(), "{what}: pid {pid}: {growing:?}");
    for t in &c.types {
        assert_ne!(t.verdict, "growing", "{what}: pid {pid}: {t:?}");
    }
    if let Some(t) = &c.tasks {
        assert_ne!(t.verdict, "growing", "{what}: pid {pid}: {t:?}");
    }
}

/// The same, and no descriptor suspect grows either.
pub fn assert_healthy(p: &Process, what: &str) {
    assert_nothing_grows(p, what);
    for s in p.suspects_of("descriptors") {
        assert_ne!(s.verdict, "growing", "{what}: pid {}: {s:?}", p.pid);
    }
}

impl Census {
    /// The container named `name`, if listed.
    pub fn container(&self, name: &str) -> Option<&Container> {
        self.containers.iter().find(|k| k.name == name)
    }

    /// The growing containers.
    pub fn growing(&self) -> impl Iterator<Item = &Container> {
        self.containers.iter().filter(|k| k.verdict == "growing")
    }

    /// The type named `name`, if listed.
    pub fn type_named(&self, name: &str) -> Option<&TypeCount> {
        self.types.iter().find(|t| t.name == name)
    }
}

impl Container {
    /// The type most of the sampled newest items have.
    pub fn holds_first(&self) -> Option<&str> {
        self.holds.as_ref()?.types.first().map(|t| t.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process entry of report.json with a census of one container and one type, and a
    /// field no struct knows.
    fn process(passes: u64, container: &str, type_verdict: &str, fds: &str) -> Process {
        let json = format!(
            r#"{{"pid": 7, "comm": "python3", "container": null, "interpreter": "CPython 3.12",
            "exited_after_s": null, "exec_into": null, "checkpoints": 5,
            "outstanding_bytes": 0, "outstanding_allocations": 0, "open_fds": 3,
            "sampled": true, "heap_growth": [], "warning": null, "resident": null,
            "a_field_added_later": {{"x": 1}},
            "suspects": [{{"resource": "descriptors", "verdict": "{fds}",
                "growth_per_min": null, "now": 3, "objects": 3, "oldest_age_s": null,
                "line": "f (/a.py:1)", "stack": [], "app_frame": null, "via": []}}],
            "census": {{"passes": {passes}, "partial_passes": 0, "last_pass_ms": 1.0,
                "objects": 10, "stack_samples": 0, "rss_bytes": 1, "rss_verdict": "stable",
                "rss_growth_per_min": 0.0, "error": null, "tasks": null,
                "containers": [{{"name": "m.X", "named": true, "type": "list", "len": 1,
                    "verdict": "{container}", "growth_per_min": 0.0, "root": "global",
                    "fed_from": null, "uses": [], "stacks": [], "holds": null}}],
                "types": [{{"name": "dict", "count": 9, "verdict": "{type_verdict}",
                    "growth_per_min": 0.0, "held_at": null}}]}}}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn unknown_fields_ignored_null_rates_read() {
        let p = process(5, "stable", "stable", "stable");
        assert!(p.suspects[0].growth_per_min.is_nan());
        assert_eq!(p.census().container("m.X").unwrap().type_name, "list");
    }

    #[test]
    fn the_healthy_check_fails_on_what_grows_and_on_too_few_passes() {
        assert_healthy(&process(5, "stable", "stable", "stable"), "healthy");
        for p in [
            process(5, "growing", "stable", "stable"),
            process(5, "stable", "growing", "stable"),
            process(5, "stable", "stable", "growing"),
            process(JUDGED_PASSES - 1, "stable", "stable", "stable"),
        ] {
            assert!(std::panic::catch_unwind(|| assert_healthy(&p, "twin")).is_err());
        }
    }
}
