//! The control socket: a Unix stream socket (mode 0600) taking one request
//! per connection. Request and reply are one JSON line each:
//! `{"command":"show ...","json":false}` -> `{"ok":true,"output":"..."}`.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// A request sent by `xdpsec cli`.
#[derive(Serialize, Deserialize, Debug)]
pub struct Request {
    /// The IOS-style command line.
    pub command: String,
    /// Whether the reply should be JSON instead of IOS text.
    #[serde(default)]
    pub json: bool,
}

/// The daemon's reply.
#[derive(Serialize, Deserialize, Debug)]
pub struct Reply {
    /// False when the command was rejected (`% Invalid input ...`) or failed.
    pub ok: bool,
    /// Text to print.
    pub output: String,
}

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

    /// Serve requests with `handle` until `stop()` returns true (checked between requests).
    pub fn serve(&self, stop: impl Fn() -> bool, mut handle: impl FnMut(&Request) -> Reply) {
        self.listener
            .set_nonblocking(true)
            .expect("setting the control socket non-blocking");
        while !stop() {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let _ = serve_one(stream, &mut handle);
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

fn serve_one(stream: UnixStream, handle: &mut impl FnMut(&Request) -> Reply) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) => handle(&req),
        Err(e) => Reply {
            ok: false,
            output: format!("% Bad request on the control socket: {e}"),
        },
    };
    let mut w = &stream;
    serde_json::to_writer(&mut w, &reply)?;
    w.write_all(b"\n")?;
    Ok(())
}

/// Send one command to the daemon at `path` and return its reply.
pub fn request(path: &Path, command: &str, json: bool) -> Result<Reply> {
    let stream = UnixStream::connect(path).with_context(|| {
        format!(
            "connecting to the control socket {} (is `xdpsec run` running, and are you root?)",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = &stream;
    serde_json::to_writer(
        &mut w,
        &Request {
            command: command.to_string(),
            json,
        },
    )?;
    w.write_all(b"\n")?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    serde_json::from_str(&line).context("reading the daemon's reply")
}
