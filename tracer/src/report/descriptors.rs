//! Open descriptors by site: a leak that opens a new file every time is one site, not one row
//! per file.

use super::FdStack;
use crate::frame::Frame;
use crate::verdict::verdict_key;

/// Descriptors opened at one place (same stack, same kind of resource), whatever they name.
#[derive(Debug, Clone, PartialEq)]
pub struct FdSite {
    /// The stack, its leaf the kind of resource (`[file]`, `[socket inet/tcp]`...).
    pub frames: Vec<Frame>,
    pub count: u64,
    /// A few of the names (paths) they refer to, and how many different names there are.
    pub examples: Vec<String>,
    pub names: usize,
}

/// Most names kept per descriptor site.
pub const FD_EXAMPLES: usize = 3;

/// The descriptor stacks grouped by site, most descriptors first: a leak that opens a new file
/// every time is one row, not one row per file. A site is the Python call path (as verdicts
/// see it: the native frames below it vary, or are lost when the kernel's stack map is full)
/// and the kind of resource.
pub fn fd_sites(fds: &[FdStack]) -> Vec<FdSite> {
    let mut sites: Vec<FdSite> = Vec::new();
    for f in fds {
        let Some((leaf, path)) = f.frames.split_last() else {
            continue;
        };
        let name = match leaf {
            Frame::Resource { name, .. } => name.clone(),
            _ => None,
        };
        let mut frames = verdict_key(path.to_vec());
        frames.push(leaf.without_name());
        let i = match sites.iter().position(|s| s.frames == frames) {
            Some(i) => i,
            None => {
                sites.push(FdSite {
                    frames,
                    count: 0,
                    examples: Vec::new(),
                    names: 0,
                });
                sites.len() - 1
            }
        };
        let site = &mut sites[i];
        site.count += f.count;
        if let Some(n) = name {
            site.names += 1;
            if site.examples.len() < FD_EXAMPLES {
                site.examples.push(n);
            }
        }
    }
    sites.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.frames.cmp(&b.frames)));
    sites
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_grouped_by_site() {
        let st = |f: &str, line, kind: &str, name: Option<String>, count| FdStack {
            frames: vec![
                Frame::python("main", "a.py", Some(9)),
                Frame::python(f, "a.py", Some(line)),
                Frame::Resource {
                    kind: kind.into(),
                    name,
                },
            ],
            count,
        };
        let file = |i| Some(format!("/tmp/a-{i}.log"));
        let fds = vec![
            st("log", 3, "file", file(1), 1),
            st("log", 3, "file", file(2), 1),
            st("log", 3, "file", file(3), 1),
            st("log", 3, "file", file(4), 1),
            st("udp", 5, "socket inet/udp", None, 2),
        ];
        let sites = fd_sites(&fds);
        assert_eq!(sites.len(), 2);
        assert_eq!(sites[0].count, 4);
        assert_eq!(sites[0].frames.last().unwrap().to_string(), "[file]");
        assert_eq!(sites[0].examples.len(), FD_EXAMPLES);
        assert_eq!(sites[0].names, 4);
        assert_eq!(sites[1].count, 2);
        assert_eq!(
            sites[1].frames.last().unwrap().to_string(),
            "[socket inet/udp]"
        );
        assert!(sites[1].examples.is_empty());
        // The same Python line with and without its native frames (lost stacks) is one site.
        let mut native = st("log", 3, "file", file(5), 1);
        native.frames.insert(2, Frame::native("__libc_open64"));
        let sites = fd_sites(&[native, st("log", 3, "file", file(6), 1)]);
        assert_eq!(sites.len(), 1);
        assert_eq!(sites[0].count, 2);
    }
}
