//! `xdpsec gen`: an AF_XDP ESP traffic generator for one configured manual
//! tunnel: valid ESP under the tunnel's outbound SA (its cipher, ESN, plain
//! or UDP-encapsulated, IPv4/IPv6), at a set rate or flat out, mixed on
//! request with unknown SPIs, replays, too-old packets and corrupted ICVs.
//!
//! Frames are built by the datapath's own encapsulation (the daemon's
//! `encap`, framed by `xdpsec_worker::traffic_gen`), so what the generator sends
//! is what xdpsec sends. Sequence
//! numbers come from the config's `state_dir` reservations, as the
//! daemon's: consecutive runs never reuse a nonce and are never replays.
//! It always stops by itself (count or duration; 10 s by default).
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use xdpsec_afxdp::{QueueConfig, XskQueue};
use xdpsec_datapath::{SaTable, sa::OutboundEntry};
use xdpsec_worker::traffic_gen::{Framer, GenTunnel};
pub use xdpsec_worker::traffic_gen::{Mix, Sent};

use crate::{
    config::{Config, Inside, TunnelKind},
    platform::neighbor::{self, NextHops},
    seqstore::{self, KeyId, SeqStore},
    state::tunnel_sa_changes,
};

/// What to send.
#[derive(Debug, Clone)]
pub struct GenArgs {
    /// The tunnel (default: the first manual one).
    pub tunnel: Option<String>,
    /// Inner UDP payload bytes.
    pub size: usize,
    /// Packets per second (None: flat out).
    pub rate: Option<f64>,
    /// Stop after this many frames.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Extra frames.
    pub mix: Mix,
    /// AF_XDP queues to send on.
    pub queues: u32,
    /// The first of them: frames go out on queues
    /// `first_queue..first_queue + queues`.
    pub first_queue: u32,
}

/// How many queues `iface` has that an AF_XDP socket can bind to (the
/// smaller of its rx and tx counts in sysfs); `None` when sysfs does not
/// show the interface: then the bind itself tells.
fn interface_queues(iface: &str) -> Option<u32> {
    xdpsec_platform::queue_counts(iface).map(|(rx, tx)| rx.min(tx))
}

/// The queues `--first-queue first --queues n` sends on, checked against
/// the `available` queues of `iface` (when known).
fn queue_range(
    first: u32,
    n: u32,
    iface: &str,
    available: Option<u32>,
) -> Result<std::ops::Range<u32>> {
    let end = first
        .checked_add(n)
        .ok_or_else(|| anyhow!("--first-queue {first}: too large"))?;
    match available {
        // The kernel binds an AF_XDP socket only to a queue below both the
        // rx and tx queue counts of the device.
        Some(have) if end > have => bail!(
            "--first-queue {first} --queues {n}: {iface} has {have} queue(s) (0-{}); it lacks queue {}",
            have.saturating_sub(1),
            have.max(first)
        ),
        _ => Ok(first..end),
    }
}

