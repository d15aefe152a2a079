//! The `xdpsec cli` session: IOS exec and configuration modes kept by the
//! client, IOS output filters on every command, `terminal monitor`, and a
//! line editor that writes no terminal escape sequences.
//!
//! Test automation (pyATS/Unicon with its `iosxe` plugin) drives this session
//! as it drives a router console: it waits for `NODE#`, `NODE(config)#` and
//! `NODE(config-line)#` at the end of the output, so prompts and echo are
//! plain text. Line editing uses only backspace-space-backspace, as IOS does
//! on a console, and still offers history (arrows, Ctrl-P/Ctrl-N), Tab
//! completion and `?` help.
use std::{
    io::Write,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use crate::{
    cli::{self, CommandSpec},
    ctlsock,
    filter::{self, OutputFilter},
    grammar,
};

/// Where the session is, as the prompt shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// User EXEC (`NODE>`): shows only.
    User,
    /// Privileged EXEC (`NODE#`), where a session starts: the control
    /// socket is root's alone, so its user is privileged already.
    Exec,
    /// Global configuration (`NODE(config)#`).
    Config,
    /// Line configuration (`NODE(config-line)#`).
    ConfigLine,
}

impl Mode {
    /// The prompt for node `node` in this mode.
    pub fn prompt(self, node: &str) -> String {
        match self {
            Mode::User => format!("{node}>"),
            Mode::Exec => format!("{node}#"),
            Mode::Config => format!("{node}(config)#"),
            Mode::ConfigLine => format!("{node}(config-line)#"),
        }
    }
}

/// Commands the session handles itself (never sent to the daemon).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Local {
    /// A daemon command (only in completion tables).
    Remote,
    Enable,
    Disable,
    TermLength,
    TermWidth,
    TermMonitor,
    TermNoMonitor,
    ConfigureTerminal,
    Exit,
    End,
    LoggingConsole,
    NoLoggingConsole,
    LineConsole,
    LineVty,
    ExecTimeout,
    ExecTimeoutSeconds,
    ServicePrompt,
    NoServicePrompt,
}

const fn spec(pattern: &'static str, id: Local, help: &'static str) -> CommandSpec<Local> {
    CommandSpec { pattern, id, help }
}

/// Session commands in EXEC mode.
const EXEC_LOCAL: &[CommandSpec<Local>] = &[
    spec("enable", Local::Enable, "privileged EXEC (already there)"),
    spec("disable", Local::Disable, "user EXEC: shows only"),
    spec(
        "terminal length <lines>",
        Local::TermLength,
        "lines per page (0: no paging; xdpsec never pages)",
    ),
    spec(
        "terminal width <columns>",
        Local::TermWidth,
        "columns (0: unlimited; xdpsec never wraps)",
    ),
    spec(
        "terminal monitor",
        Local::TermMonitor,
        "print new log lines in this session as they are logged",
    ),
    spec(
        "terminal no monitor",
        Local::TermNoMonitor,
        "stop printing log lines",
    ),
    spec(
        "configure terminal",
        Local::ConfigureTerminal,
        "configuration mode (session settings)",
    ),
    spec("exit", Local::Exit, "end the session"),
    spec("quit", Local::Exit, "end the session"),
    spec("logout", Local::Exit, "end the session"),
];

/// Configuration commands, in `(config)` and `(config-line)` modes. They
/// are accepted for what test automation sends on connecting; none of them
/// changes the daemon (xdpsec never prints logs on a session unless asked
/// with `terminal monitor`, and never times a session out).
const CONFIG_LOCAL: &[CommandSpec<Local>] = &[
    spec(
        "no logging console",
        Local::NoLoggingConsole,
        "no log lines on the console",
    ),
    spec(
        "logging console",
        Local::LoggingConsole,
        "log lines on the console",
    ),
    spec(
        "line console <first>",
        Local::LineConsole,
        "configure the console line",
    ),
    spec(
        "line vty <first> <last>",
        Local::LineVty,
        "configure virtual terminal lines",
    ),
    spec(
        "service prompt config",
        Local::ServicePrompt,
        "show the configuration prompt",
    ),
    spec(
        "no service prompt config",
        Local::NoServicePrompt,
        "hide the configuration prompt (ignored: always shown)",
    ),
    spec("end", Local::End, "back to privileged EXEC"),
    spec("exit", Local::Exit, "up one configuration level"),
];

