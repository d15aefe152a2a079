//! IOS output filters: `COMMAND | include|exclude|begin|section|count REGEX`.
//!
//! As on IOS, the first `|` ends the command, the filter keyword matches by
//! unique prefix (`| i`, `| inc`), and the regular expression is the rest of
//! the line, spaces and further `|` included (`| include up|down` is one
//! alternation). Matching is case-sensitive, as on IOS.
use regex::Regex;

/// What a filter keeps of a command's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterKind {
    /// Lines matching the expression.
    Include,
    /// Lines not matching it.
    Exclude,
    /// Everything from the first matching line on.
    Begin,
    /// Each matching line with the lines indented under it.
    Section,
    /// Only `Number of lines which match regexp = N`.
    Count,
}

/// The filter keywords, in the order IOS's `| ?` lists them.
const KEYWORDS: &[(&str, FilterKind)] = &[
    ("begin", FilterKind::Begin),
    ("count", FilterKind::Count),
    ("exclude", FilterKind::Exclude),
    ("include", FilterKind::Include),
    ("section", FilterKind::Section),
];

/// A parsed output filter.
#[derive(Clone, Debug)]
pub struct OutputFilter {
    /// Which filter.
    pub kind: FilterKind,
    regex: Regex,
}

/// Split `line` at its first `|`: the command, and the filter text after the
/// bar (None without a bar).
pub fn split(line: &str) -> (&str, Option<&str>) {
    match line.split_once('|') {
        Some((cmd, filter)) => (cmd.trim_end(), Some(filter.trim())),
        None => (line, None),
    }
}

impl OutputFilter {
    /// Parse the text after the `|`, e.g. `include operating mode`; the error
    /// reads as IOS prints it.
    pub fn parse(text: &str) -> Result<OutputFilter, String> {
        let text = text.trim_start();
        let (word, rest) = match text.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (text, ""),
        };
        let names: Vec<&str> = KEYWORDS.iter().map(|k| k.0).collect();
        if word.is_empty() {
            return Err(format!(
                "% Incomplete command.\n  expected: {}",
                names.join(" | ")
            ));
        }
        let w = word.to_ascii_lowercase();
        let hits: Vec<&(&str, FilterKind)> =
            KEYWORDS.iter().filter(|k| k.0.starts_with(&w)).collect();
        let kind = match hits.as_slice() {
            [one] => one.1,
            [] => {
                return Err(format!(
                    "% Invalid input detected at '^' marker.\n  expected after '|': {}",
                    names.join(" | ")
                ));
            }
            _ => {
                return Err(format!(
                    "% Ambiguous command:  \"| {word}\"\n  could be: {}",
                    hits.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
                ));
            }
        };
        // `| count` alone counts every line; the others need an expression.
        let pattern = match (rest, kind) {
            ("", FilterKind::Count) => ".*",
            ("", _) => return Err("% Incomplete command.\n  expected: <regular expression>".into()),
            (r, _) => r,
        };
        let regex = Regex::new(pattern)
            .map_err(|e| format!("% Invalid regular expression \"{pattern}\": {e}"))?;
        Ok(OutputFilter { kind, regex })
    }

    /// The filtered output (lines end in `\n`).
    pub fn apply(&self, text: &str) -> String {
        let mut out = String::new();
        let mut push = |l: &str| {
            out.push_str(l);
            out.push('\n');
        };
        match self.kind {
            FilterKind::Include => text
                .lines()
                .filter(|l| self.regex.is_match(l))
                .for_each(&mut push),
            FilterKind::Exclude => text
                .lines()
                .filter(|l| !self.regex.is_match(l))
                .for_each(&mut push),
            FilterKind::Begin => text
                .lines()
                .skip_while(|l| !self.regex.is_match(l))
                .for_each(&mut push),
            FilterKind::Section => {
                // A section is a line and the lines after it indented deeper;
                // it ends at the next line indented as much or less, or at a
                // blank line.
                let indent = |l: &str| l.len() - l.trim_start().len();
                let mut within: Option<usize> = None;
                for l in text.lines() {
                    if let Some(depth) = within {
                        if !l.trim().is_empty() && indent(l) > depth {
                            push(l);
                            continue;
                        }
                        within = None;
                    }
                    if self.regex.is_match(l) {
                        push(l);
                        within = Some(indent(l));
                    }
                }
            }
            FilterKind::Count => {
                let n = text.lines().filter(|l| self.regex.is_match(l)).count();
                push(&format!("Number of lines which match regexp = {n}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "Router operating mode: Autonomous\n\
interface: Tunnel0\n    Crypto map tag: Tunnel0-head-0\n    #pkts encaps: 5\n\n\
interface: Tunnel1\n    Crypto map tag: Tunnel1-head-0\n    #pkts encaps: 7\nlast line\n";

    fn run(filter: &str) -> String {
        OutputFilter::parse(filter).unwrap().apply(TEXT)
    }

    #[test]
    fn split_at_the_first_bar_only() {
        assert_eq!(split("show version"), ("show version", None));
        assert_eq!(
            split("show version | include up|down"),
            ("show version", Some("include up|down"))
        );
    }

    #[test]
    fn include_exclude_begin_count() {
        assert_eq!(
            run("include operating mode"),
            "Router operating mode: Autonomous\n"
        );
        assert_eq!(run("i pkts"), "    #pkts encaps: 5\n    #pkts encaps: 7\n");
        // The expression is the rest of the line: an alternation here.
        assert_eq!(
            run("inc Tunnel0-head|last"),
            "    Crypto map tag: Tunnel0-head-0\nlast line\n"
        );
        // Case-sensitive, as on IOS.
        assert_eq!(run("include ROUTER"), "");
        let ex = run("exclude ^ |^$");
        assert_eq!(
            ex,
            "Router operating mode: Autonomous\ninterface: Tunnel0\ninterface: Tunnel1\nlast line\n"
        );
        assert!(run("begin Tunnel1").starts_with("interface: Tunnel1\n"));
        assert_eq!(run("b Tunnel1").lines().count(), 4);
        assert_eq!(
            run("count pkts"),
            "Number of lines which match regexp = 2\n"
        );
        assert_eq!(run("count"), "Number of lines which match regexp = 9\n");
    }

    #[test]
    fn section_keeps_the_indented_lines_under_a_match() {
        assert_eq!(
            run("section Tunnel1"),
            "interface: Tunnel1\n    Crypto map tag: Tunnel1-head-0\n    #pkts encaps: 7\n"
        );
        // A match on an indented line takes only that line.
        assert_eq!(run("sec encaps: 5"), "    #pkts encaps: 5\n");
    }

    #[test]
    fn errors_read_as_on_ios() {
        let e = OutputFilter::parse("").unwrap_err();
        assert!(e.starts_with("% Incomplete command."), "{e}");
        let e = OutputFilter::parse("include").unwrap_err();
        assert!(e.starts_with("% Incomplete command."), "{e}");
        let e = OutputFilter::parse("grep x").unwrap_err();
        assert!(e.starts_with("% Invalid input"), "{e}");
        let e = OutputFilter::parse("include (").unwrap_err();
        assert!(e.starts_with("% Invalid regular expression"), "{e}");
    }
}
