//! Interactive flame graphs (SVG, in-process with inferno) of the folded stacks, titled with what
//! they weigh. An empty profile still gives a valid SVG that says so.

use inferno::flamegraph::{self, Options};

/// Renders folded stacks (as written to the .folded files) into an SVG.
pub fn render(folded: &str, title: &str, count_name: &str) -> String {
    let lines: Vec<&str> = folded.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return empty(title);
    }
    let mut opts = Options::default();
    opts.title = title.to_string();
    opts.count_name = count_name.to_string();
    opts.name_type = "Frame:".to_string();
    let mut out = Vec::new();
    match flamegraph::from_lines(&mut opts, lines, &mut out) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => empty(title),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn empty(title: &str) -> String {
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg version=\"1.1\" width=\"1200\" height=\"80\" xmlns=\"http://www.w3.org/2000/svg\"><text x=\"600\" y=\"30\" text-anchor=\"middle\" font-size=\"17\">{}</text><text x=\"600\" y=\"60\" text-anchor=\"middle\" font-size=\"12\">nothing to show</text></svg>\n",
        escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_frames_and_title() {
        let svg = render(
            "p (pid 1);main (a.py:3);leak (a.py:9) 4096\n",
            "Outstanding bytes",
            "bytes",
        );
        assert!(svg.contains("<svg"));
        assert!(svg.contains("leak (a.py:9)"));
        assert!(svg.contains("Outstanding bytes"));
        let none = render("", "Open descriptors", "descriptors");
        assert!(none.contains("<svg") && none.contains("nothing to show"));
    }
}
