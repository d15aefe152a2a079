//! The control socket: a Unix stream socket (mode 0600) taking one request
//! per connection. Request and reply are one JSON line each:
//! `{"command":"show ...","json":false}` -> `{"ok":true,"output":"..."}`.
//!
//! Each connection is served on its own thread (at most
//! [`MAX_CONNECTIONS`] at once), so a slow client holds up nobody; the
//! reply is written through a buffer as it is encoded, so a large answer
//! (thousands of tunnels) streams at socket speed.
use std::{
    io::{BufRead, BufReader, BufWriter, Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::grammar::{self, Command};

/// A request sent by `xdpsec cli`.
#[derive(Serialize, Deserialize, Debug)]
pub struct Request {
    /// The IOS-style command line.
    pub command: String,
    /// Whether the reply should be JSON instead of IOS text.
    #[serde(default)]
    pub json: bool,
    /// The line parsed by the client ([`crate::grammar::parse`]); the
    /// daemon runs it as it is. Without it, the daemon parses `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Command>,
}

impl Request {
    /// The command: as the client parsed it, or the line parsed here (the
    /// error names the word that did not parse).
    pub fn parsed(&self) -> Result<Command, String> {
        match &self.cmd {
            Some(c) => Ok(c.clone()),
            None => grammar::parse(&self.command).map_err(|e| e.0),
        }
    }
}

/// The daemon's reply.
#[derive(Serialize, Deserialize, Debug)]
pub struct Reply {
    /// False when the command was rejected (`% Invalid input ...`) or failed.
    pub ok: bool,
    /// Text to print.
    pub output: String,
}

impl Reply {
    /// A failed request with this message.
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            output: msg.into(),
        }
    }
}

/// Longest request line accepted (a command line is a few hundred bytes).
pub const MAX_REQUEST: usize = 64 * 1024;
/// Connections served at once; more are told to retry.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The bound listening socket; removes its path when dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Bind `path` with mode 0600. A stale socket file (nobody listening) is
    /// replaced; a live one means another daemon uses the path: error.
    pub fn bind(path: &Path) -> Result<ControlSocket> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("creating the control socket directory {}", dir.display())
            })?;
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                bail!(
                    "control socket path {} exists and is not a socket: remove it or set `socket` in the config",
                    path.display()
                );
            }
            if UnixStream::connect(path).is_ok() {
                bail!(
                    "control socket {} is in use: another xdpsec is running with it; stop it or set a different `socket` in the config",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale control socket {}", path.display()))?;
        }
        // Bind under a umask that leaves the socket 0600 from the start.
        // SAFETY: umask only changes this process's file creation mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let listener =
            bound.with_context(|| format!("binding the control socket {}", path.display()))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Serve requests with `handle` until `stop()` returns true (checked
    /// at least every 20 ms), each connection on its own thread.
    pub fn serve<H>(&self, stop: impl Fn() -> bool, handle: H)
    where
        H: Fn(Request) -> Reply + Send + Sync + 'static,
    {
        self.listener
            .set_nonblocking(true)
            .expect("setting the control socket non-blocking");
        let handle = Arc::new(handle);
        let active = Arc::new(AtomicUsize::new(0));
        while !stop() {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
                        let _ = write_reply(
                            &stream,
                            &Reply::error("% The control socket is busy: try again"),
                        );
                        continue;
                    }
                    active.fetch_add(1, Ordering::AcqRel);
                    let (handle, active2) = (Arc::clone(&handle), Arc::clone(&active));
                    let spawned = std::thread::Builder::new()
                        .name("xdpsec-ctl-conn".into())
                        .spawn(move || {
                            let _ = serve_one(stream, &*handle);
                            active2.fetch_sub(1, Ordering::AcqRel);
                        });
                    if let Err(e) = spawned {
                        active.fetch_sub(1, Ordering::AcqRel);
                        tracing::warn!(error = %e, "control socket: cannot start a connection thread");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Read one request line of at most [`MAX_REQUEST`] bytes: the parsed
/// request, or the error reply to send.
fn read_request(stream: &UnixStream) -> std::io::Result<Result<Request, Reply>> {
    let mut line = Vec::new();
    BufReader::new(stream)
        .take(MAX_REQUEST as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if line.len() > MAX_REQUEST {
        return Ok(Err(Reply::error(format!(
            "% Bad request on the control socket: longer than {MAX_REQUEST} bytes"
        ))));
    }
    let Ok(text) = std::str::from_utf8(&line) else {
        return Ok(Err(Reply::error(
            "% Bad request on the control socket: not UTF-8",
        )));
    };
    Ok(serde_json::from_str::<Request>(text)
        .map_err(|e| Reply::error(format!("% Bad request on the control socket: {e}"))))
}

fn write_reply(stream: &UnixStream, reply: &Reply) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut w = BufWriter::with_capacity(64 * 1024, stream);
    serde_json::to_writer(&mut w, reply)?;
    w.write_all(b"\n")?;
    w.flush()
}

fn serve_one(stream: UnixStream, handle: &dyn Fn(Request) -> Reply) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let reply = match read_request(&stream)? {
        Ok(req) => handle(req),
        Err(bad) => bad,
    };
    write_reply(&stream, &reply)?;
    Ok(())
}

/// Parse one command line and send it to the daemon at `path`; return its
/// reply. A line the grammar rejects is answered here, with the error that
/// names the word, without asking the daemon.
pub fn request(path: &Path, command: &str, json: bool) -> Result<Reply> {
    let cmd = match grammar::parse(command) {
        Ok(c) => c,
        Err(e) => return Ok(Reply::error(e.0)),
    };
    let stream = UnixStream::connect(path).with_context(|| {
        format!(
            "connecting to the control socket {} (is `xdpsec run` running, and are you root?)",
            path.display()
        )
    })?;
    // Generous: a show of 100,000 tunnels takes seconds to render.
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut w = &stream;
    serde_json::to_writer(
        &mut w,
        &Request {
            command: command.to_string(),
            json,
            cmd: Some(cmd),
        },
    )?;
    w.write_all(b"\n")?;
    // The reply streams in as the daemon encodes it: read it whole.
    let mut line = Vec::new();
    BufReader::with_capacity(256 * 1024, &stream)
        .read_until(b'\n', &mut line)
        .context("reading the daemon's reply")?;
    serde_json::from_slice(&line).context("reading the daemon's reply")
}
