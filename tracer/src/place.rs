//! Where a Python frame's code comes from: the application, the standard library, or an installed
//! package. Suspects are placed at the application's line ("where in your code") with the library
//! frames beneath it ("which allocation"): a leak fed by `logging.getLogger` is the user's call to
//! it, not `logging/__init__.py`.
//!
//! The default rule reads the file path alone: a path inside a `site-packages` or `dist-packages`
//! directory is a package, a path inside a `lib/pythonX.Y` directory (or a frozen module) is the
//! standard library, everything else is the application. `--app-path DIR` (repeatable) replaces it:
//! only files under those directories are the application.

use crate::python::stdlib::{is_package, is_stdlib};

/// The origin of a frame's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    App,
    Stdlib,
    Package,
}

/// How frames are classified: by the default rule, or by the user's application directories.
#[derive(Debug, Clone, Default)]
pub struct AppPaths {
    dirs: Vec<String>,
}

impl AppPaths {
    /// `dirs`: the `--app-path` values (empty: the default rule). A trailing `/` is implied.
    pub fn new(dirs: &[String]) -> AppPaths {
        AppPaths {
            dirs: dirs
                .iter()
                .map(|d| {
                    let d = d.trim_end_matches('/');
                    format!("{d}/")
                })
                .collect(),
        }
    }

    pub fn origin(&self, file: &str) -> Origin {
        if !self.dirs.is_empty() {
            return if self.dirs.iter().any(|d| file.starts_with(d.as_str())) {
                Origin::App
            } else if is_package(file) {
                Origin::Package
            } else {
                Origin::Stdlib
            };
        }
        if is_package(file) {
            Origin::Package
        } else if is_stdlib(file) {
            Origin::Stdlib
        } else {
            Origin::App
        }
    }

    pub fn is_app(&self, file: &str) -> bool {
        self.origin(file) == Origin::App
    }
}

/// Of a stack of files (root first), the index of the innermost application frame.
pub fn innermost_app<'a>(
    paths: &AppPaths,
    files: impl DoubleEndedIterator<Item = Option<&'a str>> + ExactSizeIterator,
) -> Option<usize> {
    let n = files.len();
    files
        .rev()
        .position(|f| f.is_some_and(|f| paths.is_app(f)))
        .map(|i| n - 1 - i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rule() {
        let p = AppPaths::default();
        assert_eq!(
            p.origin("/root/.pyenv/versions/3.12.1/lib/python3.12/logging/__init__.py"),
            Origin::Stdlib
        );
        assert_eq!(
            p.origin("/usr/lib/python3.11/json/encoder.py"),
            Origin::Stdlib
        );
        assert_eq!(p.origin("/usr/lib64/python3.9/tempfile.py"), Origin::Stdlib);
        assert_eq!(p.origin("<frozen importlib._bootstrap>"), Origin::Stdlib);
        assert_eq!(
            p.origin("/srv/venv/lib/python3.12/site-packages/flask/app.py"),
            Origin::Package
        );
        assert_eq!(
            p.origin("/usr/lib/python3/dist-packages/requests/api.py"),
            Origin::Package
        );
        assert_eq!(p.origin("/srv/app/app.py"), Origin::App);
        assert_eq!(p.origin("app.py"), Origin::App);
        assert_eq!(p.origin("/srv/lib/python-tools/x.py"), Origin::App);
        assert_eq!(p.origin("<string>"), Origin::App);
    }

    #[test]
    fn app_paths_replace_the_rule() {
        let p = AppPaths::new(&["/srv/app/".into(), "/opt/svc".into()]);
        assert!(p.is_app("/srv/app/views.py"));
        assert!(p.is_app("/opt/svc/main.py"));
        assert!(!p.is_app("/opt/svc2/main.py"));
        assert!(!p.is_app("/srv/other.py"));
        assert_eq!(
            p.origin("/srv/venv/lib/python3.12/site-packages/flask/app.py"),
            Origin::Package
        );
    }

    #[test]
    fn innermost_application_frame() {
        let p = AppPaths::default();
        let stack = [
            Some("/srv/app/main.py"),
            Some("/srv/venv/lib/python3.12/site-packages/flask/app.py"),
            Some("/srv/app/app.py"),
            Some("/usr/lib/python3.12/logging/__init__.py"),
            None,
        ];
        assert_eq!(innermost_app(&p, stack.iter().copied()), Some(2));
        let lib_only = [Some("/usr/lib/python3.12/json/encoder.py"), None];
        assert_eq!(innermost_app(&p, lib_only.iter().copied()), None);
    }
}
