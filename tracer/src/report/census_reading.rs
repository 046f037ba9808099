//! What the report reads in the heap census's findings: where the application feeds each
//! container, whether resident memory grows out of the census's reach, and what awaits most
//! of a coroutine's pending tasks. The renderers read it; they judge nothing themselves.

use super::suspects::source_file;
use super::{census, AppPaths};
use crate::frame::Frame;
use crate::place::innermost_app;
use crate::verdict;

/// Where the application feeds a census container.
#[derive(Debug, Clone, PartialEq)]
pub struct FedFrom {
    /// The innermost application frame of the most sampled stack through its uses that has one.
    pub app_frame: Frame,
    /// The use below it, in a library (None: the use is the application's own line).
    pub via: Option<Frame>,
}

/// What awaits most of a coroutine's pending tasks.
#[derive(Debug, Clone, PartialEq)]
pub enum AwaitedBy {
    /// A task running this coroutine (where it waits).
    Task(Frame),
    /// No task awaits them.
    NoTask,
}

/// The report's reading of one process's census.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CensusReading {
    /// Per container of the census (in its order): where the application feeds it.
    pub fed_from: Vec<Option<FedFrom>>,
    /// Resident memory grows and nothing the census reaches does (`verdict::grows_out_of_reach`).
    pub grows_out_of_reach: bool,
    /// Per coroutine of the census's pending tasks (in its order): what awaits most of them,
    /// when one thing does.
    pub awaited_by: Vec<Option<AwaitedBy>>,
}

impl CensusReading {
    /// Where the application feeds the census's `i`th container.
    pub fn fed_from(&self, i: usize) -> Option<&FedFrom> {
        self.fed_from.get(i).and_then(Option::as_ref)
    }

    /// What awaits most of the tasks of the census's `i`th coroutine.
    pub fn awaited_by(&self, i: usize) -> Option<&AwaitedBy> {
        self.awaited_by.get(i).and_then(Option::as_ref)
    }
}

/// Reads `c`: the verdicts are the census's, the conclusions the report's.
pub fn read(c: &census::CensusReport, paths: &AppPaths) -> CensusReading {
    let verdicts = |v: &mut dyn Iterator<Item = verdict::Verdict>| v.collect::<Vec<_>>();
    CensusReading {
        fed_from: c.containers.iter().map(|k| fed_from(k, paths)).collect(),
        grows_out_of_reach: verdict::grows_out_of_reach(
            c.rss_trend.verdict,
            &verdicts(&mut c.containers.iter().map(|k| k.trend.verdict)),
            &verdicts(&mut c.types.iter().map(|t| t.trend.verdict)),
        ),
        awaited_by: c
            .tasks
            .iter()
            .flat_map(|t| &t.by_coroutine)
            .map(|g| match g.awaited_by.first() {
                Some((by, n)) if verdict::most(*n, g.count) => Some(match by {
                    Some(f) => AwaitedBy::Task(f.clone()),
                    None => AwaitedBy::NoTask,
                }),
                _ => None,
            })
            .collect(),
    }
}

/// Where the code that grows a census container sits in the application: of the sampled stacks
/// through its uses (most seen first), the first one with an application frame gives that frame
/// and, when the use itself is below it (in a library), the use.
/// A library use that only reads the container (see `ContainerReport::readers`) does not
/// feed it: its stacks are not where the container grows.
pub fn fed_from(k: &census::ContainerReport, paths: &AppPaths) -> Option<FedFrom> {
    k.stacks.iter().find_map(|(stack, _)| {
        let i = innermost_app(paths, stack.iter().map(source_file))?;
        let below = stack[i + 1..].iter().rev().find(|f| f.is_python()).cloned();
        if below
            .as_ref()
            .is_some_and(|b| k.readers.iter().any(|r| same_code(r, b)))
        {
            return None;
        }
        Some(FedFrom {
            app_frame: stack[i].clone(),
            via: below,
        })
    })
}

