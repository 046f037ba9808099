//! What a census says, pass after pass: series and facts, judged by nobody here (tracer's report
//! judges and ranks them with its verdict rules).

use super::naming::Root;
use super::{Census, Holder};
use crate::frame::Frame;

/// What the newest items of a growing container are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Holds {
    pub sampled: u64,
    /// Type name and how many of the sampled items have it, most common first.
    pub types: Vec<(String, u64)>,
    /// Mean shallow size of the sampled items (the item itself, not what it refers to).
    pub mean_bytes: f64,
    /// Mean size of each item with what it alone holds (objects only it refers to, the
    /// buffers it owns): what one more item costs.
    pub mean_deep_bytes: f64,
    /// What the sampled items refer to that other objects hold too (interned strings, small
    /// ints, one object in many items), counted once for the sample.
    pub shared_bytes: f64,
}

/// A followed container that was looked for a name (named or not).
#[derive(Debug, Clone)]
pub struct ContainerFacts {
    /// Its address (containers are told apart by it).
    pub addr: u64,
    /// `module.global`, `module.global[key]`, `module.Class.attr`... (None: no name found yet).
    pub name: Option<String>,
    pub type_name: String,
    /// (seconds since tracing began, length) at each pass that saw it.
    pub series: Vec<(f64, u64)>,
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

/// The gc-tracked objects of one type.
#[derive(Debug, Clone)]
pub struct TypeFacts {
    pub name: String,
    /// (seconds since tracing began, objects) at each complete pass since it was first seen.
    pub series: Vec<(f64, u64)>,
    /// Where one of its objects is held (a class whose count the rules judged growing: the
    /// reference path of one of its newest objects, `logging.Logger.manager.loggerDict["u-41"]`).
    pub held_at: Option<String>,
}

/// The pending asyncio tasks of one coroutine function.
#[derive(Debug, Clone)]
pub struct TaskFacts {
    /// The coroutine's function and file, and the line most of its tasks wait at.
    pub coroutine: Frame,
    /// (seconds since tracing began, pending tasks) at each complete pass since first seen.
    pub series: Vec<(f64, u64)>,
    /// What awaits them: the awaiting task's coroutine (where it waits; None: no task awaits
    /// them), with how many, most first (at most 3).
    pub awaited_by: Vec<(Option<Frame>, u64)>,
}

/// Pending asyncio tasks, pass after pass.
#[derive(Debug, Clone)]
pub struct TasksFacts {
    /// (seconds since tracing began, pending tasks) at each complete pass.
    pub series: Vec<(f64, u64)>,
    pub by_coroutine: Vec<TaskFacts>,
}

/// What the census found so far.
#[derive(Debug, Clone)]
pub struct CensusFacts {
    pub passes: u64,
    pub partial: u64,
    pub last_ms: f64,
    /// Objects the last pass walked.
    pub objects: u64,
    /// Python stacks sampled from outside so far.
    pub stack_samples: u64,
    /// (seconds since tracing began, resident bytes) at each pass.
    pub rss: Vec<(f64, u64)>,
    /// Every container looked for a name, in no order.
    pub containers: Vec<ContainerFacts>,
    /// Every type seen, in no order.
    pub types: Vec<TypeFacts>,
    /// asyncio's pending tasks (None: the process has none, and never had).
    pub tasks: Option<TasksFacts>,
    pub error: Option<String>,
}

impl Census {
    /// What the census found so far.
    pub fn facts(&self) -> CensusFacts {
        let containers = self
            .followed
            .iter()
            .filter(|(_, f)| f.name.is_some())
            .map(|((addr, _), f)| ContainerFacts {
                addr: *addr,
                name: f.name.clone().flatten(),
                type_name: f.type_name.clone(),
                series: f.series.clone(),
                holds: f.holds.clone(),
                uses: f.uses.clone().unwrap_or_default(),
                readers: f.readers.clone(),
                stacks: match &f.root {
                    Some(Root::Local(_, stack)) => vec![(stack.clone(), 0)],
                    Some(Root::Global(..)) => self.paths_to(f.uses.as_deref().unwrap_or(&[])),
                    None => Vec::new(),
                },
                root: match f.root {
                    Some(Root::Global(..)) => "global",
                    Some(Root::Local(..)) => "local",
                    None => "unreached",
                },
            })
            .collect();
        let types = self
            .types
            .iter()
            .map(|(name, s)| TypeFacts {
                name: name.clone(),
                series: s.clone(),
                held_at: match self.holders.get(name) {
                    Some(Holder::Named(path)) => Some(path.clone()),
                    _ => None,
                },
            })
            .collect();
        CensusFacts {
            passes: self.passes,
            partial: self.partial,
            last_ms: self.last_ms,
            objects: self.objects,
            stack_samples: self.samples.values().sum(),
            rss: self.rss.clone(),
            containers,
            types,
            tasks: self.tasks_facts(),
            error: self.error.clone(),
        }
    }
}