/// Line configuration adds the line's own settings.
const LINE_LOCAL: &[CommandSpec<Local>] = &[
    spec(
        "exec-timeout <minutes>",
        Local::ExecTimeout,
        "idle time before logout (0: never; xdpsec never logs out)",
    ),
    spec(
        "exec-timeout <minutes> <seconds>",
        Local::ExecTimeoutSeconds,
        "idle time before logout",
    ),
];

/// What a line did to the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Read the next line.
    Continue,
    /// The session ends.
    End,
}

/// An interactive or scripted `xdpsec cli` session.
pub struct Session {
    socket: PathBuf,
    json: bool,
    node: String,
    /// The current mode.
    pub mode: Mode,
    /// `terminal monitor`: the daemon's `logged` count already printed.
    monitor: Option<u64>,
    history: Vec<String>,
    /// The editor's last key was CR (a LF right after it is no new line).
    after_cr: bool,
}

/// Send `command` (with an optional IOS output filter after `|`) to the
/// daemon; print the reply, filtered, on stdout, or the error on stderr.
/// Ok(true) when the daemon accepted the command.
pub fn remote(socket: &Path, line: &str, json: bool) -> anyhow::Result<bool> {
    let (command, filter) = filter::split(line);
    let filter = match filter.map(OutputFilter::parse) {
        None => None,
        Some(Ok(_)) if json => {
            eprintln!("% Output filters (| include ...) apply to IOS text, not to --json");
            return Ok(false);
        }
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => {
            eprintln!("{e}");
            return Ok(false);
        }
    };
    let reply = ctlsock::request(socket, command.trim(), json)?;
    if !reply.ok {
        eprintln!("{}", reply.output);
        return Ok(false);
    }
    let out = match &filter {
        Some(f) => f.apply(&reply.output),
        None => reply.output,
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    if !out.is_empty() && !out.ends_with('\n') {
        let _ = stdout.write_all(b"\n");
    }
    let _ = stdout.flush();
    Ok(true)
}

/// One command, not interactive: exit 0 when accepted, 1 when rejected, 2
/// when the daemon cannot be reached.
pub fn one_command(socket: &Path, line: &str, json: bool) -> ExitCode {
    match remote(socket, line, json) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("xdpsec: {}", crate::format_chain(&e));
            ExitCode::from(2)
        }
    }
}

impl Session {
    /// A session with the daemon at `socket`; asks it for its node name.
    pub fn connect(socket: &Path, json: bool) -> anyhow::Result<Session> {
        let reply = ctlsock::request(socket, "show version", true)?;
        if !reply.ok {
            anyhow::bail!("{}", reply.output);
        }
        // The prompt is the daemon's node name, as a router's is its hostname.
        let node = serde_json::from_str::<serde_json::Value>(&reply.output)
            .ok()
            .and_then(|v| v["node"].as_str().map(String::from))
            .unwrap_or_else(|| "xdpsec".into());
        Ok(Session {
            socket: socket.to_path_buf(),
            json,
            node,
            mode: Mode::Exec,
            monitor: None,
            history: Vec::new(),
            after_cr: false,
        })
    }

    /// The prompt now.
    pub fn prompt(&self) -> String {
        self.mode.prompt(&self.node)
    }

    /// The command table for completion and `?` in the current mode.
    fn table(&self) -> Vec<CommandSpec<Local>> {
        match self.mode {
            Mode::User | Mode::Exec => grammar::COMMANDS
                .iter()
                .map(|c| spec(c.pattern, Local::Remote, c.help))
                .chain(EXEC_LOCAL.iter().copied())
                .collect(),
            Mode::Config => CONFIG_LOCAL.to_vec(),
            Mode::ConfigLine => CONFIG_LOCAL.iter().chain(LINE_LOCAL).copied().collect(),
        }
    }

