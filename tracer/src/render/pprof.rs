//! profile.pb.gz: the pprof format (github.com/google/pprof/proto/profile.proto), gzipped.
//!
//! Sample types: inuse_space/bytes, inuse_objects/count, open_fds/count; each stack is one
//! sample with the three values (zero where it does not apply), labelled with the process id
//! and, for a process in a container, the container's short id.
//! Python frames `function (file:LINE)` become functions with their file and line; native
//! frames, functions with a name only. The messages are encoded by prost.

use std::collections::HashMap;
use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::frame::Frame;
use crate::report::Report;

/// The messages of pprof's profile.proto that tracer writes (field numbers as in the .proto),
/// encoded by prost.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
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

/// A frame as pprof sees it: (function, file, line). Python frames with a line have all three;
/// every other frame is a function named by its label.
fn function_file_line(f: &Frame) -> (String, String, i64) {
    match f {
        Frame::Python {
            function,
            file,
            line: Some(line),
        } => (function.clone(), file.clone(), *line as i64),
        f => (f.to_string(), String::new(), 0),
    }
}

pub fn encode(r: &Report) -> Vec<u8> {
    use proto::*;
    let mut s = Strings::default();
    let mut prof = Profile {
        duration_nanos: r.elapsed.as_nanos() as i64,
        ..Default::default()
    };
    for (ty, unit) in [
        ("inuse_space", "bytes"),
        ("inuse_objects", "count"),
        ("open_fds", "count"),
    ] {
        prof.sample_type.push(ValueType {
            r#type: s.id(ty),
            unit: s.id(unit),
        });
    }
    // One function and one location per distinct frame label.
    let mut locations: HashMap<Frame, u64> = HashMap::new();
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
            let location_id: Vec<u64> = frames
                .iter()
                .rev()
                .chain(root.iter().rev())
                .map(|frame| {
                    if let Some(id) = locations.get(frame) {
                        return *id;
                    }
                    let id = locations.len() as u64 + 1;
                    locations.insert(frame.clone(), id);
                    let (name, file, line) = function_file_line(frame);
                    let name = s.id(&name);
                    prof.function.push(Function {
                        id,
                        name,
                        system_name: name,
                        filename: s.id(&file),
                    });
                    prof.location.push(Location {
                        id,
                        line: vec![Line {
                            function_id: id,
                            line,
                        }],
                    });
                    id
                })
                .collect();
            let mut label = vec![Label {
                key: pid_key,
                num: p.pid as i64,
                ..Default::default()
            }];
            if let Some(c) = &p.container {
                label.push(Label {
                    key: container_key,
                    str: s.id(c),
                    ..Default::default()
                });
            }
            prof.sample.push(Sample {
                location_id,
                value: values.iter().map(|&v| v as i64).collect(),
                label,
            });
        }
    }
    prof.string_table = std::mem::take(&mut s.table);
    let bytes = prost::Message::encode_to_vec(&prof);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    let _ = gz.write_all(&bytes);
    gz.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(
            function_file_line(&Frame::python("leak", "/srv/app.py", Some(12))),
            ("leak".into(), "/srv/app.py".into(), 12)
        );
        assert_eq!(
            function_file_line(&Frame::native("_PyObject_Malloc")),
            ("_PyObject_Malloc".into(), String::new(), 0)
        );
    }
}
