//! Which followed containers get a name and a description of what they hold (the rules' first),
//! which get a back-reference search (unnamed suspects), and which growing classes get a search
//! for where one of their objects is held.

use std::collections::{HashMap, HashSet};

use super::backref::{self, Roots};
use super::objects::Reader;
use super::types::TypeCache;
use super::{Census, Holder, Pass, DESCRIBED, TYPE_SEARCHES};
use crate::frames::FrameLocals;
use crate::mem::Pages;

impl Census {
    /// The growing containers, and the largest others, get a name and a description of what they
    /// hold (once: a name is kept for the container's life).
    pub(super) fn describe(&mut self, mem: &Pages, types: &mut TypeCache, modules: &[u64]) {
        let keys: Vec<(u64, u64)> = self.followed.keys().copied().collect();
        let series: Vec<&[(f64, u64)]> = keys
            .iter()
            .map(|k| self.followed[k].series.as_slice())
            .collect();
        let wanted: Vec<((u64, u64), bool)> = (self.rules.rank)(&series)
            .into_iter()
            .take(DESCRIBED)
            .map(|(i, grow)| (keys[i], grow))
            .collect();
        let unnamed: HashSet<u64> = wanted
            .iter()
            .filter(|(k, _)| self.followed[k].name.is_none())
            .map(|(k, _)| k.0)
            .collect();
        let names = if unnamed.is_empty() {
            HashMap::new()
        } else {
            let mut r = Reader {
                mem,
                types,
                layout: self.layout,
            };
            r.name_all(modules, &unnamed)
        };
        for (k, grow) in wanted {
            let f = self.followed.get_mut(&k).unwrap();
            if f.name.is_none() {
                let n = names.get(&k.0).cloned();
                f.root = n.as_ref().map(|n| n.1.clone());
                f.name = Some(n.map(|n| n.0));
            }
            if grow || f.holds.is_none() {
                let mut r = Reader {
                    mem,
                    types,
                    layout: self.layout,
                };
                let len = f.series.last().map(|p| p.1).unwrap_or(0);
                if let Some(h) = r.holds(k.0, f.kind, len) {
                    f.holds = Some(h);
                }
            }
        }
    }

    /// Reference paths for the growing containers no short path names: searches start for them
    /// (seen by the next pass's walk) and go on within `backref::BUDGET` per pass; a path
    /// found, and read again, names its container.
    pub(super) fn search(
        &mut self,
        mem: &Pages,
        types: &mut TypeCache,
        pass: &Pass,
        frames: &[FrameLocals],
    ) {
        let followed = &self.followed;
        let holders = &self.holders;
        self.searches.retain(|a| {
            followed
                .iter()
                .any(|(k, f)| k.0 == a && matches!(f.name, Some(None)))
                || holders.values().any(|h| *h == Holder::Searching(a))
        });
        // A type's search that ended without a name (given up, or its object gone).
        for h in self.holders.values_mut() {
            if let Holder::Searching(a) = h {
                if !self.searches.has(*a) {
                    *h = Holder::NotFound;
                }
            }
        }
        let mut r = Reader {
            mem,
            types,
            layout: self.layout,
        };
        if !self.searches.is_empty() && !pass.all.is_empty() {
            let roots = Roots::new(&mut r, &pass.modules, frames);
            for found in self
                .searches
                .run(&mut r, &pass.all, &roots, backref::BUDGET)
            {
                for h in self.holders.values_mut() {
                    if *h == Holder::Searching(found.target) {
                        *h = Holder::Named(found.name.clone());
                    }
                }
                for (k, f) in self.followed.iter_mut() {
                    if k.0 == found.target {
                        f.name = Some(Some(found.name.clone()));
                        f.root = Some(found.root.clone());
                        f.attr = found.attr;
                        f.key = found.key;
                        f.uses = None;
                    }
                }
            }
        }
        // Unnamed containers that grow (or rose at each of the last passes) are searched for.
        for (k, f) in &self.followed {
            if !matches!(f.name, Some(None)) || self.searches.has(k.0) {
                continue;
            }
            if (self.rules.suspect)(&f.series) {
                self.searches.want(k.0);
            }
        }
        self.search_types(types, mem, pass);
    }

    /// Does the next pass pick an object of a growing type (and so keep every object)?
    pub(super) fn types_wanted(&self) -> bool {
        self.holders.values().any(|h| *h == Holder::Wanted)
    }

    /// Growing classes get a search for where one of their newest objects is held: wanted at
    /// one pass, the object picked from the next pass's objects (the last one walked of that
    /// type), searched for after the containers' searches.
    fn search_types(&mut self, types: &mut TypeCache, mem: &Pages, pass: &Pass) {
        let searching = self
            .holders
            .values()
            .filter(|h| matches!(h, Holder::Wanted | Holder::Searching(_)))
            .count();
        let mut growing: Vec<&String> = self
            .types
            .iter()
            .filter(|(name, s)| {
                !self.holders.contains_key(*name)
                    && self.classes.contains(*name)
                    && (self.rules.objects_growing)(s)
            })
            .map(|(name, _)| name)
            .collect();
        growing.sort();
        growing.truncate(TYPE_SEARCHES.saturating_sub(searching));
        let wanted: Vec<String> = growing.into_iter().cloned().collect();
        // Objects picked for the types wanted at the last pass: their type objects (a few),
        // then the last object walked of each.
        if !pass.all.is_empty() {
            let wanted_types: HashMap<u64, String> = pass
                .by_type
                .keys()
                .filter_map(|&ty| Some((ty, types.get(mem, ty)?.name)))
                .filter(|(_, name)| self.holders.get(name) == Some(&Holder::Wanted))
                .collect();
            let mut last: HashMap<u64, u64> = HashMap::new();
            for &(obj, ty) in &pass.all {
                if wanted_types.contains_key(&ty) {
                    last.insert(ty, obj);
                }
            }
            let picked: HashMap<&String, u64> = last
                .iter()
                .map(|(ty, &obj)| (&wanted_types[ty], obj))
                .collect();
            for (name, h) in self.holders.iter_mut() {
                if *h != Holder::Wanted {
                    continue;
                }
                match picked.get(name) {
                    Some(&obj) => {
                        self.searches.want(obj);
                        if self.searches.has(obj) {
                            *h = Holder::Searching(obj);
                        }
                    }
                    None => *h = Holder::NotFound,
                }
            }
        }
        for name in wanted {
            self.holders.insert(name, Holder::Wanted);
        }
    }

    /// Time the last pass's back-reference search took (ms) and the objects it scanned.
    pub fn search_cost(&self) -> (f64, u64) {
        (self.searches.last_ms, self.searches.last_scanned)
    }
}