    /// Run one line typed at the prompt.
    pub fn run_line(&mut self, line: &str) -> Flow {
        let line = line.trim();
        if line.is_empty() {
            return Flow::Continue;
        }
        if !line.contains('|')
            && let Some(q) = line.strip_suffix('?')
        {
            println!("{}", self.help(q));
            return Flow::Continue;
        }
        match self.mode {
            Mode::User | Mode::Exec => self.exec_line(line),
            Mode::Config | Mode::ConfigLine => self.config_line(line),
        }
    }

    /// IOS `?`: what can come next (or what completes the last word).
    fn help(&self, line: &str) -> String {
        let (_, words) = cli::completions(&self.table(), line);
        if words.is_empty() {
            return "% Unrecognized command".into();
        }
        if line.is_empty() || line.ends_with(char::is_whitespace) {
            words
                .iter()
                .map(|w| format!("  {w}"))
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            words.join("  ")
        }
    }

    fn exec_line(&mut self, line: &str) -> Flow {
        let (command, _) = filter::split(line);
        // Session commands first; anything else is the daemon's to parse
        // (and to reject in IOS words).
        match cli::parse(EXEC_LOCAL, command) {
            Ok(p) => self.exec_local(p.id, line),
            Err(_) => {
                if self.mode == Mode::User && !is_show(command) {
                    println!(
                        "{command}\n^\n% Invalid input detected at '^' marker.\n  (user EXEC: `enable` first)"
                    );
                    return Flow::Continue;
                }
                if let Err(e) = remote(&self.socket, line, self.json) {
                    eprintln!("xdpsec: {}", crate::format_chain(&e));
                }
                Flow::Continue
            }
        }
    }

    fn exec_local(&mut self, id: Local, line: &str) -> Flow {
        let out = match id {
            Local::Enable => {
                self.mode = Mode::Exec;
                ""
            }
            Local::Disable => {
                self.mode = Mode::User;
                ""
            }
            Local::TermMonitor => {
                // New lines from now on: remember how many were logged.
                self.monitor = Some(self.logged().map_or(0, |(n, _)| n));
                ""
            }
            Local::TermNoMonitor => {
                self.monitor = None;
                ""
            }
            Local::ConfigureTerminal if self.mode == Mode::User => {
                "% Invalid input detected at '^' marker.\n  (user EXEC: `enable` first)\n"
            }
            Local::ConfigureTerminal => {
                self.mode = Mode::Config;
                "Enter configuration commands, one per line.  End with CNTL/Z.\n"
            }
            Local::Exit => return Flow::End,
            // Accepted and kept by nobody: xdpsec never pages or wraps.
            _ => "",
        };
        let (_, filter) = filter::split(line);
        print_filtered(out, filter);
        Flow::Continue
    }

    fn config_line(&mut self, line: &str) -> Flow {
        // `do` runs an EXEC command from configuration mode, as on IOS.
        if let Some(rest) = line.strip_prefix("do ") {
            let mode = self.mode;
            self.mode = Mode::Exec;
            let flow = self.exec_line(rest.trim());
            if self.mode == Mode::Exec {
                self.mode = mode;
            }
            return flow;
        }
        let table = self.table();
        let parsed = match cli::parse(&table, line) {
            Ok(p) => p,
            Err(e) => {
                println!("{e}");
                return Flow::Continue;
            }
        };
        match parsed.id {
            Local::End => self.mode = Mode::Exec,
            Local::Exit => {
                self.mode = match self.mode {
                    Mode::ConfigLine => Mode::Config,
                    _ => Mode::Exec,
                }
            }
            Local::LineConsole | Local::LineVty => self.mode = Mode::ConfigLine,
            // Accepted, with nothing to change (see CONFIG_LOCAL).
            _ => {}
        }
        Flow::Continue
    }

    /// The daemon's count of lines logged since start and its log buffer.
    fn logged(&self) -> Option<(u64, Vec<String>)> {
        let reply = ctlsock::request(&self.socket, "show logging", true).ok()?;
        let v: serde_json::Value = serde_json::from_str(&reply.output).ok()?;
        let lines = v["lines"]
            .as_array()?
            .iter()
            .filter_map(|l| l.as_str().map(String::from))
            .collect();
        Some((v["logged"].as_u64()?, lines))
    }