/// Two frames of the same function (their lines may differ).
fn same_code(a: &Frame, b: &Frame) -> bool {
    match (a, b) {
        (
            Frame::Python {
                function: fa,
                file: la,
                ..
            },
            Frame::Python {
                function: fb,
                file: lb,
                ..
            },
        ) => fa == fb && la == lb,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::suspects::tests::{logger_stack, py, APP, LOGGING};
    use crate::verdict::{Trend, Verdict};

    #[test]
    fn census_containers_fed_from_the_application() {
        let k = census::ContainerReport {
            name: "logging.Logger.manager.loggerDict".into(),
            named: true,
            type_name: "dict".into(),
            len: 10,
            trend: Trend {
                verdict: Verdict::Growing,
                per_min: 1.0,
                gained: 1.0,
            },
            holds: None,
            root: "global",
            uses: vec![py("getLogger", LOGGING, 1403)],
            readers: vec![],
            stacks: vec![
                (
                    vec![
                        py("_bootstrap", "<frozen x>", 1),
                        py("__init__", "__init__", 3),
                        py("getLogger", LOGGING, 1403),
                    ],
                    9,
                ),
                (logger_stack(py("getLogger", LOGGING, 1403)), 5),
            ],
        };
        let paths = AppPaths::default();
        assert_eq!(
            fed_from(&k, &paths),
            Some(FedFrom {
                app_frame: py("user", APP, 9),
                via: Some(py("getLogger", LOGGING, 1403))
            })
        );
        let own = census::ContainerReport {
            stacks: vec![(vec![py("leak", APP, 3)], 2)],
            ..k.clone()
        };
        assert_eq!(
            fed_from(&own, &paths),
            Some(FedFrom {
                app_frame: py("leak", APP, 3),
                via: None
            })
        );
        // A library function that only reads it (asyncio.all_tasks iterating the task
        // registry) does not feed it, whichever app frame called it: no line.
        let read = census::ContainerReport {
            readers: vec![py("getLogger", LOGGING, 1400)],
            ..k.clone()
        };
        assert_eq!(fed_from(&read, &paths), None);
        let none = census::ContainerReport {
            stacks: vec![],
            ..k
        };
        assert_eq!(fed_from(&none, &paths), None);
    }

    fn trend(verdict: Verdict) -> Trend {
        Trend {
            verdict,
            per_min: 0.0,
            gained: 0.0,
        }
    }

    fn container(verdict: Verdict) -> census::ContainerReport {
        census::ContainerReport {
            name: "app.cache".into(),
            named: true,
            type_name: "dict".into(),
            len: 3,
            trend: trend(verdict),
            holds: None,
            root: "global",
            uses: vec![],
            readers: vec![],
            stacks: vec![],
        }
    }

    fn census(rss: Verdict, containers: &[Verdict]) -> census::CensusReport {
        census::CensusReport {
            passes: 6,
            partial: 0,
            last_ms: 1.0,
            objects: 100,
            stack_samples: 0,
            rss: 1 << 30,
            rss_trend: trend(rss),
            containers: containers.iter().map(|v| container(*v)).collect(),
            types: vec![],
            tasks: None,
            error: None,
        }
    }

    #[test]
    fn resident_growth_out_of_the_census_reach() {
        let read = |c: &census::CensusReport| read(c, &AppPaths::default()).grows_out_of_reach;
        use Verdict::*;
        assert!(read(&census(Growing, &[Stable, Freed])));
        assert!(!read(&census(Stable, &[Stable])));
        // A growing container explains it; an unjudged one says nothing yet.
        assert!(!read(&census(Growing, &[Stable, Growing])));
        assert!(!read(&census(Growing, &[Stable, Unknown])));
        // So does a growing type.
        let mut c = census(Growing, &[Stable]);
        c.types.push(census::TypeReport {
            name: "bytes".into(),
            count: 10,
            trend: trend(Growing),
            held_at: None,
        });
        assert!(!read(&c));
    }

    #[test]
    fn what_awaits_most_of_the_tasks() {
        let group = |awaited_by: Vec<(Option<Frame>, u64)>| census::TaskReport {
            coroutine: py("handle", APP, 20),
            count: 10,
            trend: trend(Verdict::Stable),
            awaited_by,
        };
        let mut c = census(Verdict::Stable, &[]);
        c.tasks = Some(census::TasksReport {
            pending: 30,
            trend: trend(Verdict::Stable),
            series: vec![],
            by_coroutine: vec![
                group(vec![(Some(py("main", APP, 40)), 6), (None, 4)]),
                group(vec![(None, 9)]),
                group(vec![(Some(py("main", APP, 40)), 5), (None, 5)]),
            ],
        });
        let r = read(&c, &AppPaths::default());
        assert_eq!(r.awaited_by(0), Some(&AwaitedBy::Task(py("main", APP, 40))));
        assert_eq!(r.awaited_by(1), Some(&AwaitedBy::NoTask));
        // Half is not most.
        assert_eq!(r.awaited_by(2), None);
        assert_eq!(r.awaited_by(3), None);
    }
}
