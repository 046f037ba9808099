//! The gc's generation lists, found and walked: every object the gc tracks, counted by type,
//! with the length of every list, dict and set, and the modules and functions (naming roots).

use super::types::{Kind, TypeCache};
use super::{Census, Pass, MAX_GENERATORS, MIN_LEN};
use crate::layouts::GcHeads;
use crate::mem::{u64_at, Memory, Pages};

const GENERATIONS: u64 = 3;
/// PyGC_Head: `_gc_next`, then `_gc_prev` (the same in every version here).
const GC_NEXT: u64 = 0;
const GC_PREV: u64 = 8;
/// Low bits of a PyGC_Head link that are flags (3.12+: finalized/collecting in `prev`,
/// unreachable or old-space in `next`). Heads may sit at 4-byte offsets (Debian's 3.13.5).
const LINK_FLAGS: u64 = 3;
/// Objects checked along a candidate gc list before it is trusted.
const HEAD_CHECK_STEPS: usize = 8;
const MAX_OBJECTS: u64 = 20_000_000;

/// The most objects a pass walks: four times the last pass's count (at least a million), so
/// that a walk that left its list cannot run on for seconds (see `walk`).
fn walk_limit(last: u64) -> u64 {
    if last == 0 {
        return MAX_OBJECTS;
    }
    last.saturating_mul(4).clamp(1_000_000, MAX_OBJECTS)
}

