//! Reading a target's interpreter from outside: its runtime found and its layout checked
//! against the live process, then its Python threads published to the kernel (tid ->
//! PyThreadState), which walks their frames at every event.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Collector;
use crate::python;
use crate::python::census::Census;
use crate::python::frames::{self, Check, Runtime};
use crate::say;

/// Reading a target's interpreter from outside.
#[derive(Default)]
pub struct Threads {
    /// The live interpreter, once its runtime is mapped (None when its layout is unknown).
    pub runtime: Option<Runtime>,
    /// Thread ids published to the kernel, with their thread state.
    pub published: HashMap<u32, u64>,
    /// The interpreter cannot be read (its layout is unknown, or fails the live checks): the
    /// one-line warning said at attach and in the summary.
    pub warning: Option<String>,
    /// The layout passed the live checks (`Runtime::validate`); else since when it is pending.
    pub layout_checked: bool,
    pub pending_since: Option<Instant>,
    /// When the thread list may be read again: reading it costs in proportion to the threads
    /// (thousands in some services), and is spaced so that it stays under 5% of a core.
    pub next_refresh: Option<Instant>,
    /// Where the next stack read goes on in a long thread list (see `read_stacks`).
    pub read_cursor: usize,
}

/// How long a layout may stay undecided (a starting interpreter) before it is refused.
const LAYOUT_PENDING_LIMIT: Duration = Duration::from_secs(15);

impl Collector {
    /// Publishes each live target's threads (tid -> PyThreadState) to the kernel. Cheap: a few
    /// reads of target memory per thread; run often so new threads get Python stacks quickly.
    pub fn refresh_threads(&mut self) {
        for i in 0..self.targets.len() {
            self.refresh_target(i);
        }
    }

    /// `refresh_threads` for one target.
    pub(super) fn refresh_target(&mut self, i: usize) {
        {
            let t = &mut self.targets[i];
            if t.exited_after.is_some() {
                return;
            }
            if t.replaced(&self.probes) {
                return; // its memory is another program's now (closed at the next tick)
            }
            let fresh = t.threads.runtime.is_none();
            if fresh {
                if t.threads.warning.is_some() {
                    return;
                }
                let (Some(layout), Some(rt), Some(ct)) = (
                    t.interp.layout(),
                    t.interp.runtime_vaddr,
                    t.interp.code_type_vaddr,
                ) else {
                    return;
                };
                let Some(bias) = t.interp.bias_in(t.pid) else {
                    return;
                };
                let mut runtime =
                    Runtime::new(t.pid, layout, rt.wrapping_add(bias), ct.wrapping_add(bias));
                // The layout is trusted once it reads this process right, or once it read
                // another process of the same file right: then a process that is still
                // starting (a subprocess of a traced service) has its frames from its first
                // line, the kernel reading its interpreter itself (`PyConf::interp_head`),
                // instead of after its interpreter is up and read again here.
                let trusted = self.trusted_files.contains(&t.interp.file_id);
                if !t.threads.layout_checked && !trusted {
                    let mut whole = false;
                    let why = match runtime.validate() {
                        Check::Valid => {
                            whole = true;
                            None
                        }
                        Check::Invalid(why) => Some(why),
                        Check::Pending(why) => {
                            let since = *t.threads.pending_since.get_or_insert_with(Instant::now);
                            if since.elapsed() <= LAYOUT_PENDING_LIMIT {
                                return;
                            }
                            Some(why)
                        }
                        // Starting or finalizing: nothing to check (said in the summary if
                        // it never changes).
                        Check::NotRunning => {
                            t.threads.pending_since.get_or_insert_with(Instant::now);
                            return;
                        }
                        // Threads decode: their frames are checked when one shows; after the
                        // limit (threads that only run native code) the thread check stands.
                        Check::ThreadsOnly => {
                            let since = *t.threads.pending_since.get_or_insert_with(Instant::now);
                            if since.elapsed() <= LAYOUT_PENDING_LIMIT {
                                return;
                            }
                            None
                        }
                    };
                    if let Some(why) = why {
                        let w = python::unreadable_line(
                            &t.interp.version.to_string(),
                            &format!("its layout does not fit the live process ({why})"),
                        );
                        say!("{w}");
                        t.threads.warning = Some(w);
                        return;
                    }
                    // Trusted for others when its frames decoded too.
                    if whole {
                        self.trusted_files.insert(t.interp.file_id);
                    }
                }
                if !t.threads.layout_checked {
                    t.threads.layout_checked = true;
                    let conf = if self.python_walk {
                        runtime.conf()
                    } else {
                        frames::pyconf(layout, t.pid)
                    };
                    let _ = self.probes.set_pyconf(t.pid, conf);
                }
                t.threads.runtime = Some(runtime);
                // Launch mode: the file was not mapped when the target was added.
                if t.watch.type_type.is_none() {
                    t.watch.type_type = t.interp.type_type_vaddr.map(|v| v.wrapping_add(bias));
                }
                if self.census && t.census.is_none() {
                    let type_type = t.watch.type_type.unwrap_or(0);
                    t.census = Some(Census::new(
                        t.pid,
                        layout,
                        rt.wrapping_add(bias),
                        type_type,
                        crate::verdict::census_rules(),
                    ));
                }
            }
            if !fresh && t.threads.next_refresh.is_some_and(|n| Instant::now() < n) {
                return;
            }
            let began = Instant::now();
            let rt = t.threads.runtime.as_mut().unwrap();
            let now: HashMap<u32, u64> = rt.threads().into_iter().collect();
            t.threads.next_refresh =
                Some(began + (began.elapsed() * 20).min(Duration::from_secs(5)));
            if now.is_empty() {
                // Not initialised yet (launch mode): try again next time.
                t.threads.runtime = None;
                return;
            }
            if fresh && self.python_walk {
                // Now that the thread list is known, the kernel can find new threads by itself.
                let _ = self.probes.set_pyconf(t.pid, rt.conf());
            }
            if now != t.threads.published {
                self.probes.set_threads(t.pid, &now);
                t.threads.published = now;
            }
        }
    }
}
