//! Decoding tested on recorded memory, without root, BPF or a live interpreter.
//!
//! `write_fixtures` (ignored: it needs root and the test interpreters) runs
//! fixtures/memory/objects.py on every test build, reads the running interpreter through a
//! recording `Memory` the way tracer does (thread states, frames, locals, a suspended coroutine's
//! locals, the uses code objects make of a name, one census pass, the script's strings, dict and
//! list), and saves the pages read with the facts the script printed about itself (object
//! addresses, lengths, the lines it sleeps and waits on) in fixtures/memory/<build>.pages.
//! `replay_fixtures` decodes every fixture again from its pages alone and checks the result
//! against those facts; every build's fixture must be there. Regenerate with
//! `cargo test -p tracer-cpython --release -- --ignored write_fixtures` (root).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::census::{Census, Rules};
use crate::debug_offsets;
use crate::frames::Runtime;
use crate::layouts::{self, Layout};
use crate::mem::recorded::{load_pages, save_pages, Recorder, Replay};
use crate::mem::{self, Memory};
use crate::strings;
use crate::Version;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/memory")
}

/// The builds fixtures are recorded from: (fixture name, interpreter, root file system).
fn builds() -> Vec<(String, String, Option<PathBuf>)> {
    let mut v = Vec::new();
    for minor in 8..=13 {
        let dir = std::fs::read_dir("/root/.pyenv/versions")
            .expect("pyenv's interpreters")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with(&format!("3.{minor}.")))
            .unwrap_or_else(|| panic!("pyenv has no CPython 3.{minor}"));
        v.push((
            format!("pyenv-{dir}"),
            format!("/root/.pyenv/versions/{dir}/bin/python3"),
            None,
        ));
    }
    v.push((
        "debian-bookworm-3.11".into(),
        "/usr/bin/python3.11".into(),
        None,
    ));
    // Debian's newer builds, in the root file systems the end-to-end tests build.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    for (suite, minor) in [("trixie", 13), ("sid", 14), ("sid", 15)] {
        let root = target.join(format!("rootfs-{suite}"));
        if root.join(format!("usr/bin/python3.{minor}")).exists() {
            v.push((
                format!("debian-{suite}-3.{minor}"),
                format!("/usr/bin/python3.{minor}"),
                Some(root),
            ));
        }
    }
    v
}

/// The layout of a recorded interpreter: tracer's table, or (3.13+) the debug table at the
/// start of `_PyRuntime`, read from the recorded memory.
fn layout_of(m: &dyn Memory, version: Version, runtime: u64) -> &'static Layout {
    if version.minor < 13 {
        return layouts::resolve(version.minor, None).unwrap();
    }
    let (groups, _) = debug_offsets::description(version.minor).unwrap();
    let table = m
        .bytes(runtime, debug_offsets::table_len(groups))
        .expect("the debug table");
    let t = debug_offsets::parse(&table, version).unwrap();
    layouts::resolve(version.minor, Some(&t)).unwrap()
}

