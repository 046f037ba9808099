//! Native frames: stack ids from the kernel, symbolized with blazesym in the target's own files.

use std::collections::HashMap;

use blazesym::symbolize::evict::{self, Evict};
use blazesym::symbolize::source::{Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blaze};
use blazesym::Pid;

use crate::probes::Probes;

pub struct Symbolizer {
    blaze: Blaze,
    /// (pid, stack id) -> frames, root first. Stack ids are never reused while the map lives.
    cache: HashMap<(u32, i32), Vec<String>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Symbolizer {
            blaze: Blaze::new(),
            cache: HashMap::new(),
        }
    }
}

impl Symbolizer {
    /// Frames of a native stack, root first. Symbolized while the process lives; cached after.
    pub fn native(&mut self, probes: &Probes, pid: u32, stack_id: i32) -> Vec<String> {
        if stack_id < 0 {
            return vec![];
        }
        if let Some(f) = self.cache.get(&(pid, stack_id)) {
            return f.clone();
        }
        let Some(ips) = probes.stack(stack_id) else {
            return vec![];
        };
        let src = Source::Process(Process::new(Pid::from(pid)));
        let mut frames: Vec<String> = match self.blaze.symbolize(&src, Input::AbsAddr(&ips)) {
            Ok(syms) => syms.iter().map(label).collect(),
            Err(_) => ips.iter().map(|_| "[unknown]".to_string()).collect(),
        };
        frames.reverse();
        self.cache.insert((pid, stack_id), frames.clone());
        frames
    }

    /// Forgets a process (its addresses mean nothing once it is gone, or once it execs): our
    /// frames and blazesym's memory maps of it.
    pub fn forget(&mut self, pid: u32) {
        self.cache.retain(|(p, _), _| *p != pid);
        let _ = self
            .blaze
            .evict(&Evict::Process(evict::Process::new(Pid::from(pid))));
    }
}

fn label(s: &Symbolized) -> String {
    match s {
        Symbolized::Sym(sym) => sym.name.to_string(),
        Symbolized::Unknown(_) => "[unknown]".to_string(),
    }
}
