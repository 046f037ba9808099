//! What the report reads in the heap census's findings: where the application feeds each
//! container.

use super::suspects::source_file;
use super::{census, AppPaths};
use crate::frame::Frame;
use crate::place::innermost_app;

/// Where the code that grows a census container sits in the application: of the sampled stacks
/// through its uses (most seen first), the first one with an application frame gives that frame
/// and, when the use itself is below it (in a library), the use.
/// A library use that only reads the container (see `ContainerReport::readers`) does not
/// feed it: its stacks are not where the container grows.
pub fn fed_from(k: &census::ContainerReport, paths: &AppPaths) -> Option<(Frame, Option<Frame>)> {
    k.stacks.iter().find_map(|(stack, _)| {
        let i = innermost_app(paths, stack.iter().map(source_file))?;
        let below = stack[i + 1..].iter().rev().find(|f| f.is_python()).cloned();
        if below
            .as_ref()
            .is_some_and(|b| k.readers.iter().any(|r| same_code(r, b)))
        {
            return None;
        }
        Some((stack[i].clone(), below))
    })
}

/// Two frames of the same function (their lines may differ).
fn same_code(a: &Frame, b: &Frame) -> bool {
    match (a, b) {
        (
            Frame::Python {
                function: fa,
                file: la,
                ..
            },
            Frame::Python {
                function: fb,
                file: lb,
                ..
            },
        ) => fa == fb && la == lb,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Trend, Verdict};

    const APP: &str = "/srv/app/app.py";
    const LOGGING: &str = "/usr/lib/python3.12/logging/__init__.py";
    const FLASK: &str = "/srv/venv/lib/python3.12/site-packages/flask/app.py";

    fn py(f: &str, file: &str, line: i32) -> Frame {
        Frame::python(f, file, Some(line))
    }

    /// The logger leak's stacks: Flask, the app's `user`, then logging's lines.
    fn logger_stack(leaf: Frame) -> Vec<Frame> {
        vec![
            py("dispatch_request", FLASK, 880),
            py("user", APP, 9),
            py("getLogger", LOGGING, 2150),
            leaf,
        ]
    }

    #[test]
    fn census_containers_fed_from_the_application() {
        let k = census::ContainerReport {
            name: "logging.Logger.manager.loggerDict".into(),
            named: true,
            type_name: "dict".into(),
            len: 10,
            trend: Trend {
                verdict: Verdict::Growing,
                per_min: 1.0,
                gained: 1.0,
            },
            holds: None,
            root: "global",
            uses: vec![py("getLogger", LOGGING, 1403)],
            readers: vec![],
            stacks: vec![
                (
                    vec![
                        py("_bootstrap", "<frozen x>", 1),
                        py("__init__", "__init__", 3),
                        py("getLogger", LOGGING, 1403),
                    ],
                    9,
                ),
                (logger_stack(py("getLogger", LOGGING, 1403)), 5),
            ],
        };
        let paths = AppPaths::default();
        assert_eq!(
            fed_from(&k, &paths),
            Some((py("user", APP, 9), Some(py("getLogger", LOGGING, 1403))))
        );
        let own = census::ContainerReport {
            stacks: vec![(vec![py("leak", APP, 3)], 2)],
            ..k.clone()
        };
        assert_eq!(fed_from(&own, &paths), Some((py("leak", APP, 3), None)));
        // A library function that only reads it (asyncio.all_tasks iterating the task
        // registry) does not feed it, whichever app frame called it: no line.
        let read = census::ContainerReport {
            readers: vec![py("getLogger", LOGGING, 1400)],
            ..k.clone()
        };
        assert_eq!(fed_from(&read, &paths), None);
        let none = census::ContainerReport {
            stacks: vec![],
            ..k
        };
        assert_eq!(fed_from(&none, &paths), None);
    }
}
