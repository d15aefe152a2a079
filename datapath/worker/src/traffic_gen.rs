//! The traffic generator's framing (`xdpsec gen`): valid ESP under a
//! tunnel's outbound SA, built by the workers' own encapsulation
//! ([`crate::frame::encap_frame`]), so what the generator sends is what
//! xdpsec sends; mixed on request with unknown SPIs, replays, too-old
//! packets and corrupted ICVs. Control opens the sockets, reserves the
//! sequence numbers and paces the frames.
use std::{collections::VecDeque, net::IpAddr, sync::Arc};

use anyhow::{Result, anyhow, bail};
use xdpsec_datapath::{SaSnapshot, WorkerState};

use crate::frame::encap_frame;

/// Fractions of extra frames per valid frame (`--mix`).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Mix {
    /// A valid frame with its SPI replaced by one no SA has.
    pub unknown_spi: f64,
    /// A copy of a frame sent moments ago (a duplicate for the receiver).
    pub replay: f64,
    /// A copy of a frame sent long ago (older than any replay window).
    pub old: f64,
    /// A valid frame with its last ICV byte flipped.
    pub bad_icv: f64,
}

impl Mix {
    /// Parse `unknown-spi=F,replay=F,old=F,bad-icv=F` (any subset).
    pub fn parse(s: &str) -> Result<Mix> {
        let mut m = Mix::default();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("--mix: `{part}` is not NAME=FRACTION"))?;
            let f: f64 = v
                .parse()
                .ok()
                .filter(|f: &f64| f.is_finite() && *f >= 0.0 && *f <= 100.0)
                .ok_or_else(|| anyhow!("--mix: {k}={v}: give a fraction from 0 to 100"))?;
            match k {
                "unknown-spi" => m.unknown_spi = f,
                "replay" => m.replay = f,
                "old" => m.old = f,
                "bad-icv" => m.bad_icv = f,
                _ => bail!("--mix: unknown kind `{k}`: give unknown-spi, replay, old or bad-icv"),
            }
        }
        Ok(m)
    }
}

/// What was sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Valid frames.
    pub valid: u64,
    /// Unknown-SPI frames.
    pub unknown_spi: u64,
    /// Replayed frames.
    pub replay: u64,
    /// Too-old frames.
    pub old: u64,
    /// Corrupted-ICV frames.
    pub bad_icv: u64,
}

impl Sent {
    /// Frames of every kind.
    pub fn total(&self) -> u64 {
        self.valid + self.unknown_spi + self.replay + self.old + self.bad_icv
    }
}

/// The kind of one generated frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Valid ESP under the tunnel's SA.
    Valid,
    /// Valid, with an SPI no SA of the tunnel has.
    UnknownSpi,
    /// A copy of the last valid frame.
    Replay,
    /// A copy of a valid frame older than the replay window.
    Old,
    /// Valid, with its last ICV byte flipped.
    BadIcv,
}

impl Kind {
    /// Whether building it encrypts (uses a sequence number); replays and
    /// old frames are copies.
    pub fn encrypts(self) -> bool {
        !matches!(self, Kind::Replay | Kind::Old)
    }
}

/// How many valid frames beyond the tunnel's replay window an "old" frame
/// is taken from (the receiver is assumed to use the same window; with a
/// larger one it counts the frame as a duplicate instead).
const OLD_MARGIN: usize = 32;

/// The tunnel a [`Framer`] sends on.
pub struct GenTunnel {
    /// Its tunnel index in `snap`.
    pub index: u32,
    /// A snapshot with its outbound SA.
    pub snap: Arc<SaSnapshot>,
    /// Next-hop and local MAC.
    pub macs: [[u8; 6]; 2],
    /// UDP-encapsulated ESP (else plain ESP).
    pub udp: bool,
    /// The outbound SA's SPI.
    pub spi: u32,
    /// Its replay window (the receiver's, assumed the same).
    pub replay_window: u32,
}

/// Builds the generator's frames, one at a time, into its own buffer.
pub struct Framer {
    ws: WorkerState,
    tunnel: GenTunnel,
    /// Inner source and destination.
    inner: (IpAddr, IpAddr),
    /// Inner UDP payload bytes.
    size: usize,
    mix: Mix,
    /// Extra frames owed (fractions accrue per valid frame sent).
    owed: Mix,
    /// Recent valid frames, for replays and too-old copies.
    history: VecDeque<Vec<u8>>,
    old_distance: usize,
    frame: Vec<u8>,
}

impl Framer {
    /// Frames on `tunnel` from `inner.0` to `inner.1` with `size` payload
    /// bytes, mixed with extras as `mix` says.
    pub fn new(tunnel: GenTunnel, inner: (IpAddr, IpAddr), size: usize, mix: Mix) -> Framer {
        Framer {
            ws: WorkerState::new(0),
            old_distance: tunnel.replay_window.max(64) as usize + OLD_MARGIN,
            tunnel,
            inner,
            size,
            mix,
            owed: Mix::default(),
            history: VecDeque::new(),
            frame: vec![0u8; 2048],
        }
    }

