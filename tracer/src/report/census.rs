//! The heap census judged: its facts (`snapshot::census`, made by `python::census`) turned into
//! the report's containers, types and tasks, each with its verdict and ranked by `verdict`'s
//! order. The census collects; this judges and ranks; the renderers format.

use crate::frame::Frame;
pub use crate::snapshot::census::Holds;
use crate::snapshot::census::{CensusFacts, ContainerFacts, TasksFacts, TypeFacts};
use crate::verdict::{self, judge_counts, Series, Trend, Verdict};

/// Containers reported per process.
const REPORTED: usize = 12;
/// Types and coroutines reported per process.
const TYPES: usize = 10;
const COROUTINES: usize = 10;

/// A container in the report.
#[derive(Debug, Clone)]
pub struct ContainerReport {
    /// `module.global`, `module.global[key]`, `module.Class.attr`... or where it is.
    pub name: String,
    pub named: bool,
    pub type_name: String,
    pub len: u64,
    /// Items per minute.
    pub trend: Trend,
    pub holds: Option<Holds>,
    /// "global" (hangs from a module global), "local" (from a local of a running frame), or
    /// "unreached" (no path to either found, yet: the reference search goes on pass after pass).
    pub root: &'static str,
    /// For a global: where the code loads it (function, file, line). For a local: the line
    /// its frame is running.
    pub uses: Vec<Frame>,
    /// The uses in functions that add to no container: they read it (`asyncio.all_tasks`
    /// iterating the task registry), they do not feed it.
    pub readers: Vec<Frame>,
    /// Python stacks (root first) that reach those lines, with how many stack samples saw them
    /// (for a local: the stack of its frame, 0 samples).
    pub stacks: Vec<(Vec<Frame>, u64)>,
}

#[derive(Debug, Clone)]
pub struct TypeReport {
    pub name: String,
    pub count: u64,
    pub trend: Trend,
    /// Where one of its objects is held (a growing type: the reference path of one of its
    /// newest objects, `logging.Logger.manager.loggerDict["user-41"]`).
    pub held_at: Option<String>,
}

/// The pending asyncio tasks of one coroutine function.
#[derive(Debug, Clone)]
pub struct TaskReport {
    /// The coroutine's function and file, and the line most of its tasks wait at.
    pub coroutine: Frame,
    pub count: u64,
    /// Tasks per minute.
    pub trend: Trend,
    /// What awaits them: the awaiting task's coroutine (where it waits; None: no task awaits
    /// them), with how many, most first (at most 3).
    pub awaited_by: Vec<(Option<Frame>, u64)>,
}

/// Pending asyncio tasks, pass after pass.
#[derive(Debug, Clone)]
pub struct TasksReport {
    pub pending: u64,
    pub trend: Trend,
    /// (seconds since tracing began, pending tasks) at each complete pass.
    pub series: Vec<(f64, u64)>,
    /// Growing first (fastest first), then the most numerous.
    pub by_coroutine: Vec<TaskReport>,
}

/// What the census found, for the reports.
#[derive(Debug, Clone)]
pub struct CensusReport {
    pub passes: u64,
    pub partial: u64,
    pub last_ms: f64,
    pub objects: u64,
    /// Python stacks sampled from outside so far.
    pub stack_samples: u64,
    /// The process's resident memory (bytes) at the last pass, and its trend (bytes/min).
    pub rss: u64,
    pub rss_trend: Trend,
    /// Growing containers first (fastest first), then the largest others.
    pub containers: Vec<ContainerReport>,
    /// Types whose count grows, fastest first, then the most numerous.
    pub types: Vec<TypeReport>,
    /// asyncio's pending tasks (None: the process has none, and never had).
    pub tasks: Option<TasksReport>,
    pub error: Option<String>,
}

/// Judges and ranks what the census found.
pub fn judge(c: &CensusFacts) -> CensusReport {
    CensusReport {
        passes: c.passes,
        partial: c.partial,
        last_ms: c.last_ms,
        objects: c.objects,
        stack_samples: c.stack_samples,
        rss: c.rss.last().map(|p| p.1).unwrap_or(0),
        rss_trend: judge_counts(Series::Resident, &c.rss),
        containers: containers(&c.containers),
        types: types(&c.types),
        tasks: c.tasks.as_ref().map(tasks),
        error: c.error.clone(),
    }
}

