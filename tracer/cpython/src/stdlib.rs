//! Where a Python file comes from, by its path alone: the standard library (a `lib/pythonX.Y`
//! directory, a frozen module) or an installed package (a `site-packages` or `dist-packages`
//! directory). The census asks it (a standard-library function is a use of a container only its
//! own modules hold); tracer's `place.rs` builds the application/library/package rule on it.

/// A file of the standard library (not a package installed beside it).
pub fn is_stdlib_file(file: &str) -> bool {
    is_stdlib(file) && !is_package(file)
}

pub fn is_package(file: &str) -> bool {
    file.contains("/site-packages/") || file.contains("/dist-packages/")
}

/// `.../lib/python3.12/...`, `.../lib64/python3.9/...`, `<frozen importlib._bootstrap>`.
pub fn is_stdlib(file: &str) -> bool {
    if file.starts_with("<frozen ") {
        return true;
    }
    let mut parts = file.split('/').peekable();
    while let Some(p) = parts.next() {
        if (p == "lib" || p == "lib64") && parts.peek().is_some_and(|n| is_python_dir(n)) {
            return true;
        }
    }
    false
}

/// `python3.12`, `python2.7`, `python3.13t`.
fn is_python_dir(name: &str) -> bool {
    let Some(v) = name.strip_prefix("python") else {
        return false;
    };
    let v = v.trim_end_matches(['t', 'd', 'm']);
    let mut it = v.split('.');
    matches!((it.next(), it.next(), it.next()), (Some(a), Some(b), None)
        if !a.is_empty() && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdlib_and_packages() {
        assert!(is_stdlib_file("/usr/lib/python3.11/json/encoder.py"));
        assert!(is_stdlib_file("/usr/lib64/python3.13t/tempfile.py"));
        assert!(is_stdlib_file("<frozen importlib._bootstrap>"));
        assert!(!is_stdlib_file(
            "/srv/venv/lib/python3.12/site-packages/flask/app.py"
        ));
        assert!(is_package("/usr/lib/python3/dist-packages/requests/api.py"));
        assert!(!is_stdlib("/srv/lib/python-tools/x.py"));
        assert!(!is_stdlib_file("/srv/app/app.py"));
    }
}
