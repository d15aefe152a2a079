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
//! file, fsync, rename, fsync the directory). An SD-WAN key (derived from a
//! peer TLOC's random key, which the peer replaces at every rekey, at most
//! every 14 days) is *ephemeral*: its line also carries `sdwan <unix time
//! of its last reservation>`, and it is pruned once unused for
//! [`EPHEMERAL_KEEP`], so daily rekeys do not grow the file without bound.
//! Manual keys (from the config, which may come back) are never pruned.
//!
//! The daemon's owner thread never writes the file itself: it changes the
//! reservations in memory and hands a [`SeqWrite`] (the whole file at one
//! generation) to its shell, which writes it on its own thread and reports
//! the generation back; only then does the owner let SAs use the numbers
//! (see `owner/reserve.rs`). Start-up writes synchronously
//! ([`SeqStore::commit`]) before anything is published.
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

/// An ephemeral (SD-WAN) key's reservation is dropped after this long
/// without a new reservation: far beyond the longest rekey interval a peer
/// may have (`rekey_seconds` at most 14 days) plus the longest graceful
/// restart (7 days), so a key that could still be in use or come back is
/// never pruned.
pub const EPHEMERAL_KEEP: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

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
    /// Ephemeral keys: unix time of their last reservation.
    ephemeral: HashMap<KeyId, u64>,
    dirty: bool,
    /// Counts in-memory changes: a [`SeqWrite`] of generation `g` holds
    /// every reservation made up to `g`.
    generation: u64,
    /// The generation [`SeqStore::commit`] last wrote.
    committed: u64,
}

/// The whole reservation file at one generation, to be written durably
/// (by the owner's shell, off the owner's thread).
#[derive(Clone, PartialEq, Eq)]
pub struct SeqWrite {
    /// The in-memory generation this text holds.
    pub generation: u64,
    dir: PathBuf,
    text: String,
}