    /// `terminal monitor`: the log lines logged since the last call (at
    /// most the buffer's worth), or none when the monitor is off.
    pub fn new_log_lines(&mut self) -> Vec<String> {
        let Some(seen) = self.monitor else {
            return Vec::new();
        };
        let Some((logged, lines)) = self.logged() else {
            return Vec::new();
        };
        let new = logged.saturating_sub(seen) as usize;
        self.monitor = Some(logged);
        let skip = lines.len().saturating_sub(new);
        lines.into_iter().skip(skip).collect()
    }

    /// Print the log lines new since the last call (`terminal monitor`);
    /// true when some were printed.
    fn print_monitor(&mut self) -> bool {
        let lines = self.new_log_lines();
        for l in &lines {
            println!("{l}");
        }
        !lines.is_empty()
    }
}

/// Whether an EXEC command (its first word) is a `show` (or `help`) that
/// user EXEC may run: not `show crypto ipsec sa export ...`, which writes
/// keys to a file and needs `enable` (as keys need privilege on IOS).
fn is_show(command: &str) -> bool {
    let lower = command.to_ascii_lowercase();
    let mut words = lower.split_whitespace();
    let first = words.next().unwrap_or("");
    let export = words.any(|w| "export".starts_with(w));
    !first.is_empty() && ("show".starts_with(first) || first == "help") && !export
}

/// Print a session command's output through the line's filter, if any.
fn print_filtered(out: &str, filter: Option<&str>) {
    let out = match filter.map(OutputFilter::parse) {
        None => out.to_string(),
        Some(Ok(f)) => f.apply(out),
        Some(Err(e)) => format!("{e}\n"),
    };
    print!("{out}");
    let _ = std::io::stdout().flush();
}

/// Commands from a pipe: each echoed after the prompt, so the output reads
/// like a console transcript.
pub fn scripted(mut s: Session) -> ExitCode {
    use std::io::BufRead;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        s.print_monitor();
        println!("{}{line}", s.prompt());
        let _ = std::io::stdout().flush();
        if s.run_line(&line) == Flow::End {
            break;
        }
        let _ = std::io::stdout().flush();
    }
    ExitCode::SUCCESS
}

/// The terminal in character mode for the line editor; restored on drop.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    fn enter() -> std::io::Result<RawMode> {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: termios is plain data, filled by tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is our stdin, t a valid termios.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let saved = t;
        // No line discipline editing, echo or signals: the editor reads each
        // key. Output processing stays on, so "\n" is written as "\r\n".
        t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        t.c_iflag &= !(libc::IXON | libc::ICRNL | libc::INLCR);
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        // SAFETY: as above.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring the attributes read in `enter`.
        unsafe { libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSANOW, &self.saved) };
    }
}

/// How often an idle prompt looks for new log lines under `terminal monitor`.
const MONITOR_POLL: Duration = Duration::from_millis(200);
/// Lines kept in the history file.
const HISTORY_LINES: usize = 200;

/// One byte from stdin within `timeout` (None: nothing came; Err: closed).
fn read_byte(timeout: Duration) -> Result<Option<u8>, ()> {
    let fd = std::io::stdin().as_raw_fd();
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted {
            Ok(None)
        } else {
            Err(())
        };
    }
    if n == 0 {
        return Ok(None);
    }
    let mut b = 0u8;
    // SAFETY: reading one byte into a local.
    match unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) } {
        1 => Ok(Some(b)),
        _ => Err(()),
    }
}

/// What the editor returns.
enum Edit {
    /// A line (Enter).
    Line(String),
    /// Ctrl-C or Ctrl-Z: abandon the line; leave configuration mode.
    Break,
    /// Ctrl-D on an empty line, or the terminal closed.
    Eof,
}

fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes());
    let _ = o.flush();
}

/// Erase the last character of `line`, on the screen too.
fn backspace(line: &mut String) {
    if line.pop().is_some() {
        out("\x08 \x08");
    }
}

