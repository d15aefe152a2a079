//! IOS-style command parsing: keywords match by unique prefix
//! (`sh plat hard qfp act stat`), arguments are typed, and errors read as on
//! a router (`% Invalid input detected at '^' marker.`, `% Incomplete
//! command.`, `% Ambiguous command:`), with a hint of what was expected.
use std::net::IpAddr;

/// One word of a command pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// A keyword, matched by unique prefix, case-insensitively.
    Kw(&'static str),
    /// An IPv4 or IPv6 address argument.
    Addr(&'static str),
    /// A number argument (0-65535).
    Num(&'static str),
    /// A word argument (a TLOC color).
    Word(&'static str),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Kw(k) => (*k).to_string(),
            Token::Addr(n) | Token::Num(n) | Token::Word(n) => format!("<{n}>"),
        }
    }
}

/// A value bound to an argument token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// An address.
    Addr(IpAddr),
    /// A number.
    Num(u32),
    /// A word.
    Word(String),
}

/// A command the parser recognises: its words and an id for the dispatcher.
#[derive(Clone, Copy, Debug)]
pub struct CommandSpec<C: Copy> {
    /// The command's words, space-separated: keywords as written,
    /// `<address>` for an IPv4/IPv6 address, `<color>` and `<file>` for a word, any
    /// other `<name>` for a number.
    pub pattern: &'static str,
    /// What the dispatcher runs.
    pub id: C,
    /// One line of help.
    pub help: &'static str,
}

impl<C: Copy> CommandSpec<C> {
    /// The pattern's words as tokens.
    pub fn tokens(&self) -> Vec<Token> {
        self.pattern
            .split_whitespace()
            .map(
                |w| match w.strip_prefix('<').and_then(|w| w.strip_suffix('>')) {
                    Some("address") => Token::Addr("address"),
                    Some("color") => Token::Word("color"),
                    Some("file") => Token::Word("file"),
                    Some(name) => Token::Num(name),
                    None => Token::Kw(w),
                },
            )
            .collect()
    }
}

/// A successfully parsed command.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed<C> {
    /// The command id.
    pub id: C,
    /// The arguments, in order.
    pub args: Vec<Arg>,
}

/// A parse failure, formatted as IOS prints it.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn token_matches(tok: &Token, word: &str) -> Option<Option<Arg>> {
    match tok {
        Token::Kw(k) => {
            let w = word.to_ascii_lowercase();
            k.starts_with(&w).then_some(None)
        }
        Token::Addr(_) => word.parse().ok().map(|a| Some(Arg::Addr(a))),
        Token::Num(_) => {
            let v = if let Some(h) = word.strip_prefix("0x") {
                u32::from_str_radix(h, 16).ok()
            } else {
                word.parse().ok()
            };
            v.map(|n| Some(Arg::Num(n)))
        }
        Token::Word(_) => Some(Some(Arg::Word(word.to_string()))),
    }
}