impl std::fmt::Debug for SeqWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeqWrite")
            .field("generation", &self.generation)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SeqWrite {
    /// Replace the file atomically and durably (temporary file, fsync,
    /// rename, fsync the directory). Writes of one store must be done in
    /// generation order, by one thread at a time.
    pub fn write(&self) -> Result<()> {
        let path = self.dir.join(FILE_NAME);
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(self.text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().with_context(|| format!("writing {}", path.display()))
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long [`SeqStore::open`] tries to take the state directory's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

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
        // A lock this process let go of can stay held a moment longer: a
        // child that a thread of ours (or of the daemon that held it)
        // was starting then shares the open file until its exec closes it
        // (CLOEXEC). So "in use" only after LOCK_WAIT of trying; a daemon
        // that really holds it holds it longer.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        // SAFETY: flock on a file descriptor we own.
        while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            if std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            bail!(
                "state_dir {} is in use by another xdpsec: give each daemon its own `state_dir` (sharing sequence reservations would repeat AEAD nonces)",
                dir.display()
            );
        }
        let path = dir.join(FILE_NAME);
        let mut reserved = HashMap::new();
        let mut ephemeral = HashMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let parsed = match f.as_slice() {
                        [k, v] => Some((KeyId::parse(k), v.parse::<u64>().ok(), None)),
                        [k, v, "sdwan", t] => Some((
                            KeyId::parse(k),
                            v.parse::<u64>().ok(),
                            t.parse::<u64>().ok(),
                        )),
                        _ => None,
                    };
                    let ok = parsed.and_then(|(k, v, t)| match (k, v, t, f.len()) {
                        (Some(k), Some(v), None, 2) => Some((k, v, None)),
                        (Some(k), Some(v), Some(t), 4) => Some((k, v, Some(t))),
                        _ => None,
                    });
                    let Some((k, v, t)) = ok else {
                        bail!(
                            "{} line {}: not `<fingerprint> <sequence>`; the outbound sequence reservations are damaged: restore the file, or rekey every manual tunnel and remove it",
                            path.display(),
                            n + 1
                        );
                    };
                    let e = reserved.entry(k).or_insert(0);
                    *e = (*e).max(v);
                    if let Some(t) = t {
                        ephemeral.insert(k, t);
                    }
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
            ephemeral,
            dirty: false,
            generation: 0,
            committed: 0,
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
            self.generation += 1;
            if let Some(t) = self.ephemeral.get_mut(&key) {
                *t = unix_now();
            }
        }
    }

    /// Marks `key` ephemeral (an SD-WAN key): pruned once unused for
    /// [`EPHEMERAL_KEEP`]. Its use starts now.
    pub fn mark_ephemeral(&mut self, key: KeyId) {
        self.ephemeral.insert(key, unix_now());
        self.dirty = true;
        self.generation += 1;
    }

    /// The generation of the latest in-memory change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The file as it stands, if anything changed since the last
    /// [`SeqStore::take_write`] (the caller must write it, or call
    /// [`SeqStore::write_failed`]).
    pub fn take_write(&mut self) -> Option<SeqWrite> {
        if !self.dirty {
            return None;
        }
        self.prune(unix_now());
        self.dirty = false;
        Some(SeqWrite {
            generation: self.generation,
            dir: self.dir.clone(),
            text: self.render(),
        })
    }

    /// A write handed out by [`SeqStore::take_write`] failed: the next
    /// [`SeqStore::take_write`] tries again.
    pub fn write_failed(&mut self) {
        self.dirty = true;
    }

    /// Drops ephemeral keys unused since before `now - EPHEMERAL_KEEP`.
    fn prune(&mut self, now: u64) {
        let cutoff = now.saturating_sub(EPHEMERAL_KEEP.as_secs());
        let old: Vec<KeyId> = self
            .ephemeral
            .iter()
            .filter(|(_, t)| **t < cutoff)
            .map(|(k, _)| *k)
            .collect();
        for k in old {
            self.ephemeral.remove(&k);
            self.reserved.remove(&k);
        }
    }

    /// Write the reservations durably on this thread (a no-op when
    /// nothing changed): start-up, before anything is published.
    pub fn commit(&mut self) -> Result<()> {
        let Some(w) = self.take_write() else {
            return Ok(());
        };
        w.write().inspect_err(|_| self.write_failed())?;
        self.committed = w.generation;
        Ok(())
    }

    /// The generation [`SeqStore::commit`] last wrote (what start-up made
    /// durable before anything was published).
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The file's text.
    fn render(&self) -> String {
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
            if let Some(t) = self.ephemeral.get(k) {
                text.push_str(&format!(" sdwan {t}"));
            }
            text.push('\n');
        }
        text
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

    /// A store dropped while another thread was starting a child (which
    /// shares the lock's open file from fork until its exec) opens again:
    /// the lock is waited for, not refused at once (seen in CI: the owner
    /// test that reopens the store after a "crash" failed with "in use"
    /// while another test spawned a process).
    #[test]
    fn a_lock_held_by_a_starting_child_is_waited_for() {
        use std::os::unix::process::CommandExt;
        let d = tmpdir("child");
        let s = SeqStore::open(&d).unwrap();
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the array we own.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let [rd, wr] = fds;
        let child = std::thread::spawn(move || {
            let mut c = std::process::Command::new("true");
            // SAFETY: between fork and exec only write and nanosleep,
            // both async-signal-safe: tell the parent, then hold the fds
            // (the lock's among them) 300 ms before the exec.
            unsafe {
                c.pre_exec(move || {
                    libc::write(wr, b"x".as_ptr().cast(), 1);
                    let t = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 300_000_000,
                    };
                    libc::nanosleep(&t, std::ptr::null_mut());
                    Ok(())
                });
            }
            c.status().unwrap()
        });
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into our buffer.
        assert_eq!(unsafe { libc::read(rd, b.as_mut_ptr().cast(), 1) }, 1);
        drop(s);
        let again = SeqStore::open(&d);
        assert!(child.join().unwrap().success());
        // SAFETY: closing the pipe's ends, ours.
        unsafe {
            libc::close(rd);
            libc::close(wr);
        }
        again.unwrap();
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
    fn ephemeral_keys_are_pruned_after_long_disuse_manual_ones_never() {
        let d = tmpdir("prune");
        std::fs::create_dir_all(&d).unwrap();
        let (manual, fresh, stale) = (
            KeyId::of(&[1; 36]),
            KeyId::of(&[2; 36]),
            KeyId::of(&[3; 36]),
        );
        let now = unix_now();
        let old = now - EPHEMERAL_KEEP.as_secs() - 10;
        std::fs::write(
            d.join(FILE_NAME),
            format!(
                "{} 100\n{} 200 sdwan {}\n{} 300 sdwan {old}\n",
                manual.hex(),
                fresh.hex(),
                now - 3600,
                stale.hex()
            ),
        )
        .unwrap();
        let mut s = SeqStore::open(&d).unwrap();
        assert_eq!(s.reserved(stale), 300, "read back before pruning");
        let k = KeyId::of(&[4; 36]);
        start(&mut s, k);
        s.mark_ephemeral(k);
        s.commit().unwrap();
        drop(s);
        let s = SeqStore::open(&d).unwrap();
        assert_eq!(s.reserved(manual), 100);
        assert_eq!(s.reserved(fresh), 200);
        assert_eq!(s.reserved(stale), 0, "pruned");
        assert_eq!(s.reserved(k), BLOCK);
        let text = std::fs::read_to_string(d.join(FILE_NAME)).unwrap();
        assert_eq!(
            text.lines().filter(|l| !l.starts_with('#')).count(),
            3,
            "{text}"
        );
        assert!(text.contains(&format!("{} 100\n", manual.hex())), "{text}");
        // A damaged ephemeral line still stops start-up.
        drop(s);
        std::fs::write(d.join(FILE_NAME), format!("{} 1 sdwan\n", manual.hex())).unwrap();
        assert!(SeqStore::open(&d).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn fingerprints_differ_per_key() {
        assert_ne!(KeyId::of(&[1; 20]), KeyId::of(&[2; 20]));
        let k = KeyId::of(b"k");
        assert_eq!(KeyId::parse(&k.hex()), Some(k));
    }
}
