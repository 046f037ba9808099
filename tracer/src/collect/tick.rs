//! The tick: each second, a snapshot of every live target read from the kernel's maps and
//! /proc (allocations by stack, descriptors reconciled with /proc/PID/fd, where the heap grew),
//! the entries of targets that exited or exec'd closed, and the kernel's stack maps collected.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracer_common::FdKey;

use super::targets::Target;
use super::{Collector, Event, BEFORE_EXEC};
use crate::config::Mode;
use crate::frame::{Frame, Marker};
use crate::procfs;
use crate::say;
use crate::snapshot::{AllocGroup, OpenFd, ProcSnapshot, StackKey};
use crate::util::monotonic_ns;

impl Collector {
    /// Takes a snapshot of every live target, closes the entries of targets that have exited
    /// (keeping their last snapshot) or exec'd (see `close_execd`). Returns what happened since
    /// the last call.
    pub fn tick(&mut self) -> Vec<Event> {
        self.probes.flush_log();
        let mut events = Vec::new();
        for i in 0..self.targets.len() {
            if self.targets[i].exited_after.is_some() {
                continue;
            }
            let st = self.probes.pid_stats(self.targets[i].pid);
            if st.execs > self.targets[i].exec.execs_seen {
                let event = self.close_execd(i, &st);
                // A forked child that exec'd before it was ever read (a subprocess) is its new
                // program only: its entry is not kept, and not said.
                let t = &self.targets[i];
                if t.forked_from.is_some() && t.last.is_none() {
                    self.execs.last_mut().unwrap().forked = true;
                    self.targets[i].history.clear();
                    self.targets[i].exec.execd = Some(String::new());
                } else {
                    events.push(event);
                }
            }
        }
        let now = monotonic_ns();
        let min_age = self.min_age.as_nanos() as u64;
        // Exact mode: each live target's outstanding allocations grouped by stack, in one walk
        // of the map (the entries themselves are not kept: a million weigh ~100 MB). What a
        // program left before an exec (older than its successor's birth) is not counted.
        let mut by_pid: HashMap<u32, (u64, HashMap<StackKey, AllocGroup>)> = match self.mode {
            Mode::Exact => self
                .targets
                .iter()
                .filter(|t| t.exited_after.is_none())
                .map(|t| (t.pid, (t.exec.born_ns, HashMap::new())))
                .collect(),
            Mode::Watch => HashMap::new(),
        };
        let alloc_entries = self.probes.for_each_alloc(|k, a| {
            if let Some((born, groups)) = by_pid.get_mut(&k.pid) {
                if a.ts_ns >= *born {
                    add_to_group(groups, (a.ustack, a.pystack), a.size, a.ts_ns, now, min_age);
                }
            }
        });
        let fds = self.probes.fds();
        self.map_entries = (alloc_entries, fds.len() as u64);
        // Where the heaps grew: brk moves and mprotects by stack since attach, mappings by
        // stack while they stay.
        let (grows, mappings) = self.probes.growth();
        let mut grown: HashMap<u32, HashMap<StackKey, (u64, u64)>> = HashMap::new();
        for (k, g) in &grows {
            let e = grown
                .entry(k.pid)
                .or_default()
                .entry((k.ustack, k.pystack))
                .or_default();
            e.0 += g.brk_bytes;
        }
        for (k, m) in &mappings {
            let e = grown
                .entry(k.pid)
                .or_default()
                .entry((m.ustack, m.pystack))
                .or_default();
            e.1 += m.len;
        }
        let mut ended = Vec::new();
        for i in 0..self.targets.len() {
            let pid = self.targets[i].pid;
            if self.targets[i].exited_after.is_some() {
                continue;
            }
            // Gone, a zombie, or its pid already reused by another process; when tracer cannot
            // look (out of descriptors), nothing is decided this tick.
            let liveness = procfs::liveness(pid, self.targets[i].start_ticks);
            if liveness == procfs::Liveness::Unknown {
                continue;
            }
            if liveness == procfs::Liveness::Gone {
                events.push(self.close_exited(i, &fds));
                ended.push(pid);
                continue;
            }
            // Past `-d` (a tick that many processes made long): the rest keep their last
            // snapshot, and their exits are still seen.
            if self.past_deadline() {
                continue;
            }
            if self.mode == Mode::Exact && !self.targets[i].libc {
                let (found, n) = self.probes.give_libc(pid);
                self.targets[i].libc = found;
                self.targets[i].libc_probes += n;
                if n > 0 {
                    say!("tracer: pid {pid}: {n} probes on its C library's malloc family (native allocations)");
                }
            }
            // Stopped by SIGSTOP or a debugger: said when it happens and when it ends.
            let stopped = procfs::stat(pid).is_some_and(|s| matches!(s.state, 'T' | 't'));
            if stopped != self.targets[i].stopped {
                self.targets[i].stopped = stopped;
                if stopped {
                    say!("tracer: WARNING: pid {pid} is stopped (SIGSTOP, or a debugger holds it): nothing it does shows until it runs again");
                } else {
                    say!("tracer: pid {pid} runs again");
                }
            }
            if self.mode == Mode::Watch {
                self.verify_survivors(i);
            }
            let born = self.targets[i].exec.born_ns;
            // Descriptors: drop entries whose descriptor is gone (close_range, exec with CLOEXEC).
            // Unreadable (tracer out of descriptors, or the process just went): the entries
            // stay as they are until the next tick can look.
            let Ok(links) = procfs::fd_targets(pid) else {
                continue;
            };
            let mut open = Vec::new();
            let mut gone = Vec::new();
            for (k, v) in fds.iter().filter(|(k, _)| k.pid == pid) {
                match links.get(&k.fd) {
                    Some(t) => {
                        if now.saturating_sub(v.ts_ns) >= min_age {
                            let mut info = *v;
                            if info.ts_ns < born {
                                // Inherited across the exec: opened by the program before, whose
                                // stacks the new one cannot name.
                                info.ustack = BEFORE_EXEC.0;
                                info.pystack = BEFORE_EXEC.1;
                            }
                            open.push(OpenFd {
                                fd: k.fd,
                                info,
                                target: Some(t.clone()),
                            });
                        }
                    }
                    None => gone.push((k.fd, v.ts_ns)),
                }
            }
            open.sort_by_key(|f| f.fd);
            let mut groups = by_pid.remove(&pid).map(|g| g.1).unwrap_or_default();
            if self.mode == Mode::Watch {
                for s in self.targets[i]
                    .watch
                    .survivors
                    .values()
                    .filter(|s| s.ts_ns >= born)
                {
                    add_to_group(&mut groups, s.stack, s.size, s.ts_ns, now, min_age);
                }
            }
            let mut frames = HashMap::new();
            let grows = grown.remove(&pid).unwrap_or_default();
            let keys: Vec<StackKey> = groups
                .keys()
                .copied()
                .chain(open.iter().map(|f| (f.info.ustack, f.info.pystack)))
                .chain(grows.keys().copied())
                .collect();
            for k in keys {
                if let std::collections::hash_map::Entry::Vacant(e) = frames.entry(k) {
                    let f = if k == BEFORE_EXEC {
                        vec![Frame::Marker(Marker::OpenedBeforeExec)]
                    } else {
                        self.frames_of(i, k)
                    };
                    e.insert(f);
                }
            }
            let stats = self.probes.pid_stats(pid);
            let t = &mut self.targets[i];
            if stats.execs > t.exec.execs_seen {
                // It exec'd while this snapshot was read: the last one from before the exec
                // stays (the next tick closes the entry), and the descriptors the exec closed
                // stay in the kernel's map (they were open at the exec).
                continue;
            }
            // Closed without the kernel seeing it (close_range beyond its first descriptors),
            // at two ticks in a row: an exec closes its CLOEXEC descriptors before the kernel
            // counts the exec (at the syscall's return), and a tick that looked in between took
            // them for closed, so the old program's entry lost the files open at its exec.
            let before = std::mem::take(&mut self.targets[i].gone_fds);
            for (fd, ts) in gone {
                if before.contains(&(fd, ts)) {
                    self.probes.remove_fd(&FdKey { pid, fd }, Some(ts));
                } else {
                    self.targets[i].gone_fds.push((fd, ts));
                }
            }
            let t = &mut self.targets[i];
            if let Some(st) = procfs::stat(pid) {
                t.counters.cpu_ticks_last = st.cpu_ticks;
            }
            t.last = Some(ProcSnapshot {
                allocs: groups,
                fds: open,
                grows,
                stats,
                frames,
            });
        }
        self.probes.remove_targets(&ended);
        self.ticks += 1;
        self.collect_stack_maps();
        // A program replaced by an exec keeps its group until its successor is known
        // (`follow_execs`): the same interpreter again keeps its probes.
        if events.iter().any(|e| matches!(e, Event::Exited(_))) {
            self.retire_groups();
        }
        let (closed, live) = std::mem::take(&mut self.targets)
            .into_iter()
            .partition(|t| t.exited_after.is_some());
        self.targets = live;
        self.closed.extend(
            closed
                .into_iter()
                .filter(|t: &Target| t.exec.execd.as_deref() != Some("")),
        );
        events
    }

