//! profile.pb.gz: the pprof format (github.com/google/pprof/proto/profile.proto), gzipped.
//!
//! Sample types: inuse_space/bytes, inuse_objects/count, open_fds/count; each stack is one
//! sample with the three values (zero where it does not apply), labelled with the process id
//! and, for a process in a container, the container's short id.
//! Python frames `function (file:LINE)` become functions with their file and line; native
//! frames, functions with a name only. The protobuf is written by hand: a few message types.

use std::collections::HashMap;
use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::report::Report;

#[derive(Default)]
struct Buf(Vec<u8>);

impl Buf {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(((field as u64) << 3) | wire as u64);
    }
    fn int(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.key(field, 0);
            self.varint(v as u64);
        }
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn packed(&mut self, field: u32, vs: &[u64]) {
        let mut inner = Buf::default();
        for v in vs {
            inner.varint(*v);
        }
        self.bytes(field, &inner.0);
    }
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn id(&mut self, s: &str) -> i64 {
        if self.table.is_empty() {
            self.table.push(String::new());
            self.index.insert(String::new(), 0);
        }
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        self.table.push(s.to_string());
        let i = self.table.len() as i64 - 1;
        self.index.insert(s.to_string(), i);
        i
    }
}

/// "function (path/file.py:LINE)" -> (function, file, line).
pub fn split_frame(f: &str) -> (String, String, i64) {
    if let Some((func, rest)) = f.rsplit_once(" (") {
        if let Some(loc) = rest.strip_suffix(')') {
            if let Some((file, line)) = loc.rsplit_once(':') {
                if let Ok(n) = line.parse::<i64>() {
                    return (func.to_string(), file.to_string(), n);
                }
            }
        }
    }
    (f.to_string(), String::new(), 0)
}

pub fn encode(r: &Report) -> Vec<u8> {
    let mut s = Strings::default();
    let mut prof = Buf::default();
    for (ty, unit) in [
        ("inuse_space", "bytes"),
        ("inuse_objects", "count"),
        ("open_fds", "count"),
    ] {
        let mut vt = Buf::default();
        vt.int(1, s.id(ty));
        vt.int(2, s.id(unit));
        prof.bytes(1, &vt.0);
    }
    // One function and one location per distinct frame label.
    let mut locations: HashMap<String, u64> = HashMap::new();
    let mut funcs = Buf::default();
    let mut locs = Buf::default();
    let mut loc_of = |frame: &str, s: &mut Strings| -> u64 {
        if let Some(id) = locations.get(frame) {
            return *id;
        }
        let id = locations.len() as u64 + 1;
        locations.insert(frame.to_string(), id);
        let (name, file, line) = split_frame(frame);
        let mut f = Buf::default();
        f.int(1, id as i64);
        f.int(2, s.id(&name));
        f.int(3, s.id(&name));
        f.int(4, s.id(&file));
        funcs.bytes(5, &f.0);
        let mut ln = Buf::default();
        ln.int(1, id as i64);
        ln.int(2, line);
        let mut l = Buf::default();
        l.int(1, id as i64);
        l.bytes(4, &ln.0);
        locs.bytes(4, &l.0);
        id
    };
    let pid_key = s.id("pid");
    let container_key = s.id("container");
    for p in &r.procs {
        let root = p.root_frames();
        let stacks = p
            .allocs
            .iter()
            .map(|a| (&a.frames, [a.bytes, a.count, 0]))
            .chain(p.fds.iter().map(|f| (&f.frames, [0, 0, f.count])));
        for (frames, values) in stacks {
            // Leaf first, the process (and container) frames last.
            let ids: Vec<u64> = frames
                .iter()
                .rev()
                .chain(root.iter().rev())
                .map(|f| loc_of(f, &mut s))
                .collect();
            let mut sample = Buf::default();
            sample.packed(1, &ids);
            sample.packed(2, &values);
            let mut label = Buf::default();
            label.int(1, pid_key);
            label.int(3, p.pid as i64);
            sample.bytes(3, &label.0);
            if let Some(c) = &p.container {
                let mut label = Buf::default();
                label.int(1, container_key);
                label.int(2, s.id(c));
                sample.bytes(3, &label.0);
            }
            prof.bytes(2, &sample.0);
        }
    }
    prof.0.extend_from_slice(&locs.0);
    prof.0.extend_from_slice(&funcs.0);
    for st in &s.table {
        prof.bytes(6, st.as_bytes());
    }
    prof.int(10, r.elapsed.as_nanos() as i64);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    let _ = gz.write_all(&prof.0);
    gz.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_frames() {
        let mut b = Buf::default();
        b.varint(300);
        assert_eq!(b.0, vec![0xac, 0x02]);
        assert_eq!(
            split_frame("leak (/srv/app.py:12)"),
            ("leak".into(), "/srv/app.py".into(), 12)
        );
        assert_eq!(
            split_frame("_PyObject_Malloc"),
            ("_PyObject_Malloc".into(), String::new(), 0)
        );
    }
}