/// Run the generator for `config_path`; prints the result, returns it.
pub fn run(config_path: &Path, args: &GenArgs, json_out: bool) -> Result<Sent> {
    let cfg = Config::load(config_path).map_err(|e| anyhow!("{e}"))?;
    if args.queues == 0 || args.queues > crate::config::MAX_QUEUES {
        bail!(
            "--queues {}: give 1 to {} (TX queues of the underlay interface)",
            args.queues,
            crate::config::MAX_QUEUES
        );
    }
    let queues = queue_range(
        args.first_queue,
        args.queues,
        &cfg.underlay.interface,
        interface_queues(&cfg.underlay.interface),
    )?;
    if args.count.is_none() && args.duration.is_none() && args.rate == Some(0.0) {
        bail!("--rate 0 sends nothing");
    }
    let (i, t) = match &args.tunnel {
        Some(n) => cfg
            .tunnels
            .iter()
            .enumerate()
            .find(|(_, t)| &t.name == n)
            .ok_or_else(|| {
                anyhow!(
                    "--tunnel {n}: no tunnel of that name in {}",
                    config_path.display()
                )
            })?,
        None => cfg
            .tunnels
            .iter()
            .enumerate()
            .find(|(_, t)| matches!(t.kind, TunnelKind::Manual(_)))
            .ok_or_else(|| anyhow!("{} has no manual tunnel to send on", config_path.display()))?,
    };
    let TunnelKind::Manual(m) = &t.kind else {
        bail!(
            "--tunnel {}: it is kind = \"ike\": the generator needs a manual tunnel's keys",
            t.name
        );
    };
    // Inner addresses: from the tunnel's local selectors (or the inside
    // address) to the first remote subnet's first address.
    let src = t
        .local_selectors(&cfg.inside)
        .first()
        .map(|c| c.addr)
        .or(match &cfg.inside {
            Inside::Tun { address, .. } => Some(address.addr),
            Inside::Sink | Inside::Xdp { .. } => None,
        })
        .unwrap_or(cfg.underlay.address);
    let dst = t.remote_subnets.first().map(|c| c.addr).unwrap_or(t.peer);
    if src.is_ipv4() != dst.is_ipv4() {
        bail!(
            "tunnel {}: inner source {src} and destination {dst} differ in family",
            t.name
        );
    }
    if args.size > 1400 {
        bail!(
            "--size {}: give at most 1400 payload bytes (one frame)",
            args.size
        );
    }

    // Sequence numbers: reserved durably before use, as the daemon does.
    let mut seq = SeqStore::open(&cfg.state_dir).with_context(|| {
        format!(
            "opening state_dir {} (is an xdpsec daemon running with this config? it holds the tunnel's sequence numbers)",
            cfg.state_dir.display()
        )
    })?;
    let key = KeyId::of(&m.outbound.key);
    let (last, limit) = seqstore::start(&mut seq, key);
    seq.commit().context("recording sequence reservations")?;
    let c = tunnel_sa_changes(&cfg, i as u32, last, limit).expect("a manual tunnel");
    let mut table = SaTable::new();
    table
        .apply(vec![c.outbound], Duration::ZERO)
        .map_err(|e| anyhow!("tunnel {}: {e}", t.name))?;
    let snap = table.snapshot();
    let Some(OutboundEntry::Active(sa)) = snap.outbound(i as u32).cloned() else {
        bail!("tunnel {}: no outbound SA", t.name);
    };

    let iface = &cfg.underlay.interface;
    let local_mac = neighbor::interface_mac(iface)
        .with_context(|| format!("reading the MAC address of {iface}"))?;
    let nh = NextHops::new(vec![Some(t.peer)]);
    nh.refresh(iface, Duration::from_secs(2));
    let Some(dst_mac) = nh.get(0).and_then(|m| m.get()) else {
        bail!(
            "no next-hop MAC for {} on {iface} (is the peer reachable?)",
            t.peer
        );
    };
    // One AF_XDP socket per queue; one thread encrypts (the SA has one
    // sequence counter) and deals the frames round-robin over the queues.
    let mut xsks = queues
        .map(|q| {
            // A socket closed just before (the previous run) is released by
            // the kernel asynchronously: the queue can be busy for a moment.
            let until = Instant::now() + Duration::from_secs(2);
            loop {
                match XskQueue::open(&QueueConfig::new(iface, q)) {
                    Ok(x) => return Ok(x),
                    Err(_) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!(
                                "opening AF_XDP queue {q} of {iface} (does it have {} tx queues?)",
                                q + 1
                            )
                        });
                    }
                }
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let mut turn = 0usize;
    let mut framer = Framer::new(
        GenTunnel {
            index: i as u32,
            snap,
            macs: [dst_mac, local_mac],
            udp: t.encap != crate::config::Encap::Esp,
            spi: m.outbound.spi,
            replay_window: t.replay_window,
        },
        (src, dst),
        args.size,
        args.mix,
    );

    let start = Instant::now();
    let deadline = start
        + args.duration.unwrap_or(if args.count.is_some() {
            Duration::from_secs(3600)
        } else {
            Duration::from_secs(10)
        });
    let count = args.count.unwrap_or(u64::MAX);
    let mut sent = Sent::default();
    let mut next_reserve_check = 0u64;
    while sent.total() < count && Instant::now() < deadline {
        // Rate: wait until this frame is due.
        if let Some(r) = args.rate {
            let due = start + Duration::from_secs_f64(sent.total() as f64 / r);
            let now = Instant::now();
            if due > now {
                xsks.iter_mut().for_each(|x| x.tx().flush());
                std::thread::sleep((due - now).min(Duration::from_millis(10)));
                continue;
            }
        }
        let kind = framer.pick();
        if kind.encrypts() && sa.last_seq() >= next_reserve_check {
            // Reserve more numbers before the current block runs out.
            let lim = sa.seq_limit();
            if lim.saturating_sub(sa.last_seq()) < seqstore::LOW_WATER {
                let next = lim.saturating_add(seqstore::BLOCK).min(sa.max_seq());
                seq.reserve(key, next);
                seq.commit().context("extending sequence reservations")?;
                sa.raise_limit(next);
            }
            next_reserve_check = sa.last_seq() + 1024;
        }
        let Some(frame) = framer.build(kind, sent.total()) else {
            bail!(
                "tunnel {}: the SA refused to encapsulate (sequence numbers used up?)",
                t.name
            );
        };
        let len = frame.len();
        let nq = xsks.len();
        let tx = xsks[turn % nq].tx();
        let ok = tx.send_with(|buf| {
            buf[..len].copy_from_slice(frame);
            Some(len)
        });
        if !ok {
            // No free frame: let the kernel complete some.
            tx.flush();
            std::thread::yield_now();
            // The frame is lost to the count of this kind only if never sent:
            // a valid frame's sequence number is simply skipped (never reused).
            continue;
        }
        framer.count(kind, &mut sent);
        if sent.total() % 64 == 0 {
            tx.flush();
        }
        turn += 1;
    }
    xsks.iter_mut().for_each(|x| x.tx().flush());
    // Let the kernel finish sending what is queued.
    std::thread::sleep(Duration::from_millis(50));
    xsks.iter_mut().for_each(|x| x.tx().flush());
    let secs = start.elapsed().as_secs_f64();
    seq.commit().ok();
    let pps = sent.total() as f64 / secs.max(1e-9);
    if json_out {
        println!(
            "{}",
            json!({
                "sent": sent.total(),
                "seconds": (secs * 1000.0).round() / 1000.0,
                "pps": (pps * 10.0).round() / 10.0,
                "valid": sent.valid,
                "mixed": {
                    "unknown_spi": sent.unknown_spi,
                    "replay": sent.replay,
                    "old": sent.old,
                    "bad_icv": sent.bad_icv,
                },
            })
        );
    } else {
        println!(
            "sent {} frames in {secs:.3} s ({pps:.1} pps): {} valid, {} unknown SPI, {} replayed, {} too old, {} bad ICV (tunnel {}, SPI 0x{:08X}, last sequence number {})",
            sent.total(),
            sent.valid,
            sent.unknown_spi,
            sent.replay,
            sent.old,
            sent.bad_icv,
            t.name,
            m.outbound.spi,
            sa.last_seq()
        );
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_range_starts_at_first_queue_and_checks_the_interface() {
        assert_eq!(queue_range(0, 1, "eth0", Some(1)).unwrap(), 0..1);
        assert_eq!(queue_range(1, 1, "eth0", Some(2)).unwrap(), 1..2);
        assert_eq!(queue_range(2, 2, "eth0", Some(4)).unwrap(), 2..4);
        // Unknown queue count: the bind decides.
        assert_eq!(queue_range(5, 2, "eth0", None).unwrap(), 5..7);
        let e = queue_range(1, 1, "eth0", Some(1)).unwrap_err().to_string();
        assert_eq!(
            e,
            "--first-queue 1 --queues 1: eth0 has 1 queue(s) (0-0); it lacks queue 1"
        );
        let e = queue_range(1, 2, "eth0", Some(2)).unwrap_err().to_string();
        assert!(e.contains("it lacks queue 2"), "{e}");
        assert!(queue_range(u32::MAX, 2, "eth0", None).is_err());
    }
}
