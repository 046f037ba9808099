//! What the heap census found, as the reports see it: plain data made by `python::census` and read
//! by the renderers, which never see the census itself.

use crate::frame::Frame;
use crate::verdict::Trend;

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