/// Erase `line` from the screen with backspace-space-backspace.
fn erase(line: &str) {
    out(&"\x08 \x08".repeat(line.chars().count()));
}

impl Session {
    /// Read one line at `prompt`, echoing it and editing it without escape
    /// sequences.
    fn edit_line(&mut self) -> Edit {
        let mut line = String::new();
        let mut pending: Vec<u8> = Vec::new(); // a UTF-8 character in progress
        let mut hist = self.history.len();
        out(&self.prompt());
        loop {
            let b = match read_byte(MONITOR_POLL) {
                Ok(Some(b)) => b,
                Ok(None) => {
                    // Idle: log lines go above the prompt, which is redrawn.
                    if self.monitor.is_some() {
                        let lines = self.new_log_lines();
                        if !lines.is_empty() {
                            out(&format!("\n{}\n{}{line}", lines.join("\n"), self.prompt()));
                        }
                    }
                    continue;
                }
                Err(()) => return Edit::Eof,
            };
            // Kept across lines: the CR ends a line, its LF comes after.
            let was_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\r' => {
                    out("\n");
                    return Edit::Line(line);
                }
                // The LF of a CR LF pair ends nothing more.
                b'\n' if was_cr => {}
                b'\n' => {
                    out("\n");
                    return Edit::Line(line);
                }
                0x7f | 0x08 => backspace(&mut line),
                // Ctrl-U, Ctrl-X: the whole line.
                0x15 | 0x18 => {
                    erase(&line);
                    line.clear();
                }
                // Ctrl-W: the last word.
                0x17 => {
                    let keep = line.trim_end().rfind(' ').map_or(0, |i| i + 1);
                    erase(&line[keep..]);
                    line.truncate(keep);
                }
                0x03 | 0x1a => {
                    out("\n");
                    return Edit::Break;
                }
                0x04 if line.is_empty() => {
                    out("\n");
                    return Edit::Eof;
                }
                b'\t' => self.complete(&mut line),
                b'?' if !line.contains('|') => {
                    out("?\n");
                    println!("{}", self.help(&line));
                    out(&format!("{}{line}", self.prompt()));
                }
                // Ctrl-P / Ctrl-N and the arrow keys: history.
                0x10 => self.recall(&mut line, &mut hist, -1),
                0x0e => self.recall(&mut line, &mut hist, 1),
                0x1b => match escape_key() {
                    Some(b'A') => self.recall(&mut line, &mut hist, -1),
                    Some(b'B') => self.recall(&mut line, &mut hist, 1),
                    _ => {}
                },
                b if b >= 0x20 => {
                    pending.push(b);
                    if let Ok(s) = std::str::from_utf8(&pending) {
                        line.push_str(s);
                        out(s);
                        pending.clear();
                    } else if pending.len() >= 4 {
                        pending.clear();
                    }
                }
                // Other control keys (Unicon's Ctrl-^ among them): ignored.
                _ => {}
            }
        }
    }

    /// Tab: complete the last word when one keyword fits; list the
    /// candidates when several do.
    fn complete(&self, line: &mut String) {
        if line.contains('|') {
            return;
        }
        let (start, words) = cli::completions(&self.table(), line);
        let words: Vec<String> = words.into_iter().filter(|w| !w.starts_with('<')).collect();
        match words.as_slice() {
            [] => {}
            [one] => {
                let typed = line.len() - start;
                let add = format!("{} ", &one[typed.min(one.len())..]);
                line.push_str(&add);
                out(&add);
            }
            many => {
                out(&format!("\n{}\n{}{line}", many.join("  "), self.prompt()));
            }
        }
    }

    /// Replace the line with an older (`dir` -1) or newer (+1) history entry.
    fn recall(&self, line: &mut String, hist: &mut usize, dir: isize) {
        let next = hist
            .checked_add_signed(dir)
            .filter(|&h| h <= self.history.len());
        let Some(h) = next else { return };
        *hist = h;
        erase(line);
        *line = self.history.get(h).cloned().unwrap_or_default();
        out(line);
    }

    /// An interactive session on a terminal.
    pub fn interactive(mut self) -> ExitCode {
        let raw = match RawMode::enter() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("xdpsec: terminal: {e}");
                return ExitCode::from(2);
            }
        };
        let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".xdpsec_history"));
        if let Some(h) = &history {
            self.history = std::fs::read_to_string(h)
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with("#V"))
                .map(String::from)
                .collect();
        }
        loop {
            match self.edit_line() {
                Edit::Line(line) => {
                    let t = line.trim();
                    if !t.is_empty() && self.history.last().map(String::as_str) != Some(t) {
                        self.history.push(t.to_string());
                    }
                    if self.run_line(&line) == Flow::End {
                        break;
                    }
                }
                Edit::Break => {
                    if matches!(self.mode, Mode::Config | Mode::ConfigLine) {
                        self.mode = Mode::Exec;
                    }
                }
                Edit::Eof => break,
            }
            if self.print_monitor() {
                let _ = std::io::stdout().flush();
            }
        }
        drop(raw);
        if let Some(h) = &history {
            let keep = self.history.len().saturating_sub(HISTORY_LINES);
            let _ = std::fs::write(h, self.history[keep..].join("\n") + "\n");
        }
        ExitCode::SUCCESS
    }
}