impl Census {
    /// The gc's list heads in the target, each checked live: its links are consistent and the
    /// first objects along it have a type whose type is `type` (or a metaclass). A table's fixed
    /// heads are checked the same way; a debug table gives only the gc state, searched.
    fn heads(&self, mem: &Pages) -> Result<Vec<u64>, String> {
        let l = self.layout;
        let interp = || {
            mem.u64(self.runtime + l.runtime_interpreters_head)
                .filter(|&a| a != 0)
                .ok_or("cannot read the interpreter state")
        };
        let candidates: Vec<u64> = match l.gc {
            GcHeads::Fixed { offset, in_runtime } => {
                let base = if in_runtime { self.runtime } else { interp()? } + offset;
                (0..GENERATIONS)
                    .map(|g| base + g * l.gc_generation_size)
                    .collect()
            }
            GcHeads::Search { offset, size } => {
                let base = interp()? + offset;
                (0..size.saturating_sub(l.gc_head_size - 1))
                    .step_by(4)
                    .map(|k| base + k)
                    .collect()
            }
        };
        // A table's heads are where they must be: one caught mid-change by the gc (the youngest
        // generation changes all the time) is read again, fresh, a few times. A searched gc
        // state is scanned again instead, and the scan that validates the most heads is kept
        // (a head caught mid-change would otherwise be missing for the process's life).
        let (tries, scans) = if matches!(l.gc, GcHeads::Fixed { .. }) {
            (5, 1)
        } else {
            (1, 3)
        };
        let fresh = || {
            mem.clear();
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        let mut heads: Vec<u64> = Vec::new();
        for scan in 0..scans {
            if scan > 0 {
                fresh();
            }
            let mut found: Vec<u64> = Vec::new();
            for &c in &candidates {
                if found.last().is_some_and(|&h| c < h + l.gc_head_size) {
                    continue;
                }
                for attempt in 0..tries {
                    if attempt > 0 {
                        fresh();
                    }
                    if self.is_list_head(mem, c).unwrap_or(false) {
                        found.push(c);
                        break;
                    }
                }
            }
            if found.len() > heads.len() {
                heads = found;
            }
        }
        if heads.is_empty() {
            return Err("no gc list head validates in the interpreter's gc state".into());
        }
        Ok(heads)
    }

    /// The gc list heads found now, as offsets from the interpreter state (from `_PyRuntime`
    /// on 3.8), for `tracer doctor`.
    pub fn find_heads(&self) -> Result<Vec<u64>, String> {
        let src = self.mem.clone();
        let mem = Pages::new(&*src);
        let heads = self.heads(&mem)?;
        let base = match self.layout.gc {
            GcHeads::Fixed {
                in_runtime: true, ..
            } => self.runtime,
            _ => mem
                .u64(self.runtime + self.layout.runtime_interpreters_head)
                .unwrap_or(0),
        };
        Ok(heads.iter().map(|h| h.wrapping_sub(base)).collect())
    }

    /// Is there a gc list head (PyGC_Head of a circular list) at `c`?
    fn is_list_head(&self, mem: &Pages, c: u64) -> Option<bool> {
        let l = self.layout;
        let next = mem.u64(c)? & !LINK_FLAGS;
        let prev = mem.u64(c + GC_PREV)? & !LINK_FLAGS;
        if next == c && prev == c {
            return Some(true); // an empty list
        }
        if next < 0x1000 || prev < 0x1000 || next == c || prev == c {
            return Some(false);
        }
        if mem.u64(next + GC_PREV)? & !LINK_FLAGS != c || mem.u64(prev)? & !LINK_FLAGS != c {
            return Some(false);
        }
        let (mut back, mut cur) = (c, next);
        for _ in 0..HEAD_CHECK_STEPS {
            if cur == c {
                break;
            }
            if mem.u64(cur + GC_PREV)? & !LINK_FLAGS != back {
                return Some(false);
            }
            let ty = mem.u64(cur + l.gc_head_size + l.ob_type)?;
            let meta = mem.u64(ty + l.ob_type)?;
            if meta != self.type_type && mem.u64(meta + l.ob_type)? != self.type_type {
                return Some(false);
            }
            back = cur;
            cur = mem.u64(cur)? & !LINK_FLAGS;
        }
        Some(true)
    }

    /// The heads to walk this pass. They are found once (their positions do not change for the
    /// process's life; a table's fixed heads must all validate) and checked again every pass: a
    /// head caught mid-change by the gc is skipped and the pass marked partial, so its counts
    /// are not taken for a drop.
    fn pass_heads(&mut self, mem: &Pages) -> Result<(Vec<u64>, bool), String> {
        if let Some(known) = &self.known_heads {
            let mut ok = Vec::new();
            for &h in known {
                if self.is_list_head(mem, h).unwrap_or(false) {
                    ok.push(h);
                }
            }
            let complete = ok.len() == known.len();
            return Ok((ok, complete));
        }
        let heads = self.heads(mem)?;
        if matches!(self.layout.gc, GcHeads::Fixed { .. }) && heads.len() < GENERATIONS as usize {
            return Err("a gc generation list does not validate".into());
        }
        self.known_heads = Some(heads.clone());
        Ok((heads, true))
    }

    pub(super) fn walk(&mut self, mem: &Pages, types: &mut TypeCache) -> Result<Pass, String> {
        let l = self.layout;
        let (heads, complete) = self.pass_heads(mem)?;
        let mut p = Pass {
            complete,
            ..Default::default()
        };
        let keep_all = !self.searches.is_empty() || self.types_wanted();
        // A walk can leave its list while the gc moves objects (a young generation merged into
        // an old one under it): it then reaches another list's head, which it must not read as
        // an object and go around again (a Django app under load counted 6 million objects of
        // 250,000 in a 10 s pass). It stops there, or at the pass's limit, the pass partial.
        let others: Vec<u64> = self.known_heads.clone().unwrap_or_default();
        let limit = walk_limit(self.objects);
        for head in heads {
            let first = mem
                .u64(head)
                .ok_or("cannot read the gc's generation lists")?;
            let mut prev = head;
            let mut cur = first & !LINK_FLAGS;
            // gc head (next, prev), then the object: refcount, type, and the words after
            // (list ob_size, dict ma_used; set used).
            let mut hdr = [0u8; 48];
            while cur != head {
                if p.objects >= limit || others.contains(&cur) || !mem.read(cur, &mut hdr) {
                    p.complete = false;
                    break;
                }
                if u64_at(&hdr, GC_PREV) & !LINK_FLAGS != prev {
                    // A stale page, or the list changed under the walk: look again, fresh.
                    mem.forget(cur, hdr.len() as u64);
                    if !mem.read(cur, &mut hdr) || u64_at(&hdr, GC_PREV) & !LINK_FLAGS != prev {
                        p.complete = false;
                        break;
                    }
                }
                let obj = cur + l.gc_head_size;
                let ty = u64_at(&hdr, l.gc_head_size + l.ob_type);
                *p.by_type.entry(ty).or_default() += 1;
                if keep_all {
                    p.all.push((obj, ty));
                }
                let at = |off: u64| u64_at(&hdr, l.gc_head_size + off);
                let len = match types.get(mem, ty).map(|t| t.kind()) {
                    Some(Kind::List) => Some(at(l.list_size)),
                    Some(Kind::Dict) => Some(at(l.dict_used)),
                    Some(Kind::Set) => Some(at(l.set_used)),
                    Some(Kind::Module) => {
                        p.modules.push(obj);
                        None
                    }
                    Some(Kind::Function) => {
                        p.functions.push(obj);
                        None
                    }
                    Some(Kind::Generator) => {
                        if p.generators.len() < MAX_GENERATORS {
                            p.generators.push(obj);
                        }
                        None
                    }
                    Some(Kind::Task) => {
                        if p.tasks.len() < super::tasks::MAX_TASKS {
                            p.tasks.push(obj);
                        }
                        None
                    }
                    _ => None,
                };
                if let Some(len) = len.filter(|&n| n < 1 << 40) {
                    if len >= MIN_LEN || self.followed.contains_key(&(obj, ty)) {
                        p.lens.push((obj, ty, len));
                    }
                }
                p.objects += 1;
                prev = cur;
                cur = u64_at(&hdr, GC_NEXT) & !LINK_FLAGS;
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_walks_at_most_four_times_the_last() {
        assert_eq!(walk_limit(0), MAX_OBJECTS);
        assert_eq!(walk_limit(250_000), 1_000_000);
        assert_eq!(walk_limit(2_000_000), 8_000_000);
        assert_eq!(walk_limit(10_000_000), MAX_OBJECTS);
    }
}
