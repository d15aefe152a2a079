//! Frames the workers encrypted while their tunnel's next hop had no MAC
//! (a peer that appeared on the link after the last pass over the next
//! hops): held here, as a router holds a packet while ARP or neighbour
//! discovery runs, instead of dropped.
//!
//! The next-hop thread takes them as they come, resolves their next hops
//! at once (one route and neighbour dump for the tunnels concerned; the
//! kernel is made to solicit those it lacks), and sends each frame with
//! the MAC written in through a packet socket on the underlay interface:
//! the very frame AF_XDP would have sent. A frame whose next hop is still
//! unknown after [`HOLD_FOR`] (or that the socket refuses) is dropped and
//! counted once as OUT_SETTING_WRONG_L2_HDR, in the next-hop thread's own
//! drop counters. Re-dumps follow at 2, 4, 8, ... ms, at most every 100 ms.
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use tracing::debug;
use xdpsec_datapath::DropReason;
use xdpsec_worker::neighbors::HeldFrame;

use super::NextHops;

/// How long a frame waits for its next hop's MAC (the kernel's first
/// solicitation and its retransmission at 1 s fit).
pub const HOLD_FOR: Duration = Duration::from_millis(1500);
/// The first re-dump after a solicitation; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(2);
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// The frames waiting, and the socket that sends them.
pub struct HeldFrames {
    ifname: String,
    ifindex: u32,
    /// AF_PACKET, for sending only (protocol 0: it receives nothing).
    sock: Option<OwnedFd>,
    /// Each frame and when it is given up.
    frames: Vec<(Instant, HeldFrame)>,
    backoff: Duration,
    /// When to look again (frames waiting).
    due: Option<Instant>,
}

impl HeldFrames {
    /// For the underlay interface `ifname`.
    pub fn new(ifname: &str) -> HeldFrames {
        let ifindex = crate::ifindex(ifname).unwrap_or(0);
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        let sock = if fd >= 0 {
            // SAFETY: a fresh fd nobody else owns.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        } else {
            let e = std::io::Error::last_os_error();
            tracing::warn!(interface = ifname, error = %e, "no packet socket for frames held for a next hop: they will be dropped");
            None
        };
        HeldFrames {
            ifname: ifname.to_string(),
            ifindex,
            sock,
            frames: Vec::new(),
            backoff: FIRST_BACKOFF,
            due: None,
        }
    }

    /// How long the thread may wait before [`HeldFrames::serve`] is due
    /// again (`idle` when no frame waits).
    pub fn wait(&self, now: Instant, idle: Duration) -> Duration {
        self.due
            .map_or(idle, |d| d.saturating_duration_since(now).min(idle))
    }

    /// Take the frames the workers held since the last call, resolve the
    /// next hops they wait for, send those now known, drop those expired.
    pub fn serve(&mut self, nh: &NextHops, now: Instant) {
        let new: Vec<HeldFrame> = nh.macs.held().try_iter().collect();
        let fresh = !new.is_empty();
        self.frames
            .extend(new.into_iter().map(|f| (now + HOLD_FOR, f)));
        if self.frames.is_empty() {
            self.due = None;
            self.backoff = FIRST_BACKOFF;
            return;
        }
        if !fresh && self.due.is_some_and(|d| now < d) {
            return;
        }
        let mut tunnels: Vec<u32> = self
            .frames
            .iter()
            .map(|(_, f)| f.tunnel)
            .filter(|&t| nh.get(t as usize).is_none_or(|m| m.get().is_none()))
            .collect();
        tunnels.sort_unstable();
        tunnels.dedup();
        let found = if tunnels.is_empty() {
            Vec::new()
        } else {
            nh.resolve_some(&self.ifname, &tunnels)
        };
        let mac_of = |t: u32| {
            found
                .iter()
                .find_map(|&(x, m)| (x == t).then_some(m))
                .or_else(|| nh.get(t as usize).and_then(|m| m.get()))
        };
        let frames = std::mem::take(&mut self.frames);
        for (deadline, mut f) in frames {
            let mac = mac_of(f.tunnel);
            match mac {
                Some(mac) => {
                    if self.send(&mut f.frame, mac) {
                        nh.held_sent.fetch_add(1, Ordering::Relaxed);
                        nh.macs.release(f.tunnel);
                    } else {
                        drop_held(nh, f.tunnel);
                    }
                }
                None if now >= deadline => {
                    debug!(tunnel = f.tunnel, "held frame dropped: no next-hop MAC");
                    drop_held(nh, f.tunnel);
                }
                None => self.frames.push((deadline, f)),
            }
        }
        // Published after the held frames left: the workers' next frames
        // go straight through AF_XDP, behind them.
        for (t, mac) in found {
            if let Some(slot) = nh.get(t as usize) {
                slot.set(Some(mac));
            }
        }
        if self.frames.is_empty() {
            self.due = None;
            self.backoff = FIRST_BACKOFF;
        } else {
            self.due = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Drop (and count) every frame still waiting: the daemon stops.
    pub fn drop_all(&mut self, nh: &NextHops) {
        self.serve(nh, Instant::now());
        for (_, f) in self.frames.drain(..) {
            drop_held(nh, f.tunnel);
        }
    }

    /// Send `frame` to `mac` out of the underlay interface.
    fn send(&self, frame: &mut [u8], mac: [u8; 6]) -> bool {
        let (Some(sock), Some(dst)) = (&self.sock, frame.get_mut(..6)) else {
            return false;
        };
        dst.copy_from_slice(&mac);
        // SAFETY: zeroed sockaddr_ll is valid; the fields are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = u16::from_be_bytes([frame[12], frame[13]]).to_be();
        sll.sll_ifindex = self.ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&mac);
        // SAFETY: the buffer and the address are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
                std::ptr::addr_of!(sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            debug!(interface = %self.ifname, error = %std::io::Error::last_os_error(), "held frame not sent");
        }
        n == frame.len() as isize
    }
}

/// A held frame of `tunnel` given up: counted once as
/// OUT_SETTING_WRONG_L2_HDR, and the tunnel's hold slot released.
fn drop_held(nh: &NextHops, tunnel: u32) {
    nh.held_drops.bump(DropReason::OutSettingWrongL2Hdr);
    nh.macs.release(tunnel);
}
