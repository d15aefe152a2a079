//! Outbound sequence number reservations that survive restarts.
//!
//! With AES-GCM and ChaCha20-Poly1305 in ESP the nonce is salt || sequence
//! number (RFC 4106 section 3.1, RFC 7634 section 2), so a manual key that
//! sends sequence number N twice reuses a nonce: that leaks plaintext and
//! lets an attacker forge (RFC 4106 section 8, RFC 8221 section 5). The
//! datapath may only use numbers up to a limit the control plane has
//! written to disk first (a *reservation*). After a restart or a crash an SA
//! resumes above its last reservation, so no number is ever sent twice
//! under one key; at worst a block of numbers goes unused.
//!
//! Reservations are kept per key, not per SPI or tunnel name: what must not
//! repeat is the nonce under a key. The file stores a fingerprint of the key
//! (SHA-256 under a fixed label, truncated), never the key.
//!
//! The file (`<state_dir>/sequences`) is one line per key,
//! `<fingerprint hex> <reserved>`, replaced atomically (write a temporary
//! file, fsync, rename, fsync the directory).
use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{self, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

/// Sequence numbers reserved per step. At 1 Mpps on one SA that is about
/// one small file write a second; a crash skips at most this many numbers.
pub const BLOCK: u64 = 1 << 20;

/// A new reservation is made when fewer than this many reserved numbers
/// are left (the owner checks every tick), so the datapath never waits.
pub const LOW_WATER: u64 = BLOCK / 2;

/// Name of the reservation file inside `state_dir`.
pub const FILE_NAME: &str = "sequences";

/// Fingerprint of an outbound key (key || salt): identifies its reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 16]);

impl KeyId {
    /// The fingerprint of `key` (never reversible to the key).
    pub fn of(key: &[u8]) -> KeyId {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"xdpsec outbound sequence reservation v1\0");
        ctx.update(key);
        let d = ctx.finish();
        let mut id = [0u8; 16];
        id.copy_from_slice(&d.as_ref()[..16]);
        KeyId(id)
    }

    fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn parse(s: &str) -> Option<KeyId> {
        if s.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(KeyId(id))
    }
}

/// The reservations on disk and in memory.
#[derive(Debug)]
pub struct SeqStore {
    dir: PathBuf,
    /// Holds the directory's lock (`flock`) while this daemon runs: two
    /// daemons sharing reservations would hand out the same numbers.
    _lock: File,
    reserved: HashMap<KeyId, u64>,
    dirty: bool,
}

impl SeqStore {
    /// Open (creating, mode 0700) `dir` and read its reservations. A file
    /// that cannot be read is an error: starting anyway could reuse nonces.
    pub fn open(dir: &Path) -> Result<SeqStore> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating state_dir {}", dir.display()))?;
        // Also when it existed: reservations are nobody else's business.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting state_dir {} to mode 0700", dir.display()))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!(
                "state_dir {} is in use by another xdpsec: give each daemon its own `state_dir` (sharing sequence reservations would repeat AEAD nonces)",
                dir.display()
            );
        }
        let path = dir.join(FILE_NAME);
        let mut reserved = HashMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let parsed = line
                        .split_once(' ')
                        .and_then(|(k, v)| Some((KeyId::parse(k)?, v.trim().parse::<u64>().ok()?)));
                    let Some((k, v)) = parsed else {
                        bail!(
                            "{} line {}: not `<fingerprint> <sequence>`; the outbound sequence reservations are damaged: restore the file, or rekey every manual tunnel and remove it",
                            path.display(),
                            n + 1
                        );
                    };
                    let e = reserved.entry(k).or_insert(0);
                    *e = (*e).max(v);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", path.display()));
            }
        }
        Ok(SeqStore {
            dir: dir.to_path_buf(),
            _lock: lock,
            reserved,
            dirty: false,
        })
    }

    /// The highest sequence number ever reserved for `key` (0 if none): an
    /// SA with this key must start above it.
    pub fn reserved(&self, key: KeyId) -> u64 {
        self.reserved.get(&key).copied().unwrap_or(0)
    }

    /// Reserve numbers up to `upto` for `key` (never lowers a reservation).
    /// Not durable until [`SeqStore::commit`] returned Ok.
    pub fn reserve(&mut self, key: KeyId, upto: u64) {
        let e = self.reserved.entry(key).or_insert(0);
        if upto > *e {
            *e = upto;
            self.dirty = true;
        }
    }

    /// Write the reservations durably (a no-op when nothing changed).
    pub fn commit(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let path = self.dir.join(FILE_NAME);
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut text = String::with_capacity(self.reserved.len() * 48 + 128);
        text.push_str(
            "# xdpsec outbound sequence reservations: <key fingerprint> <highest reserved>\n# Do not edit: lowering a number makes AEAD nonces repeat.\n",
        );
        let mut rows: Vec<_> = self.reserved.iter().collect();
        rows.sort_unstable_by_key(|(k, _)| k.0);
        for (k, v) in rows {
            text.push_str(&k.hex());
            text.push(' ');
            text.push_str(&v.to_string());
            text.push('\n');
        }
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().with_context(|| format!("writing {}", path.display()))?;
        self.dirty = false;
        Ok(())
    }
}

/// Where an outbound SA with a manual key starts, and the first limit:
/// `(last_seq, limit)`. The first packet carries `last_seq + 1`.
pub fn start(store: &mut SeqStore, key: KeyId) -> (u64, u64) {
    let last = store.reserved(key);
    let limit = last.saturating_add(BLOCK);
    store.reserve(key, limit);
    (last, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xdpsec-seq-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn reservations_survive_reopen_and_never_go_down() {
        let d = tmpdir("reopen");
        let k1 = KeyId::of(&[1; 36]);
        let k2 = KeyId::of(&[2; 36]);
        let mut s = SeqStore::open(&d).unwrap();
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(start(&mut s, k1), (0, BLOCK));
        s.reserve(k2, 5);
        s.reserve(k2, 3); // never lowered
        s.commit().unwrap();
        // A second daemon on the same directory is refused.
        let e = SeqStore::open(&d).unwrap_err().to_string();
        assert!(e.contains("in use by another xdpsec"), "{e}");
        // A "crash": the in-memory store is gone, the file stays.
        drop(s);
        let mut s = SeqStore::open(&d).unwrap();
        assert_eq!(s.reserved(k2), 5);
        // The SA resumes above its last reservation.
        assert_eq!(start(&mut s, k1), (BLOCK, 2 * BLOCK));
        s.commit().unwrap();
        drop(s);
        let s = SeqStore::open(&d).unwrap();
        assert_eq!(s.reserved(k1), 2 * BLOCK);
        let text = std::fs::read_to_string(d.join(FILE_NAME)).unwrap();
        assert!(!text.contains("0101010101"), "{text}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_damaged_file_stops_start_up() {
        let d = tmpdir("damaged");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(FILE_NAME), "zz 12\n").unwrap();
        let e = SeqStore::open(&d).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("damaged"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn fingerprints_differ_per_key() {
        assert_ne!(KeyId::of(&[1; 20]), KeyId::of(&[2; 20]));
        let k = KeyId::of(b"k");
        assert_eq!(KeyId::parse(&k.hex()), Some(k));
    }
}