    /// Every ten ticks, and at once when stacks were lost, the kernel's stack maps lose what
    /// nothing refers to any more.
    fn collect_stack_maps(&mut self) {
        let lost = {
            let s = self.probes.stats();
            s[tracer_common::stat::PYSTACK_LOST as usize]
                + s[tracer_common::stat::STACK_LOST as usize]
        };
        // A collection reads every map: when stacks keep being lost, one a tick while that is
        // cheap, one every third tick once one took long (many processes in exact mode: 4 s
        // of a 4.6 s tick), and none past `-d`.
        let due = self.ticks >= self.stacks_collected_at + 3
            || self.stacks_collect_cost < Duration::from_millis(200);
        let lost_more = lost > self.stacks_lost_seen && due;
        if (self.ticks.is_multiple_of(10) || lost_more) && !self.past_deadline() && !self.ending {
            let force = lost > self.stacks_lost_seen;
            self.stacks_collected_at = self.ticks;
            let began = Instant::now();
            self.stacks_lost_seen = lost;
            let survivors: Vec<StackKey> = self
                .targets
                .iter()
                .flat_map(|t| t.watch.survivors.values().chain(t.watch.pending.values()))
                .map(|s| s.stack)
                .collect();
            self.probes.collect_stacks(survivors.into_iter(), force);
            self.stacks_collect_cost = began.elapsed();
        }
    }
}

/// Counts an allocation (or a watch window's survivor) in its stack's group, once it is `min_age` old.
fn add_to_group(
    groups: &mut HashMap<StackKey, AllocGroup>,
    stack: StackKey,
    size: u64,
    ts: u64,
    now: u64,
    min_age: u64,
) {
    if now.saturating_sub(ts) < min_age {
        return;
    }
    let g = groups.entry(stack).or_default();
    g.bytes += size;
    g.count += 1;
    if g.oldest_ts == 0 || ts < g.oldest_ts {
        g.oldest_ts = ts;
    }
}
