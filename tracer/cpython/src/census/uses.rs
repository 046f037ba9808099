//! The code that uses a followed container: the lines that load its global, or the functions
//! that name the attribute holding it (the functions that only read it told apart), and the
//! sampled call paths that reach those lines.

use std::collections::HashMap;

use super::naming::Root;
use super::{Census, MAX_USES};
use crate::frame::Frame;
use crate::frames::Runtime;
use crate::mem::{Memory, Pages};
use crate::stdlib::is_stdlib_file;

impl Census {
    /// The sampled call paths to the lines in `uses` (each cut at the using function, whose
    /// frame shows the line of the use), most seen first.
    pub(super) fn paths_to(&self, uses: &[Frame]) -> Vec<(Vec<Frame>, u64)> {
        let mut paths: HashMap<Vec<Frame>, u64> = HashMap::new();
        for (stack, n) in &self.samples {
            // The innermost frame in a function that uses the container.
            let hit = stack
                .iter()
                .enumerate()
                .rev()
                .find_map(|(i, fr)| uses.iter().find(|u| same_function(u, fr)).map(|u| (i, u)));
            if let Some((i, use_label)) = hit {
                let mut p = stack[..i].to_vec();
                // A use found by function (no line) shows the line the sample ran.
                p.push(match use_label {
                    Frame::Python { line: None, .. } => stack[i].clone(),
                    _ => use_label.clone(),
                });
                *paths.entry(p).or_default() += n;
            }
        }
        let mut v: Vec<(Vec<Frame>, u64)> = paths.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(3);
        v
    }

    /// For each container hanging from a module global: the lines of the functions of that
    /// module that load the global, or, when an attribute below the global holds it
    /// (`logging.Logger.manager.loggerDict`), the functions that name that attribute (those of
    /// the global's module first: `Manager.getLogger`). For a local: the line its frame runs.
    /// Found once.
    pub(super) fn find_uses(&mut self, mem: &Pages, rt: &mut Runtime, functions: &[u64]) {
        let l = self.layout;
        for f in self.followed.values_mut() {
            if f.uses.is_some() {
                continue;
            }
            let (dict, global) = match &f.root {
                Some(Root::Global(d, g)) => (*d, g),
                Some(Root::Local(frame, _)) => {
                    f.uses = Some(vec![frame.clone()]);
                    continue;
                }
                None => continue,
            };
            let mut uses = Vec::new();
            let add = |uses: &mut Vec<Frame>, u: Frame| {
                if !uses.contains(&u) && uses.len() < MAX_USES {
                    uses.push(u);
                }
            };
            let code = |func: u64| mem.u64(func + l.func_code);
            let in_module = |func: u64| mem.u64(func + l.func_globals) == Some(dict);
            match f.attr {
                Some(attr) => {
                    // The standard library's functions are uses only of a container its own
                    // modules hold (a stdlib function that names some `_state` does not use
                    // the app's).
                    let stdlib_root =
                        functions
                            .iter()
                            .filter(|&&func| in_module(func))
                            .any(|&func| {
                                code(func)
                                    .and_then(|c| rt.code_file(c))
                                    .is_some_and(|file| is_stdlib_file(&file))
                            });
                    // The name the code uses: the key of the dict the path ends in (served
                    // as an attribute by a proxy: Starlette's `State`), then the attribute;
                    // the global's module first, then any.
                    'names: for name in f.key.into_iter().chain([attr]) {
                        for own in [true, false] {
                            for &func in functions.iter().filter(|&&func| in_module(func) == own) {
                                let Some(c) = code(func) else { continue };
                                for u in rt.attr_uses(c, name) {
                                    let stdlib = matches!(&u, Frame::Python { file, .. } if is_stdlib_file(file));
                                    if stdlib_root || !stdlib {
                                        if rt.adds_to_containers(c) == Some(false) {
                                            f.readers.push(u.clone());
                                        }
                                        add(&mut uses, u);
                                    }
                                }
                            }
                            if !uses.is_empty() {
                                break 'names;
                            }
                        }
                    }
                }
                None => {
                    for &func in functions.iter().filter(|&&func| in_module(func)) {
                        let Some(c) = code(func) else { continue };
                        for u in rt.global_uses(c, global) {
                            if rt.adds_to_containers(c) == Some(false) {
                                f.readers.push(u.clone());
                            }
                            add(&mut uses, u);
                        }
                    }
                }
            }
            f.uses = Some(uses);
        }
    }
}

/// Are both frames in one Python function (same name, same file; the lines may differ)?
fn same_function(a: &Frame, b: &Frame) -> bool {
    match (a, b) {
        (
            Frame::Python {
                function: fa,
                file: ra,
                ..
            },
            Frame::Python {
                function: fb,
                file: rb,
                ..
            },
        ) => fa == fb && ra == rb,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::census::Rules;
    use crate::layouts::layout_for;

    #[test]
    fn call_paths_to_a_use() {
        let mut c = Census::new(1, layout_for(3, 11).unwrap(), 0, 0, Rules::NONE_GROWING);
        let fr = |s: &str| {
            let (f, rest) = s.split_once(" (").unwrap();
            let (file, line) = rest.trim_end_matches(')').rsplit_once(':').unwrap();
            Frame::python(f, file, line.parse().ok())
        };
        let st = |v: &[&str]| v.iter().map(|s| fr(s)).collect::<Vec<_>>();
        c.add_stacks(vec![
            st(&[
                "<module> (a.py:90)",
                "main (a.py:70)",
                "handle (a.py:28)",
                "dumps (json.py:3)",
            ]),
            st(&["<module> (a.py:90)", "main (a.py:70)", "handle (a.py:27)"]),
            st(&["<module> (a.py:90)", "main (a.py:75)", "other (a.py:40)"]),
        ]);
        c.add_stacks(vec![st(&[
            "<module> (a.py:90)",
            "main (a.py:70)",
            "handle (a.py:27)",
        ])]);
        let p = c.paths_to(&[fr("handle (a.py:28)")]);
        assert_eq!(
            p,
            vec![(
                st(&["<module> (a.py:90)", "main (a.py:70)", "handle (a.py:28)"]),
                3
            )]
        );
        assert!(same_function(&fr("f (x/y.py:3)"), &fr("f (x/y.py:9)")));
    }
}