/// The final byte of an escape sequence (`ESC [ A` gives `A`), read within
/// a short time; None when ESC came alone.
fn escape_key() -> Option<u8> {
    let t = Duration::from_millis(50);
    let b = read_byte(t).ok()??;
    if b != b'[' && b != b'O' {
        return None;
    }
    for _ in 0..16 {
        let b = read_byte(t).ok()??;
        if (0x40..=0x7e).contains(&b) {
            return Some(b);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            socket: PathBuf::from("/nonexistent"),
            json: false,
            node: "edge9".into(),
            mode: Mode::Exec,
            monitor: None,
            history: Vec::new(),
            after_cr: false,
        }
    }

    #[test]
    fn unicon_connect_sequence_walks_the_modes() {
        let mut s = session();
        assert_eq!(s.prompt(), "edge9#");
        for l in ["enable", "term length 0", "terminal width 0"] {
            assert_eq!(s.run_line(l), Flow::Continue);
            assert_eq!(s.mode, Mode::Exec, "{l}");
        }
        s.run_line("config term");
        assert_eq!(s.prompt(), "edge9(config)#");
        s.run_line("no logging console");
        s.run_line("line console 0");
        assert_eq!(s.prompt(), "edge9(config-line)#");
        s.run_line("exec-timeout 0");
        s.run_line("line vty 0 4");
        s.run_line("exec-timeout 0 0");
        assert_eq!(s.mode, Mode::ConfigLine);
        s.run_line("exit");
        assert_eq!(s.mode, Mode::Config);
        s.run_line("line vty 0 4");
        s.run_line("end");
        assert_eq!(s.prompt(), "edge9#");
        assert_eq!(s.run_line("exit"), Flow::End);
    }

    #[test]
    fn config_mode_rejects_what_it_does_not_know() {
        let mut s = session();
        s.run_line("configure terminal");
        // exec-timeout belongs to line configuration.
        s.run_line("exec-timeout 0");
        assert_eq!(s.mode, Mode::Config);
        s.run_line("interface Tunnel0");
        assert_eq!(s.mode, Mode::Config);
        s.run_line("exit");
        assert_eq!(s.mode, Mode::Exec);
    }

    #[test]
    fn disable_and_enable() {
        let mut s = session();
        s.run_line("disable");
        assert_eq!(s.prompt(), "edge9>");
        s.run_line("configure terminal");
        assert_eq!(s.mode, Mode::User);
        s.run_line("en");
        assert_eq!(s.prompt(), "edge9#");
    }

    #[test]
    fn help_lists_session_and_daemon_words() {
        let s = session();
        let h = s.help("");
        assert!(h.contains("show") && h.contains("terminal") && h.contains("configure"));
        assert_eq!(s.help("terminal m"), "monitor");
        assert!(is_show("sh ver"));
        assert!(!is_show("clear crypto sa"));
        assert!(!is_show("sh cry ipsec sa exp wireshark /tmp/k"));
        assert!(is_show("show crypto ipsec sa peer 198.51.100.2"));
    }
}