/// What decoders say about the script's process: the same calls on a live recording and on a
/// replay.
/// `pid` lists the threads of a live process; a replay gives them (`threads`).
fn decode(
    m: Arc<dyn Memory + Send + Sync>,
    meta: &Value,
    pid: u32,
    threads: Option<Vec<(u32, u64)>>,
) -> Value {
    let v = &meta["facts"]["version"];
    let version = Version {
        major: 3,
        minor: v[1].as_u64().unwrap() as u8,
        micro: v[2].as_u64().map(|m| m as u8),
    };
    let at = |k: &str| meta[k].as_u64().unwrap();
    let (runtime, code_type, type_type) = (at("runtime"), at("code_type"), at("type_type"));
    let layout = layout_of(&*m, version, runtime);
    let mut rt = Runtime::with_memory(pid, m.clone(), layout, runtime, code_type);
    if let Some(t) = threads {
        rt.set_threads(t);
    }
    let threads = rt.threads();
    let tstates: Vec<u64> = threads.iter().map(|t| t.1).collect();
    let valid = format!("{:?}", rt.validate());
    // Frames as their labels (what the reports print).
    let stacks: Vec<Vec<String>> = rt
        .stacks(&tstates)
        .iter()
        .map(|s| s.iter().map(|f| f.to_string()).collect())
        .collect();
    let locals: Vec<Value> = rt
        .frame_locals()
        .into_iter()
        .map(|f| {
            json!([
                f.label.to_string(),
                f.locals.iter().map(|l| &l.0).collect::<Vec<_>>()
            ])
        })
        .collect();
    let facts = &meta["facts"];
    let strings: Vec<Option<String>> = facts["strings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| strings::py_string(&*m, layout, s[0].as_u64().unwrap(), 4096))
        .collect();
    let mut census = Census::with_memory(
        pid,
        m.clone(),
        layout,
        runtime,
        type_type,
        Rules::NONE_GROWING,
    );
    census.pass(0.0, Some(&mut rt));
    let text = |a: u64| strings::py_string(&*m, layout, a, 4096);
    let dict: Vec<(Option<String>, Option<String>)> = census
        .decode_dict(facts["dict"]["id"].as_u64().unwrap())
        .into_iter()
        .map(|(k, v)| (text(k), text(v)))
        .collect();
    let list = census.decode_list(facts["list"]["id"].as_u64().unwrap());
    // Reference paths of the containers no short path names.
    let targets: Vec<u64> = facts["paths"]
        .as_array()
        .map(|v| v.iter().filter_map(|p| p[0].as_u64()).collect())
        .unwrap_or_default();
    let paths: Vec<Value> = census
        .reference_paths(&targets, &mut rt)
        .into_iter()
        .map(|(a, n)| json!([a, n]))
        .collect();
    // A suspended coroutine's frame and locals.
    let coro = facts["suspended"]["id"].as_u64().unwrap();
    let suspended: Vec<Value> = rt
        .suspended_locals(&[coro])
        .into_iter()
        .map(|f| {
            json!([
                f.label.to_string(),
                f.locals.iter().map(|l| &l.0).collect::<Vec<_>>()
            ])
        })
        .collect();
    // The uses code objects make of a name, and whether they add to containers.
    let uses = &facts["uses"];
    let labels =
        |v: Vec<crate::frame::Frame>| -> Vec<String> { v.iter().map(|f| f.to_string()).collect() };
    let global_uses: Vec<Vec<String>> = uses["global"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| labels(rt.global_uses(u[0].as_u64().unwrap(), u[1].as_str().unwrap())))
        .collect();
    let attr_uses: Vec<Vec<String>> = uses["attr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| labels(rt.attr_uses(u[0].as_u64().unwrap(), u[1].as_u64().unwrap())))
        .collect();
    let adds: Vec<Option<bool>> = uses["adds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| rt.adds_to_containers(u[0].as_u64().unwrap()))
        .collect();
    // What the census's facts say of one container's uses.
    let census_facts = census.facts();
    let used = census_facts
        .containers
        .iter()
        .find(|c| c.name.as_deref() == uses["census"]["name"].as_str())
        .map(|c| json!({"uses": labels(c.uses.clone()), "readers": labels(c.readers.clone())}));
    let list_item_type = list
        .as_ref()
        .and_then(|l| l.first())
        .and_then(|&i| census.type_name(i));
    json!({
        "threads": threads,
        "valid": valid,
        "stacks": stacks,
        "locals": locals,
        "strings": strings,
        "dict": dict,
        "list": list,
        "list_item_type": list_item_type,
        "census": census.names(),
        "suspended": suspended,
        "global_uses": global_uses,
        "attr_uses": attr_uses,
        "adds": adds,
        "census_uses": used,
        "paths": paths,
        "census_error": census.error,
    })
}

/// Records a fixture per test build (root; the builds of `builds()`). Read-only towards the
/// targets: they are read with process_vm_readv and killed at the end.
#[test]
#[ignore]
fn write_fixtures() {
    let script = dir().join("objects.py");
    for (name, python, root) in builds() {
        let mut cmd = match &root {
            None => {
                let mut c = Command::new(&python);
                c.arg("-S").arg(&script);
                c
            }
            Some(root) => {
                let inside = root.join("tmp/tracer-fixtures");
                std::fs::create_dir_all(&inside).unwrap();
                std::fs::copy(&script, inside.join("objects.py")).unwrap();
                let mut c = Command::new("chroot");
                c.arg(root)
                    .arg(&python)
                    .arg("-S")
                    .arg("/tmp/tracer-fixtures/objects.py");
                c
            }
        };
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let pid = child.id();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let facts: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Let it reach its sleep (the line after the print).
        std::thread::sleep(std::time::Duration::from_secs(1));
        let i = super::inspect_pid(pid).unwrap();
        let bias = i.bias_in(pid).unwrap();
        let meta = json!({
            "build": name,
            "runtime": i.runtime_vaddr.unwrap().wrapping_add(bias),
            "code_type": i.code_type_vaddr.unwrap().wrapping_add(bias),
            "type_type": i.type_type_vaddr.unwrap().wrapping_add(bias),
            "facts": facts,
        });
        let rec = Arc::new(Recorder::new(mem::Process(pid)));
        let live = decode(rec.clone(), &meta, pid, None);
        let _ = child.kill();
        let _ = child.wait();
        // A recording that does not decode right is not saved.
        check(&name, &meta["facts"], &live);
        let mut meta = meta;
        meta["threads"] = live["threads"].clone();
        meta["expected"] = live;
        let pages = rec.pages();
        let path = dir().join(format!("{name}.pages"));
        save_pages(
            File::create(&path).unwrap(),
            &serde_json::to_string_pretty(&meta).unwrap(),
            &pages,
        )
        .unwrap();
        eprintln!(
            "{name}: {} pages, {} bytes written",
            pages.len(),
            std::fs::metadata(&path).unwrap().len()
        );
    }
}

/// Every fixture decodes again from its pages alone to what its script said of itself.
#[test]
fn replay_fixtures() {
    let mut seen = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pages"))
        .collect();
    files.sort();
    for path in files {
        let (meta, pages) = load_pages(File::open(&path).unwrap()).unwrap();
        let meta: Value = serde_json::from_str(&meta).unwrap();
        let name = meta["build"].as_str().unwrap().to_string();
        let threads: Vec<(u32, u64)> = serde_json::from_value(meta["threads"].clone()).unwrap();
        let got = decode(Arc::new(Replay { pages }), &meta, 0, Some(threads));
        check(&name, &meta["facts"], &got);
        // The replay reads what the recording read, and says the same (the census's names
        // aside: which unnamed containers it looks for among equals depends on hash order).
        for (k, v) in meta["expected"].as_object().unwrap() {
            if k != "census" {
                assert_eq!(
                    &got[k], v,
                    "{name}: replay differs from the recording on {k}"
                );
            }
        }
        seen.push(name);
    }
    // Every build's fixture, each once.
    seen.sort();
    let want = [
        "debian-bookworm-3.11",
        "debian-sid-3.14",
        "debian-sid-3.15",
        "debian-trixie-3.13",
        "pyenv-3.10.",
        "pyenv-3.11.",
        "pyenv-3.12.",
        "pyenv-3.13.",
        "pyenv-3.8.",
        "pyenv-3.9.",
    ];
    assert_eq!(seen.len(), want.len(), "fixtures {seen:?}, want {want:?}");
    for (have, want) in seen.iter().zip(want) {
        assert!(
            have.starts_with(want),
            "fixtures {seen:?}: {have} is not {want}"
        );
    }
}

/// The decoded view of the script's process against the facts it printed.
fn check(name: &str, facts: &Value, got: &Value) {
    assert_eq!(got["valid"], "Valid", "{name}: layout check");
    // Strings of every kind: ASCII, Latin-1, UCS2 (Cyrillic), UCS4 (an emoji).
    for (s, decoded) in facts["strings"]
        .as_array()
        .unwrap()
        .iter()
        .zip(got["strings"].as_array().unwrap())
    {
        assert_eq!(decoded, &s[1], "{name}: str at {}", s[0]);
    }
    // The dict: its length and first items (str keys and values, non-ASCII).
    let d = &facts["dict"];
    let items = got["dict"].as_array().unwrap();
    assert_eq!(
        items.len() as u64,
        d["len"].as_u64().unwrap(),
        "{name}: dict"
    );
    for (want, have) in d["items"].as_array().unwrap().iter().zip(items) {
        assert_eq!(have, want, "{name}: dict item");
    }
    // The list: its length and first items (the tuples' addresses).
    let l = &facts["list"];
    let list = got["list"].as_array().expect("the list decodes");
    assert_eq!(
        list.len() as u64,
        l["len"].as_u64().unwrap(),
        "{name}: list"
    );
    assert_eq!(
        &list[..5],
        l["items"].as_array().unwrap().as_slice(),
        "{name}: list items"
    );
    assert_eq!(got["list_item_type"], "tuple", "{name}");
    // The main thread's stack ends in the function that sleeps, at the line it sleeps on.
    let f = &facts["frame"];
    let frame = format!(
        "{} ({}:{})",
        f["function"].as_str().unwrap(),
        f["file"].as_str().unwrap(),
        f["line"]
    );
    let stacks = got["stacks"].as_array().unwrap();
    assert!(
        stacks
            .iter()
            .any(|s| s.as_array().unwrap().last() == Some(&json!(frame))),
        "{name}: no stack ends in {frame}: {stacks:?}"
    );
    // Its local variables.
    assert!(
        got["locals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l[0] == json!(frame) && l[1].as_array().unwrap().contains(&json!("pending"))),
        "{name}: locals of {frame}: {}",
        got["locals"]
    );
    // The census names every global container (a non-Latin-1 name too), the class attribute
    // and the frame's local, with their lengths.
    assert!(
        got["census_error"].is_null(),
        "{name}: {}",
        got["census_error"]
    );
    // The reference paths a back-reference search finds, root first.
    if let Some(want) = facts["paths"].as_array() {
        let have = got["paths"].as_array().unwrap();
        for w in want {
            assert!(have.contains(w), "{name}: no reference path {w}: {have:?}");
        }
    }
    // The suspended coroutine: its frame at the line it waits at, and its local.
    let s = &facts["suspended"];
    assert_eq!(
        got["suspended"],
        json!([[s["frame"], s["locals"]]]),
        "{name}: suspended coroutine"
    );
    // The uses of a name that code objects make (the lines), and which functions add to
    // containers: a store into a subscript, an adding method, or neither (a reader).
    let uses = &facts["uses"];
    for (kind, key) in [("global", "global_uses"), ("attr", "attr_uses")] {
        let want: Vec<&Value> = uses[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| &u[2])
            .collect();
        let have: Vec<&Value> = got[key].as_array().unwrap().iter().collect();
        assert_eq!(have, want, "{name}: {kind} uses");
    }
    let want: Vec<&Value> = uses["adds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| &u[1])
        .collect();
    let have: Vec<&Value> = got["adds"].as_array().unwrap().iter().collect();
    assert_eq!(have, want, "{name}: functions that add to containers");
    // The census's facts: the container's uses (other functions may use it too), the readers
    // among them, and the function that stores into it is not one.
    let (want, have) = (&uses["census"], &got["census_uses"]);
    for k in ["uses", "readers"] {
        for u in want[k].as_array().unwrap() {
            assert!(
                have[k].as_array().is_some_and(|h| h.contains(u)),
                "{name}: the census's {k} of {} lack {u}: {have}",
                want["name"]
            );
        }
    }
    let feeder = &want["uses"][0];
    assert!(
        !have["readers"].as_array().unwrap().contains(feeder),
        "{name}: {feeder} feeds {}, it is not a reader",
        want["name"]
    );
    let names = got["census"].as_array().unwrap();
    let mut wanted: Vec<&Value> = facts["globals"].as_array().unwrap().iter().collect();
    wanted.push(&facts["local"]);
    wanted.push(&facts["suspended"]["container"]);
    for w in wanted {
        assert!(
            names.contains(w),
            "{name}: the census does not name {w}: {names:?}"
        );
    }
}
