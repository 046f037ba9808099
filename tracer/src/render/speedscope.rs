//! speedscope.json (https://www.speedscope.app/file-format-schema.json): one "sampled" profile
//! per process and weight (outstanding bytes, outstanding allocations, open descriptors), frames
//! root first, sharing one frame table.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::frame::Frame;
use crate::report::Report;

struct Frames {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Frames {
    fn id(&mut self, name: &str) -> usize {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), self.names.len() - 1);
        self.names.len() - 1
    }
}

fn profile(
    frames: &mut Frames,
    name: String,
    unit: &str,
    root: &[Frame],
    stacks: impl Iterator<Item = (Vec<Frame>, u64)>,
) -> Option<Value> {
    let mut samples = Vec::new();
    let mut weights = Vec::new();
    for (stack, w) in stacks.filter(|(_, w)| *w > 0) {
        let mut ids: Vec<usize> = root.iter().map(|r| frames.id(&r.to_string())).collect();
        ids.extend(stack.iter().map(|f| frames.id(&f.to_string())));
        samples.push(ids);
        weights.push(w);
    }
    if samples.is_empty() {
        return None;
    }
    let total: u64 = weights.iter().sum();
    Some(json!({
        "type": "sampled",
        "name": name,
        "unit": unit,
        "startValue": 0,
        "endValue": total,
        "samples": samples,
        "weights": weights,
    }))
}

pub fn render(r: &Report) -> String {
    let mut frames = Frames {
        names: Vec::new(),
        index: HashMap::new(),
    };
    let mut profiles = Vec::new();
    for p in &r.procs {
        let root = p.root_frames();
        let title = p.title();
        let what = if r.budget.is_some() {
            "sampled bytes (watch mode)"
        } else {
            "outstanding bytes"
        };
        profiles.extend(profile(
            &mut frames,
            format!("{title}: {what}"),
            "bytes",
            &root,
            p.allocs.iter().map(|a| (a.frames.clone(), a.bytes)),
        ));
        profiles.extend(profile(
            &mut frames,
            format!("{title}: outstanding allocations"),
            "none",
            &root,
            p.allocs.iter().map(|a| (a.frames.clone(), a.count)),
        ));
        profiles.extend(profile(
            &mut frames,
            format!("{title}: open descriptors"),
            "none",
            &root,
            p.fds.iter().map(|f| (f.frames.clone(), f.count)),
        ));
    }
    let v = json!({
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "name": "tracer",
        "exporter": concat!("tracer ", env!("CARGO_PKG_VERSION")),
        "activeProfileIndex": 0,
        "shared": { "frames": frames.names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>() },
        "profiles": profiles,
    });
    serde_json::to_string(&v).unwrap_or_default() + "\n"
}
