//! Native frames: stack ids from the kernel, cut to the frames that can be trusted (see
//! `native`), symbolized with blazesym in the target's own files.

use std::collections::HashMap;

use blazesym::symbolize::evict::{self, Evict};
use blazesym::symbolize::source::{Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blaze};
use blazesym::Pid;

use crate::frame::Frame;
use crate::native::Modules;
use crate::probes::Probes;

pub struct Symbolizer {
    blaze: Blaze,
    /// (pid, stack id) -> frames, root first. Stack ids are never reused while the map lives.
    cache: HashMap<(u32, i32), Vec<Frame>>,
    pub modules: Modules,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Symbolizer {
            blaze: Blaze::new(),
            cache: HashMap::new(),
            modules: Modules::default(),
        }
    }
}

impl Symbolizer {
    /// Frames of a native stack, root first: the trusted part of the kernel's walk, never a
    /// data symbol. Symbolized while the process lives; cached after.
    pub fn native(&mut self, probes: &Probes, pid: u32, stack_id: i32) -> Vec<Frame> {
        if stack_id < 0 {
            return vec![];
        }
        if let Some(f) = self.cache.get(&(pid, stack_id)) {
            return f.clone();
        }
        let Some(mut ips) = probes.stack(stack_id) else {
            return vec![];
        };
        ips.truncate(self.modules.trusted_len(pid, &ips));
        // Deeper frames are return addresses: their call instruction (ip - 1) names the caller
        // even when the call is the last instruction of its function.
        let addrs: Vec<u64> = ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| if i == 0 { ip } else { ip - 1 })
            .collect();
        let src = Source::Process(Process::new(Pid::from(pid)));
        let mut frames = Vec::new();
        match self.blaze.symbolize(&src, Input::AbsAddr(&addrs)) {
            Ok(syms) => {
                for (s, &ip) in syms.iter().zip(&addrs) {
                    match s {
                        Symbolized::Sym(sym) => {
                            // Not a function: the walk went astray here; cut.
                            if self.modules.is_data_symbol(pid, ip, &sym.name) {
                                break;
                            }
                            frames.push(Frame::native(&sym.name));
                        }
                        Symbolized::Unknown(_) => frames.push(Frame::Native { symbol: None }),
                    }
                }
            }
            Err(_) => frames.extend(addrs.iter().map(|_| Frame::Native { symbol: None })),
        }
        frames.reverse();
        self.cache.insert((pid, stack_id), frames.clone());
        frames
    }

    /// Forgets a process (its addresses mean nothing once it is gone, or once it execs): our
    /// frames and blazesym's memory maps of it.
    pub fn forget(&mut self, pid: u32) {
        self.cache.retain(|(p, _), _| *p != pid);
        self.modules.forget(pid);
        let _ = self
            .blaze
            .evict(&Evict::Process(evict::Process::new(Pid::from(pid))));
    }
}
