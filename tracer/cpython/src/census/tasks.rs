//! asyncio tasks over time: at each pass, the pending tasks of the process grouped by their
//! coroutine (its function and the line it waits at). A task is an `_asyncio.Task` the gc
//! tracks; its coroutine is the field that points to a `coroutine` object (found by type, so no
//! per-version offset of the C struct is needed); a task is pending while its coroutine has not
//! finished. Tasks of the pure-Python `asyncio.Task` (no C accelerator) are not counted.

use std::collections::HashMap;

use super::objects::Reader;
use super::{Census, TaskFacts, TasksFacts};
use crate::frame::Frame;
use crate::frames::Runtime;
use crate::mem::{u64_at, Memory};

/// Tasks read per pass.
pub(super) const MAX_TASKS: usize = 100_000;
/// Coroutine functions followed.
const MAX_GROUPS: usize = 1_000;
/// Bytes of a task object searched for its coroutine.
const TASK_SPAN: u64 = 320;

/// The pending tasks of one coroutine function, pass after pass.
#[derive(Debug, Default)]
pub(super) struct TaskSeries {
    pub(super) series: Vec<(f64, u64)>,
    /// The line most of them wait at, at the last pass.
    pub(super) waits_at: Option<i32>,
    /// What awaits them at the last pass: the awaiting task's coroutine (None: no task), with
    /// how many, most first.
    pub(super) awaited_by: Vec<(Option<Frame>, u64)>,
}

impl Census {
    /// Counts the pending tasks among `tasks` (one complete pass's) by coroutine.
    pub(super) fn count_tasks(&mut self, r: &mut Reader, tasks: &[u64], rt: &mut Runtime, at: f64) {
        let mut groups: HashMap<(String, String), HashMap<Option<i32>, u64>> = HashMap::new();
        let mut waiting: HashMap<u64, Frame> = HashMap::new();
        for &task in tasks {
            let Some(coro) = self.coroutine_of(r, task) else {
                continue;
            };
            let Some(label) = rt.suspended_at(coro) else {
                continue; // finished: the task is done (or about to be)
            };
            if let Frame::Python {
                function,
                file,
                line,
            } = &label
            {
                *groups
                    .entry((function.clone(), file.clone()))
                    .or_default()
                    .entry(*line)
                    .or_default() += 1;
            }
            waiting.insert(task, label);
        }
        let pending = waiting.len() as u64;
        // What awaits each pending task: the task whose wake-up its callbacks hold.
        let mut awaiters: HashMap<(String, String), HashMap<Option<Frame>, u64>> = HashMap::new();
        for (&task, label) in &waiting {
            let Frame::Python { function, file, .. } = label else {
                continue;
            };
            let by = self
                .awaiter_of(r, task, &waiting)
                .and_then(|a| waiting.get(&a).cloned());
            *awaiters
                .entry((function.clone(), file.clone()))
                .or_default()
                .entry(by)
                .or_default() += 1;
        }
        if pending == 0 && self.tasks.is_empty() && tasks.is_empty() {
            return; // not an asyncio program (yet)
        }
        self.tasks_total.push((at, pending));
        for (key, s) in self.tasks.iter_mut() {
            let n = groups.get(key).map_or(0, |g| g.values().sum());
            s.series.push((at, n));
        }
        for (key, lines) in groups {
            let waits_at = lines
                .iter()
                .max_by_key(|(l, n)| (**n, **l))
                .and_then(|x| *x.0);
            let n = lines.values().sum();
            if !self.tasks.contains_key(&key) && self.tasks.len() >= MAX_GROUPS {
                continue;
            }
            let mut by: Vec<(Option<Frame>, u64)> = awaiters
                .remove(&key)
                .unwrap_or_default()
                .into_iter()
                .collect();
            by.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            by.truncate(3);
            let s = self.tasks.entry(key).or_default();
            s.waits_at = waits_at;
            s.awaited_by = by;
            if s.series.last().is_none_or(|p| p.0 != at) {
                s.series.push((at, n));
            }
        }
    }

    /// The pending tasks so far (None: the process has none, and never had).
    pub(super) fn tasks_facts(&self) -> Option<TasksFacts> {
        self.tasks_total.last()?;
        let by_coroutine = self
            .tasks
            .iter()
            .map(|((function, file), s)| TaskFacts {
                coroutine: Frame::python(function, file, s.waits_at),
                series: s.series.clone(),
                awaited_by: s.awaited_by.clone(),
            })
            .collect();
        Some(TasksFacts {
            series: self.tasks_total.clone(),
            by_coroutine,
        })
    }

    /// The pending task that awaits `task`: its callbacks hold that task's wake-up (a method
    /// bound to it: 3.12+'s `builtin_function_or_method`, 3.8-3.11's `TaskWakeupMethWrapper`),
    /// found by type, as the coroutine is. Only the first callback is read.
    fn awaiter_of(
        &mut self,
        r: &mut Reader,
        task: u64,
        pending: &HashMap<u64, Frame>,
    ) -> Option<u64> {
        let (head, span) = task_head(r, task)?;
        let header = r.layout.object_header;
        for off in (header..span - 7).step_by(8) {
            let p = u64_at(&head, off);
            if p <= 4096 || !p.is_multiple_of(8) || Some(off) == self.task_coro_offset {
                continue;
            }
            let wakeup = r.type_of(p).is_some_and(|t| {
                t.name == "builtin_function_or_method" || t.name == "TaskWakeupMethWrapper"
            });
            if !wakeup {
                continue;
            }
            let mut m = [0u8; 32];
            if !r.mem.read(p + header, &mut m) {
                continue;
            }
            // The first fields after its header: TaskWakeupMethWrapper's task, or a bound
            // builtin's method definition then `m_self`.
            for k in [0usize, 8] {
                let q = u64_at(&m, k);
                if q != task && pending.contains_key(&q) {
                    return Some(q);
                }
            }
        }
        None
    }

    /// The coroutine a task runs: the first field of the task that points to a coroutine
    /// (the offset found first is tried first).
    fn coroutine_of(&mut self, r: &mut Reader, task: u64) -> Option<u64> {
        let (head, span) = task_head(r, task)?;
        let is_coro = |r: &mut Reader, p: u64| {
            p > 4096 && p.is_multiple_of(8) && r.type_of(p).is_some_and(|t| t.name == "coroutine")
        };
        if let Some(off) = self.task_coro_offset.filter(|&o| o + 8 <= span) {
            let p = u64_at(&head, off);
            if is_coro(r, p) {
                return Some(p);
            }
        }
        // After the object header (reference count, type).
        for off in (r.layout.object_header..span - 7).step_by(8) {
            let p = u64_at(&head, off);
            if is_coro(r, p) {
                self.task_coro_offset = Some(off);
                return Some(p);
            }
        }
        None
    }
}

/// The words of a task object searched for its coroutine and its awaiter: (bytes, length).
fn task_head(r: &mut Reader, task: u64) -> Option<(Vec<u8>, u64)> {
    let span = r.type_of(task)?.basicsize.clamp(24, TASK_SPAN);
    let mut head = vec![0u8; span as usize];
    r.mem.read(task, &mut head).then_some((head, span))
}