/// Parse `line` against `specs`.
pub fn parse<C: Copy>(specs: &[CommandSpec<C>], line: &str) -> Result<Parsed<C>, ParseError> {
    // Word start offsets, for the caret.
    let mut words: Vec<(usize, &str)> = Vec::new();
    let mut start = None;
    for (i, ch) in line.char_indices() {
        if ch.is_whitespace() {
            if let Some(s) = start.take() {
                words.push((s, &line[s..i]));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push((s, &line[s..]));
    }
    if words.is_empty() {
        return Err(ParseError("% Incomplete command.".into()));
    }

    let tokens: Vec<Vec<Token>> = specs.iter().map(|s| s.tokens()).collect();
    // Candidates still alive after each word, with their bound arguments.
    let mut alive: Vec<(usize, Vec<Arg>)> = (0..specs.len()).map(|i| (i, Vec::new())).collect();
    for (pos, &(off, word)) in words.iter().enumerate() {
        let mut next = Vec::new();
        let mut kw_hits: Vec<&'static str> = Vec::new();
        for (i, args) in &alive {
            let Some(tok) = tokens[*i].get(pos) else {
                continue;
            };
            if let Some(arg) = token_matches(tok, word) {
                let mut a = args.clone();
                if let Some(v) = arg {
                    a.push(v);
                }
                if let Token::Kw(k) = tok
                    && !kw_hits.contains(k)
                {
                    kw_hits.push(k);
                }
                next.push((*i, a, *tok));
            }
        }
        if next.is_empty() {
            let expected = expected_at(&tokens, &alive, pos);
            return Err(ParseError(format!(
                "{line}\n{caret}^\n% Invalid input detected at '^' marker.{hint}",
                caret = " ".repeat(off),
                hint = hint(&expected)
            )));
        }
        // A word that is a prefix of several different keywords is ambiguous,
        // unless it spells one of them exactly.
        if kw_hits.len() > 1 {
            let w = word.to_ascii_lowercase();
            if let Some(exact) = kw_hits.iter().find(|k| **k == w) {
                let exact = *exact;
                next.retain(|(_, _, t)| !matches!(t, Token::Kw(k) if *k != exact));
            } else {
                let typed: Vec<&str> = words[..=pos].iter().map(|w| w.1).collect();
                return Err(ParseError(format!(
                    "% Ambiguous command:  \"{}\"\n  could be: {}",
                    typed.join(" "),
                    kw_hits.join(", ")
                )));
            }
        }
        alive = next.into_iter().map(|(i, a, _)| (i, a)).collect();
    }
    let n = words.len();
    if let Some((i, args)) = alive.iter().find(|(i, _)| tokens[*i].len() == n) {
        return Ok(Parsed {
            id: specs[*i].id,
            args: args.clone(),
        });
    }
    let expected = expected_at(&tokens, &alive, n);
    Err(ParseError(format!(
        "% Incomplete command.{}",
        hint(&expected)
    )))
}

/// Words that can follow the complete words of `line` (IOS `?` help) when
/// `line` ends in white space, or that complete its last, partial word.
/// Returns the byte offset where the completed word starts, and the words.
pub fn completions<C: Copy>(specs: &[CommandSpec<C>], line: &str) -> (usize, Vec<String>) {
    let partial_start = line.rfind(char::is_whitespace).map(|i| i + 1).unwrap_or(0);
    let partial = &line[partial_start..];
    let done: Vec<&str> = line[..partial_start].split_whitespace().collect();
    let mut out: Vec<String> = Vec::new();
    for spec in specs {
        let tokens = spec.tokens();
        let words_match = done
            .iter()
            .zip(&tokens)
            .all(|(w, t)| token_matches(t, w).is_some());
        let matches_prefix = done.len() < tokens.len() && words_match;
        if !matches_prefix {
            if done.len() == tokens.len()
                && words_match
                && partial.is_empty()
                && !out.iter().any(|o| o == "<cr>")
            {
                out.push("<cr>".into());
            }
            continue;
        }
        let next = &tokens[done.len()];
        let cand = match next {
            Token::Kw(k) if k.starts_with(&partial.to_ascii_lowercase()) => (*k).to_string(),
            Token::Kw(_) => continue,
            other if partial.is_empty() => other.describe(),
            _ => continue,
        };
        if !out.contains(&cand) {
            out.push(cand);
        }
    }
    (partial_start, out)
}

fn expected_at(tokens: &[Vec<Token>], alive: &[(usize, Vec<Arg>)], pos: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, _) in alive {
        if let Some(t) = tokens[*i].get(pos) {
            let d = t.describe();
            if !out.contains(&d) {
                out.push(d);
            }
        } else if !out.iter().any(|s| s == "<cr>") {
            out.push("<cr>".into());
        }
    }
    out
}

fn hint(expected: &[String]) -> String {
    if expected.is_empty() {
        String::new()
    } else {
        format!("\n  expected: {}", expected.join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Id {
        Stats,
        Drops,
        DropsAll,
        SaPeer,
        Sa,
        Set,
    }

    const SPECS: &[CommandSpec<Id>] = &[
        CommandSpec {
            pattern: "show platform hardware qfp active statistics",
            id: Id::Stats,
            help: "",
        },
        CommandSpec {
            pattern: "show platform hardware qfp active feature ipsec datapath drops",
            id: Id::Drops,
            help: "",
        },
        CommandSpec {
            pattern: "show platform hardware qfp active feature ipsec datapath drops all",
            id: Id::DropsAll,
            help: "",
        },
        CommandSpec {
            pattern: "show crypto ipsec sa peer <address>",
            id: Id::SaPeer,
            help: "",
        },
        CommandSpec {
            pattern: "show crypto ipsec sa",
            id: Id::Sa,
            help: "",
        },
        CommandSpec {
            pattern: "set <port>",
            id: Id::Set,
            help: "",
        },
    ];

    #[test]
    fn full_and_abbreviated_words() {
        assert_eq!(
            parse(SPECS, "show platform hardware qfp active statistics")
                .unwrap()
                .id,
            Id::Stats
        );
        assert_eq!(
            parse(SPECS, "sh plat hard qfp act stat").unwrap().id,
            Id::Stats
        );
        assert_eq!(
            parse(SPECS, "  SHOW   crypto ipsec sa ").unwrap().id,
            Id::Sa
        );
        assert_eq!(
            parse(SPECS, "sh pl ha q a f i d drops").unwrap().id,
            Id::Drops
        );
        assert_eq!(
            parse(SPECS, "sh pl ha q a f i d drops all").unwrap().id,
            Id::DropsAll
        );
        let p = parse(SPECS, "sh cry ipsec sa peer 198.51.100.2").unwrap();
        assert_eq!(p.id, Id::SaPeer);
        assert_eq!(p.args, vec![Arg::Addr("198.51.100.2".parse().unwrap())]);
        assert_eq!(parse(SPECS, "set 0x10").unwrap().args, vec![Arg::Num(16)]);
    }

    #[test]
    fn invalid_input_marks_the_word() {
        let e = parse(SPECS, "show platform hardwear qfp").unwrap_err().0;
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines[0], "show platform hardwear qfp");
        assert_eq!(lines[1], "              ^");
        assert_eq!(lines[2], "% Invalid input detected at '^' marker.");
        assert!(lines[3].contains("hardware"), "{e}");
        let e = parse(SPECS, "show crypto ipsec sa peer 10.0.0.300")
            .unwrap_err()
            .0;
        assert!(e.contains("<address>"), "{e}");
    }

    #[test]
    fn completion_lists_next_words() {
        assert_eq!(completions(SPECS, "sh"), (0, vec!["show".to_string()]));
        assert_eq!(
            completions(SPECS, "show c"),
            (5, vec!["crypto".to_string()])
        );
        let (_, next) = completions(SPECS, "show crypto ipsec sa ");
        assert_eq!(next, vec!["peer".to_string(), "<cr>".to_string()]);
        let (_, next) = completions(SPECS, "show crypto ipsec sa peer ");
        assert_eq!(next, vec!["<address>".to_string()]);
        assert!(completions(SPECS, "bogus ").1.is_empty());
    }

    #[test]
    fn incomplete_and_ambiguous() {
        let e = parse(SPECS, "show platform").unwrap_err().0;
        assert!(e.starts_with("% Incomplete command."), "{e}");
        assert!(e.contains("hardware"), "{e}");
        let e = parse(SPECS, "s crypto").unwrap_err().0;
        assert!(e.starts_with("% Ambiguous command:"), "{e}");
        assert_eq!(parse(SPECS, "").unwrap_err().0, "% Incomplete command.");
        // "sa" is complete by itself, and "peer" needs an address.
        let e = parse(SPECS, "show crypto ipsec sa peer").unwrap_err().0;
        assert!(e.contains("<address>"), "{e}");
    }
}
