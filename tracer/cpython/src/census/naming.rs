//! Naming containers by how they are reachable: a module's globals (`__main__.CACHE`), one
//! level below them (`app.Registry.items`, `__main__.CACHES['users']`), and the locals of
//! running frames (`serve() local buf`).

use std::collections::{HashMap, HashSet};

use super::objects::Reader;
use super::types::Kind;
use crate::frame::Frame;
use crate::frames::FrameLocals;
use crate::mem::Memory;

/// Values looked into, one level below the modules' globals, when naming.
const MAX_SECOND_LEVEL: usize = 50_000;

/// A name from a module, and the module global it hangs from (module dict, global name).
pub(super) type Named = (String, Root);

/// Where a named container hangs from.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Root {
    /// A module global: (module dict, global name).
    Global(u64, String),
    /// A local variable of a running frame (the line it runs), and the stack down to that
    /// frame, root first.
    Local(Frame, Vec<Frame>),
}

impl Reader<'_> {
    /// How a member is written after its owner's name: `.attr` or `["key"]` (a str key only).
    fn member_label(&mut self, key: u64, dot: bool) -> Option<String> {
        let k = self.string(key)?;
        Some(if dot {
            format!(".{k}")
        } else {
            format!("[{k:?}]")
        })
    }

    /// The references one level below an object, with how to write them after its name.
    fn children(&mut self, obj: u64) -> Vec<(String, u64)> {
        let Some(t) = self.type_of(obj) else {
            return Vec::new();
        };
        if let Some((items, dot)) = self.members(obj, &t) {
            return items
                .into_iter()
                .map(|(k, v)| {
                    let label = self.member_label(k, dot);
                    (label.unwrap_or_else(|| "[...]".to_string()), v)
                })
                .collect();
        }
        match t.kind() {
            Kind::List => self
                .list_items(obj, 4096)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("[{i}]"), v))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Every module's name and globals dict: __main__ first, then the application's modules
    /// before the library's (shorter names first, private names last).
    pub(super) fn module_dicts(&mut self, modules: &[u64]) -> Vec<(String, u64)> {
        let mut mods: Vec<(String, u64)> = modules
            .iter()
            .filter_map(|&m| {
                let l = self.layout;
                let dict = self.mem.u64(m + l.module_dict).filter(|&d| d != 0)?;
                let name = self
                    .mem
                    .u64(m + l.module_name)
                    .and_then(|n| self.string(n))?;
                Some((name, dict))
            })
            .collect();
        mods.sort_by_key(|(n, _)| (n != "__main__", n.starts_with('_'), n.len(), n.clone()));
        mods.dedup_by_key(|m| m.1);
        mods
    }

    /// The lists, dicts and sets that module globals hold, and one step below them (an
    /// object's attributes, a dict's values): ((name, root), object, type, len).
    pub(super) fn module_containers(&mut self, modules: &[u64]) -> Vec<(Named, u64, u64, u64)> {
        let mut out = Vec::new();
        let mut budget = MAX_SECOND_LEVEL;
        let mut looked = HashSet::new();
        for (mname, d) in self.module_dicts(modules) {
            for (k, v) in self.dict_items(d) {
                let Some(k) = self.string(k) else { continue };
                let below = !k.starts_with("__");
                let root = Root::Global(d, k.clone());
                self.held(
                    &format!("{mname}.{k}"),
                    &root,
                    v,
                    below,
                    &mut budget,
                    &mut looked,
                    &mut out,
                );
            }
        }
        out
    }

    /// The same for the locals of running frames: `function() local name`.
    pub(super) fn local_containers(
        &mut self,
        frames: &[FrameLocals],
    ) -> Vec<(Named, u64, u64, u64)> {
        let mut out = Vec::new();
        let mut budget = MAX_SECOND_LEVEL;
        let mut looked = HashSet::new();
        for f in frames {
            let root = Root::Local(f.label.clone(), f.stack.clone());
            for (name, v) in &f.locals {
                let label = f.local_label(name);
                self.held(&label, &root, *v, true, &mut budget, &mut looked, &mut out);
            }
        }
        out
    }

    /// `v`, named `label`, if it is a container; and, with `below`, the containers its
    /// attributes or values hold.
    #[allow(clippy::too_many_arguments)]
    fn held(
        &mut self,
        label: &str,
        root: &Root,
        v: u64,
        below: bool,
        budget: &mut usize,
        looked: &mut HashSet<u64>,
        out: &mut Vec<(Named, u64, u64, u64)>,
    ) {
        let Some(t) = self.type_of(v) else { return };
        let kind = t.kind();
        let ty = self.mem.u64(v + self.layout.ob_type).unwrap_or(0);
        if let Some(len) = self.len_of(v, kind) {
            out.push(((label.to_string(), root.clone()), v, ty, len));
        }
        // One level below: containers held by an object's attributes or a dict's values. (The
        // walk finds the tracked ones; a dict of strings is not tracked.)
        if !below || !matches!(kind, Kind::Dict | Kind::Other) || *budget == 0 || !looked.insert(v)
        {
            return;
        }
        let Some((items, dot)) = self.members(v, &t) else {
            return;
        };
        for (ck, c) in items.into_iter().take(*budget) {
            *budget -= 1;
            let Some(ct) = self.type_of(c) else { continue };
            let Some(clen) = self.len_of(c, ct.kind()) else {
                continue;
            };
            let Some(suffix) = self.member_label(ck, dot) else {
                continue;
            };
            let name = format!("{label}{suffix}");
            let cty = self.mem.u64(c + self.layout.ob_type).unwrap_or(0);
            out.push(((name, root.clone()), c, cty, clen));
        }
    }

    /// Names the `wanted` objects by a path from a module's globals (two levels at most):
    /// `module.global`, then `module.global[key]`, `module.Class.attr`, `module.obj.attr`.
    /// Returns each found object's name and the module global it hangs from.
    pub(super) fn name_all(
        &mut self,
        modules: &[u64],
        wanted: &HashSet<u64>,
    ) -> HashMap<u64, Named> {
        let mods = self.module_dicts(modules);
        let mut found: HashMap<u64, Named> = HashMap::new();
        let mut below = Vec::new();
        for (mname, d) in &mods {
            for (k, v) in self.dict_items(*d) {
                let Some(k) = self.string(k) else { continue };
                let label = format!("{mname}.{k}");
                if wanted.contains(&v) {
                    found.entry(v).or_insert((label, Root::Global(*d, k)));
                } else if below.len() < MAX_SECOND_LEVEL && !k.starts_with("__") {
                    below.push((label, Root::Global(*d, k), v));
                }
            }
        }
        let mut looked = HashSet::new();
        for (label, root, v) in below {
            if found.len() == wanted.len() {
                break;
            }
            if !looked.insert(v) {
                continue;
            }
            for (suffix, c) in self.children(v) {
                if wanted.contains(&c) {
                    found
                        .entry(c)
                        .or_insert_with(|| (format!("{label}{suffix}"), root.clone()));
                }
            }
        }
        found
    }
}
