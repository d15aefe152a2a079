//! Early drop of unknown SPIs in XDP, as the owner runs it.
//!
//! The XDP program drops ESP whose SPI no inbound SA has (for any peer)
//! before it reaches userspace, so an invalid-SPI flood costs no userspace
//! CPU. Control keeps the program's SPI map in step with the SA table (the
//! table's [`xdpsec_datapath::sa::SpiObserver`], told before each publish),
//! mirrors the program's drop counters into the drop table's rows 4/12 and
//! 1/9, and turns its sampled drops into the same rate-limited
//! `%CRYPTO-4-RECVD_PKT_INV_SPI` lines (and IKE invalid-SPI inputs) as drops
//! found in userspace.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracing::error;
use xdpsec_common::{SpiSample, XdpCounter};
use xdpsec_datapath::{DropReason, SaSnapshot, events::DropEvent};

use super::Owner;

/// Samples taken from the ring per tick at most (the program sends at most
/// 1000 a second per CPU; the ring holds about 1400).
const SAMPLES_PER_TICK: usize = 4096;

/// The XDP counters mirrored into drop table rows.
const MIRRORED: [(XdpCounter, DropReason); 4] = [
    (XdpCounter::DropUnknownSpiV4, DropReason::InV4SaNotFoundSpi),
    (XdpCounter::DropUnknownSpiV6, DropReason::InV6SaNotFoundSpi),
    (XdpCounter::DropDeletedSpiV4, DropReason::InV4HitInvalidSa),
    (XdpCounter::DropDeletedSpiV6, DropReason::InV6HitInvalidSa),
];

/// The drop event userspace would have recorded for a sampled frame.
pub fn sample_event(s: &SpiSample, snap: &SaSnapshot, now: std::time::Duration) -> DropEvent {
    let (src, dst) = (SpiSample::addr_bytes(s.src), SpiSample::addr_bytes(s.dst));
    let (src, dst) = if s.family == 6 {
        (
            IpAddr::V6(Ipv6Addr::from(src)),
            IpAddr::V6(Ipv6Addr::from(dst)),
        )
    } else {
        let v4 = |a: [u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
        (v4(src), v4(dst))
    };
    let v6 = s.family == 6;
    // Named as the pipeline names them (pipeline.rs classify): the deleted
    // SA's tunnel, or the tunnel terminating at the destination.
    let (reason, tunnel) = if s.deleted != 0 {
        (
            if v6 {
                DropReason::InV6HitInvalidSa
            } else {
                DropReason::InV4HitInvalidSa
            },
            snap.recently_deleted(s.spi, now).map(|d| d.tunnel),
        )
    } else {
        (
            if v6 {
                DropReason::InV6SaNotFoundSpi
            } else {
                DropReason::InV4SaNotFoundSpi
            },
            snap.endpoint_tunnel(dst, (s.dport != 0).then_some(s.dport)),
        )
    };
    DropEvent {
        reason,
        spi: s.spi,
        src,
        dst,
        tunnel,
        sa: None,
        inner: None,
    }
}

impl Owner {
    /// Whether early drop should be armed now: configured
    /// (`underlay.early_drop`) and no drop capture or packet trace armed
    /// ([`Owner::early_drop_hold`]), which must see every frame.
    pub(super) fn early_drop_wanted(&self) -> bool {
        self.config.underlay.early_drop && !self.early_drop_hold
    }

    /// Arm or disarm early drop as [`Owner::early_drop_wanted`] says (a
    /// no-op when nothing changed). Call after changing `early_drop_hold`.
    pub(super) fn sync_early_drop(&mut self) {
        let want = self.early_drop_wanted();
        let Some(s) = self.steering.as_mut() else {
            return;
        };
        match s.set_early_drop(want) {
            Ok(armed) => self.early_drop_armed = armed,
            Err(e) => error!("{e:#}"),
        }
    }

    /// Copy the XDP program's early-drop counters into the drop table's
    /// mirror row (before anything reads the table).
    pub(super) fn sync_xdp_drops(&mut self) {
        let Some(Ok(raw)) = self.steering.as_ref().map(|s| s.counters()) else {
            return;
        };
        for (c, reason) in MIRRORED {
            self.xdp_drops.store(reason, raw[c as usize]);
        }
    }

    /// Tick work: re-check the switch (the SPI map may have failed), mirror
    /// the counters, and log the sampled drops. Returns the (peer, SPI)
    /// pairs of unknown SPIs seen, for IKE.
    pub(super) fn early_drop_tick(&mut self, unknown: &mut Vec<(IpAddr, u32)>) {
        // A trace that filled up ends by itself: early drop comes back.
        if self.early_drop_hold != self.taps.wants_every_frame() {
            self.taps_changed();
        } else if self.early_drop_armed {
            self.sync_early_drop();
        }
        self.sync_xdp_drops();
        let Some(s) = self.steering.as_mut() else {
            return;
        };
        let samples = s.drain_samples(SAMPLES_PER_TICK);
        if samples.is_empty() {
            return;
        }
        let now = self.now.duration_since(self.epoch);
        let snap = self.table.snapshot();
        for smp in &samples {
            let ev = sample_event(smp, &snap, now);
            if !unknown.contains(&(ev.src, ev.spi)) && unknown.len() < 64 {
                unknown.push((ev.src, ev.spi));
            }
            self.events.log_event(&ev, &mut self.log, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use xdpsec_datapath::sa::{LocalEndpoint, SaChange, SaTable};

    #[test]
    fn samples_become_the_events_userspace_records() {
        let mut t = SaTable::new();
        let local: IpAddr = "198.51.100.1".parse().unwrap();
        t.apply(
            vec![SaChange::SetEndpoints(vec![LocalEndpoint {
                addr: local,
                udp_port: Some(4500),
                tunnel: 3,
            }])],
            Duration::ZERO,
        )
        .unwrap();
        let mut s = SpiSample {
            spi: 0xdead,
            family: 4,
            deleted: 0,
            dport: 4500,
            sport: 4500,
            _pad: 0,
            src: [u32::from_ne_bytes([198, 51, 100, 2]) as u64, 0],
            dst: [u32::from_ne_bytes([198, 51, 100, 1]) as u64, 0],
        };
        let ev = sample_event(&s, &t.snapshot(), Duration::ZERO);
        assert_eq!(ev.reason, DropReason::InV4SaNotFoundSpi);
        assert_eq!(ev.src, "198.51.100.2".parse::<IpAddr>().unwrap());
        assert_eq!(ev.dst, local);
        assert_eq!(ev.tunnel, Some(3));
        // Plain ESP to the same address is another endpoint (none here).
        s.dport = 0;
        assert_eq!(sample_event(&s, &t.snapshot(), Duration::ZERO).tunnel, None);
        s.family = 6;
        s.deleted = 1;
        let o = "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets();
        s.src = [
            u64::from_ne_bytes(o[..8].try_into().unwrap()),
            u64::from_ne_bytes(o[8..].try_into().unwrap()),
        ];
        let ev = sample_event(&s, &t.snapshot(), Duration::ZERO);
        assert_eq!(ev.reason, DropReason::InV6HitInvalidSa);
        assert_eq!(ev.src, "2001:db8::2".parse::<IpAddr>().unwrap());
    }
}
