//! Reference paths: a real Flask service (Flask from PyPI, in a venv this file makes
//! under target/), driven by a bounded local client (tests/apps/load.py), watched for 40 s. Its
//! leaks hang where no short path from a module reaches them: `logging.getLogger(f"user-{uid}")`
//! grows `logging.Logger.manager.loggerDict` (three steps below the module), and an unbounded
//! `functools.lru_cache` on a method grows a dict held by a C field of the cache's wrapper, a
//! class attribute. The census's back-reference search names both, root first, and says what
//! they hold (only what they hold), finds where one of the growing Logger objects is held
//! (`logging.Logger.manager.loggerDict["user-41"]`), and places each at the application line that feeds it
//! (`user_logger` via logging's `getLogger`; `price`, which calls the cached method); the same
//! service without the leaks has nothing growing.

use std::path::PathBuf;

use tracer_tests::*;

/// A venv with Flask and gunicorn from PyPI for pyenv's 3.`minor` (shared with the other test
/// files that run the apps).
fn venv(minor: u32) -> PathBuf {
    apps::venv("flask", minor)
}

/// flask_app.py with `leaks`, driven on `paths` while tracer watches it for 40 s: the process
/// of report.json, and the summary.
fn watch_app(minor: u32, leaks: &str, paths: &str) -> (Process, String) {
    apps::watch_app(&venv(minor), "flask_app.py", leaks, paths)
}

/// Both leaks named by their reference paths, growing, holding what they hold.
fn leaks_named(minor: u32) {
    let (p, summary) = watch_app(minor, "logger,lru", "/user/{n},/price/item{n}/3");
    let c = p.census();
    assert!(c.error.is_none(), "{c:?}");
    let find = |pred: &dyn Fn(&str) -> bool| {
        c.containers
            .iter()
            .find(|k| pred(&k.name))
            .unwrap_or_else(|| panic!("3.{minor}: not in the census: {c:?}"))
    };
    let loggers = find(&|n| {
        n == "logging.Logger.manager.loggerDict" || n == "logging.root.manager.loggerDict"
    });
    assert_eq!(loggers.verdict, "growing", "3.{minor}: {loggers:?}");
    assert_eq!(loggers.root, "global", "3.{minor}: {loggers:?}");
    assert!(loggers.named, "3.{minor}: {loggers:?}");
    // What it holds: Loggers only (the items read twice, from the container itself).
    let holds = &loggers.holds.as_ref().expect("what it holds").types;
    assert!(
        holds.len() == 1 && holds[0].0 == "Logger",
        "3.{minor}: {loggers:?}"
    );
    // Fed from the application's line that asks for a logger, through logging's own code
    // that names the attribute (`self.loggerDict[name] = rv`): stacks sampled on CPU.
    let fed = loggers.fed_from.as_ref();
    let user_logger = format!(
        "user_logger ({}:{})",
        apps::app("flask_app.py").display(),
        apps::app_line("flask_app.py", "return logging.getLogger(f\"user-")
    );
    assert_eq!(
        fed.map(|f| f.app_frame.as_str()),
        Some(user_logger.as_str()),
        "3.{minor}: {loggers:?}"
    );
    let via = fed.and_then(|f| f.via.as_deref()).unwrap_or_default();
    assert!(
        via.starts_with("getLogger (") && via.contains("logging/__init__.py:"),
        "3.{minor}: {loggers:?}"
    );
    let lru = find(&|n| n.ends_with(".PriceService.quote (functools lru_cache)"));
    // The application's own line calls the cached method: it is the use and the feeding line.
    let price = format!(
        "price ({}:{})",
        apps::app("flask_app.py").display(),
        apps::app_line("flask_app.py", "return service.quote(qty)")
    );
    assert!(lru.uses.contains(&price), "3.{minor}: {lru:?}");
    assert_eq!(
        lru.fed_from.as_ref().map(|f| f.app_frame.as_str()),
        Some(price.as_str()),
        "3.{minor}: {lru:?}"
    );
    let name = &lru.name;
    assert!(
        name == "__main__.PriceService.quote (functools lru_cache)"
            || name == "flask_app.PriceService.quote (functools lru_cache)",
        "3.{minor}: {lru:?}"
    );
    assert_eq!(lru.verdict, "growing", "3.{minor}: {lru:?}");
    assert_eq!(lru.type_name, "dict", "3.{minor}: {lru:?}");
    // What the two caches grow by, from what their items hold (a Logger's attributes, the
    // cached call's key tuple), against what resident memory grows by: most of it, not a
    // tenth (before: a Logger counted as its 16-byte body).
    let bytes_per_min =
        |k: &Container| k.growth_per_min * k.holds.as_ref().expect("holds").mean_deep_bytes;
    let said = bytes_per_min(loggers) + bytes_per_min(lru);
    let rss = c.rss_growth_per_min;
    assert!(
        said > 0.5 * rss && said < 1.5 * rss,
        "3.{minor}: the caches grow by {said:.0} B/min, resident memory by {rss:.0} B/min"
    );
    // The growing Logger type: one of its objects is found where it is held.
    let logger_type = c
        .type_named("Logger")
        .unwrap_or_else(|| panic!("3.{minor}: no Logger type: {c:?}"));
    assert_eq!(logger_type.verdict, "growing", "3.{minor}: {logger_type:?}");
    let held = logger_type.held_at.as_deref().unwrap_or_default();
    assert!(
        held.starts_with("logging.Logger.manager.loggerDict[\"user-")
            || held.starts_with("logging.root.manager.loggerDict[\"user-"),
        "3.{minor}: {logger_type:?}"
    );
    assert!(
        summary.contains(&format!("Logger: one is held at {held}")),
        "{summary}"
    );
    // No container is left named by its address while it grows.
    for k in c.growing() {
        assert!(k.named, "3.{minor}: growing and unnamed: {k:?}");
    }
    assert!(
        summary.contains("Logger.manager.loggerDict")
            || summary.contains("root.manager.loggerDict"),
        "{summary}"
    );
    assert!(
        summary.contains("PriceService.quote (functools lru_cache)"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("fed from {user_logger} via getLogger (")),
        "{summary}"
    );
}

/// The same app and load without the leaks: nothing grows.
fn nothing_growing(minor: u32) {
    let (p, _) = watch_app(minor, "", "/user/{n},/price/item{n}/3");
    assert_nothing_grows(&p, &format!("3.{minor} without the leaks"));
    for k in p.containers() {
        // A name or an address, never a container read from a word that is not an object.
        assert!(k.len < 1 << 32, "3.{minor}: {k:?}");
    }
}

#[test]
fn flask_leaks_named_312() {
    leaks_named(12);
}

#[test]
fn flask_without_leaks_312() {
    nothing_growing(12);
}

#[test]
fn flask_leaks_named_311() {
    leaks_named(11);
}