    /// Which kind the next frame is: owed extras first.
    pub fn pick(&mut self) -> Kind {
        let owed = &mut self.owed;
        if owed.unknown_spi >= 1.0 {
            owed.unknown_spi -= 1.0;
            Kind::UnknownSpi
        } else if owed.replay >= 1.0 && !self.history.is_empty() {
            owed.replay -= 1.0;
            Kind::Replay
        } else if owed.old >= 1.0 && self.history.len() > self.old_distance {
            owed.old -= 1.0;
            Kind::Old
        } else if owed.bad_icv >= 1.0 {
            owed.bad_icv -= 1.0;
            Kind::BadIcv
        } else {
            Kind::Valid
        }
    }

    /// Build a frame of `kind` (the `n`th frame: its inner payload's
    /// pattern); `None` when the SA refused to encapsulate (the core
    /// counted it).
    pub fn build(&mut self, kind: Kind, n: u64) -> Option<&[u8]> {
        let len = match kind {
            Kind::Replay => self.copy(self.history.len() - 1),
            Kind::Old => self.copy(self.history.len() - 1 - self.old_distance),
            _ => {
                let (src, dst) = self.inner;
                let inner = inner_packet(src, dst, self.size, n);
                let t = &self.tunnel;
                let n = encap_frame(
                    &mut self.ws,
                    &t.snap,
                    t.index,
                    &inner,
                    t.macs,
                    &mut self.frame,
                )?;
                if kind == Kind::Valid {
                    self.history.push_back(self.frame[..n].to_vec());
                    if self.history.len() > self.old_distance + 1 {
                        self.history.pop_front();
                    }
                }
                n
            }
        };
        let frame = &mut self.frame[..len];
        let off = esp_offset(frame, self.tunnel.udp);
        match kind {
            Kind::UnknownSpi => {
                // An SPI no SA of the tunnel has: the tunnel's own, inverted.
                let spi = !self.tunnel.spi | 0x100;
                frame[off..off + 4].copy_from_slice(&spi.to_be_bytes());
            }
            Kind::BadIcv => frame[len - 1] ^= 0x01,
            _ => {}
        }
        Some(frame)
    }

    /// A frame of `kind` was sent: count it; a valid one owes the mix's
    /// extras.
    pub fn count(&mut self, kind: Kind, sent: &mut Sent) {
        match kind {
            Kind::Valid => {
                sent.valid += 1;
                self.owed.unknown_spi += self.mix.unknown_spi;
                self.owed.replay += self.mix.replay;
                self.owed.old += self.mix.old;
                self.owed.bad_icv += self.mix.bad_icv;
            }
            Kind::UnknownSpi => sent.unknown_spi += 1,
            Kind::Replay => sent.replay += 1,
            Kind::Old => sent.old += 1,
            Kind::BadIcv => sent.bad_icv += 1,
        }
    }

    /// Copy history frame `i` into the buffer; its length.
    fn copy(&mut self, i: usize) -> usize {
        let f = &self.history[i];
        self.frame[..f.len()].copy_from_slice(f);
        f.len()
    }
}

/// An inner IPv4/IPv6 UDP packet from `src` to `dst` with `size` payload bytes.
fn inner_packet(src: IpAddr, dst: IpAddr, size: usize, n: u64) -> Vec<u8> {
    let payload: Vec<u8> = (0..size).map(|i| (n as usize + i) as u8).collect();
    use xdpsec_datapath::wire::checksum as cks;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            xdpsec_datapath::wire::build_udp_v4(s, d, 0, 64, 9000, 9, &payload)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ulen = (8 + size) as u16;
            let mut udp = Vec::with_capacity(8 + size);
            udp.extend_from_slice(&9000u16.to_be_bytes());
            udp.extend_from_slice(&9u16.to_be_bytes());
            udp.extend_from_slice(&ulen.to_be_bytes());
            udp.extend_from_slice(&[0, 0]);
            udp.extend_from_slice(&payload);
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&ulen.to_be_bytes());
            p.extend_from_slice(&[17, 64]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            let u = !cks::combine(
                cks::pseudo_header_v6(&s, &d, u32::from(ulen), 17),
                cks::sum(&udp),
            );
            udp[6..8].copy_from_slice(&(if u == 0 { 0xffff } else { u }).to_be_bytes());
            p.extend_from_slice(&udp);
            p
        }
        _ => unreachable!("inner families checked by the caller"),
    }
}

/// Offset of the ESP header in an Ethernet frame built for this tunnel.
fn esp_offset(frame: &[u8], udp: bool) -> usize {
    let ip = if frame.get(14).is_some_and(|b| b >> 4 == 6) {
        40
    } else {
        20
    };
    14 + ip + if udp { 8 } else { 0 }
}