/// Growing containers first (fastest first), the ones a reader can place (named) before the
/// others, then the longest; ties by address.
fn containers(facts: &[ContainerFacts]) -> Vec<ContainerReport> {
    let mut containers: Vec<(ContainerReport, u64)> = facts
        .iter()
        .map(|f| {
            (
                ContainerReport {
                    named: f.name.is_some(),
                    name: f
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{} at {:#x}", f.type_name, f.addr)),
                    type_name: f.type_name.clone(),
                    len: f.series.last().map(|p| p.1).unwrap_or(0),
                    trend: judge_counts(Series::Items, &f.series),
                    holds: f.holds.clone(),
                    uses: f.uses.clone(),
                    readers: f.readers.clone(),
                    stacks: f.stacks.clone(),
                    root: f.root,
                },
                f.addr,
            )
        })
        .collect();
    containers.sort_by(|a, b| {
        let key = |c: &ContainerReport| (!c.named) as u8;
        verdict::order_grouped(
            (&a.0.trend, key(&a.0), a.0.len),
            (&b.0.trend, key(&b.0), b.0.len),
        )
        .then(a.1.cmp(&b.1))
    });
    containers.into_iter().map(|c| c.0).take(REPORTED).collect()
}

/// The types with objects now, growing first (fastest first), then the most numerous.
fn types(facts: &[TypeFacts]) -> Vec<TypeReport> {
    let mut types: Vec<TypeReport> = facts
        .iter()
        .map(|t| TypeReport {
            name: t.name.clone(),
            count: t.series.last().map(|p| p.1).unwrap_or(0),
            trend: judge_counts(Series::of_type(&t.name), &t.series),
            held_at: t.held_at.clone(),
        })
        .filter(|t| t.count > 0)
        .collect();
    types.sort_by(|a, b| {
        verdict::order(&a.trend, a.count, &b.trend, b.count).then(a.name.cmp(&b.name))
    });
    types.truncate(TYPES);
    types
}

/// Pending tasks: the coroutines with tasks now (or growing), growing first, then the most.
fn tasks(t: &TasksFacts) -> TasksReport {
    let mut by_coroutine: Vec<TaskReport> = t
        .by_coroutine
        .iter()
        .map(|c| TaskReport {
            coroutine: c.coroutine.clone(),
            count: c.series.last().map_or(0, |p| p.1),
            trend: judge_counts(Series::Objects, &c.series),
            awaited_by: c.awaited_by.clone(),
        })
        .filter(|t| t.count > 0 || t.trend.verdict == Verdict::Growing)
        .collect();
    by_coroutine.sort_by(|a, b| {
        verdict::order(&a.trend, a.count, &b.trend, b.count)
            .then_with(|| a.coroutine.cmp(&b.coroutine))
    });
    by_coroutine.truncate(COROUTINES);
    TasksReport {
        pending: t.series.last().map_or(0, |p| p.1),
        trend: judge_counts(Series::Objects, &t.series),
        series: t.series.clone(),
        by_coroutine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[u64]) -> Vec<(f64, u64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64 * 10.0, v))
            .collect()
    }

    fn container(addr: u64, name: Option<&str>, values: &[u64]) -> ContainerFacts {
        ContainerFacts {
            addr,
            name: name.map(str::to_string),
            type_name: "dict".into(),
            series: series(values),
            holds: None,
            root: if name.is_some() {
                "global"
            } else {
                "unreached"
            },
            uses: vec![],
            readers: vec![],
            stacks: vec![],
        }
    }

    /// Growing before large, named before unnamed among growing ones, the longest first among
    /// the others; an unnamed one is called by its type and address.
    #[test]
    fn containers_are_judged_and_ranked() {
        let up: Vec<u64> = (0..8).map(|i| 100 + 500 * i).collect();
        let facts = CensusFacts {
            passes: 8,
            partial: 0,
            last_ms: 1.0,
            objects: 10,
            stack_samples: 0,
            rss: series(&[1 << 20; 8]),
            containers: vec![
                container(0x10, Some("__main__.BIG"), &[8000; 8]),
                container(0x20, None, &up),
                container(0x30, Some("__main__.LOG"), &up),
                container(0x40, Some("__main__.SMALL"), &[100; 8]),
            ],
            types: vec![
                TypeFacts {
                    name: "Node".into(),
                    series: series(&up),
                    held_at: Some("__main__.NODES".into()),
                },
                TypeFacts {
                    name: "gone".into(),
                    series: series(&[5, 0]),
                    held_at: None,
                },
            ],
            tasks: None,
            error: None,
        };
        let r = judge(&facts);
        let names: Vec<&str> = r.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "__main__.LOG",
                "dict at 0x20",
                "__main__.BIG",
                "__main__.SMALL"
            ]
        );
        assert_eq!(r.containers[0].trend.verdict, Verdict::Growing);
        assert!(!r.containers[1].named);
        assert_eq!(r.containers[2].trend.verdict, Verdict::Stable);
        assert_eq!(r.types.len(), 1, "a type with no object now is left out");
        assert_eq!(r.types[0].held_at.as_deref(), Some("__main__.NODES"));
        assert_eq!(r.rss, 1 << 20);
        // A cache that fills and then stays flat is not growing at the end.
        let fill: Vec<u64> = (0..10).map(|i| (1000 * i).min(3000)).collect();
        let r = judge(&CensusFacts {
            containers: vec![container(0x50, Some("__main__.CACHE"), &fill)],
            ..facts
        });
        assert_ne!(r.containers[0].trend.verdict, Verdict::Growing);
    }

    #[test]
    fn tasks_keep_the_growing_and_the_pending() {
        use crate::snapshot::census::TaskFacts;
        let t = TasksFacts {
            series: series(&[1, 2, 3, 4, 5, 6, 7, 8]),
            by_coroutine: vec![
                TaskFacts {
                    coroutine: Frame::python("done", "a.py", Some(1)),
                    series: series(&[3, 0]),
                    awaited_by: vec![],
                },
                TaskFacts {
                    coroutine: Frame::python("wait", "a.py", Some(2)),
                    series: series(&[1, 1]),
                    awaited_by: vec![(None, 1)],
                },
            ],
        };
        let r = tasks(&t);
        assert_eq!(r.pending, 8);
        assert_eq!(r.by_coroutine.len(), 1);
        assert_eq!(
            r.by_coroutine[0].coroutine,
            Frame::python("wait", "a.py", Some(2))
        );
    }
}
