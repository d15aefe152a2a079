//! Pieces of control state the owner keeps: the SA changes a configured
//! tunnel installs, the buffered IOS log, and the logger that turns
//! datapath events into rate-limited IOS lines.
use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use xdpsec_datapath::{
    DropReason,
    crypto::{Cipher, KeyMaterial},
    events::DropEvent,
    ioslog::{IosLogger, LogKind},
    sa::{
        AddrSet, InboundSaConfig, LocalEndpoint, OutboundSaConfig, OuterHeader, Prefix, SaChange,
        Selectors,
    },
    worker::WorkerShared,
};

use crate::config::{Cidr, CipherName, Config, Encap, Tunnel, TunnelKind};

/// Lines kept for `show logging`.
pub const LOG_BUFFER_LINES: usize = 1000;

/// The datapath cipher for a configured name.
pub fn cipher_of(c: CipherName) -> Cipher {
    // The config names the datapath's transforms directly.
    c
}

/// The IOS crypto map tag of a tunnel interface.
pub fn crypto_map_tag(tunnel: &Tunnel) -> String {
    format!("{}-head-0", tunnel.name)
}

/// The SA changes that install manual tunnel `i` of `cfg`.
pub struct TunnelChanges {
    /// `AddInbound`.
    pub inbound: SaChange,
    /// `SetOutbound`.
    pub outbound: SaChange,
}

/// The datapath's address set for configured prefixes (empty = any).
fn addr_set(list: &[Cidr]) -> AddrSet {
    AddrSet::from_prefixes(list.iter().filter_map(|c| Prefix::new(c.addr, c.len)))
}

/// The inbound policy of a tunnel (RFC 4301 5.2): sources in
/// `remote_subnets` (empty: any), destinations in its local selectors.
pub fn tunnel_selectors(cfg: &Config, t: &Tunnel) -> Arc<Selectors> {
    Arc::new(Selectors {
        local: addr_set(&t.local_selectors(&cfg.inside)),
        remote: addr_set(&t.remote_subnets),
    })
}

/// `(our port, the peer's port)` when the tunnel's ESP travels in UDP.
pub fn udp_ports(t: &Tunnel) -> Option<(u16, u16)> {
    match t.encap {
        Encap::Esp => None,
        Encap::Udp {
            local_port,
            peer_port,
        } => Some((local_port, peer_port)),
    }
}

/// Where tunnel `i` terminates locally (names it in invalid-SPI logs).
pub fn tunnel_endpoint(cfg: &Config, i: u32) -> LocalEndpoint {
    LocalEndpoint {
        addr: cfg.underlay.address,
        udp_port: udp_ports(&cfg.tunnels[i as usize]).map(|u| u.0),
        tunnel: i,
    }
}

/// Build the inbound and outbound SA changes of tunnel `i` if it is a
/// manual tunnel (IKE tunnels get theirs from negotiation); the outbound SA
/// continues after sequence number `last_seq` and may use numbers up to
/// `seq_limit` (the durable reservation, see `seqstore`).
pub fn tunnel_sa_changes(
    cfg: &Config,
    i: u32,
    last_seq: u64,
    seq_limit: u64,
) -> Option<TunnelChanges> {
    let t = &cfg.tunnels[i as usize];
    let TunnelKind::Manual(m) = &t.kind else {
        return None;
    };
    let cipher = cipher_of(m.cipher);
    Some(TunnelChanges {
        inbound: SaChange::AddInbound(InboundSaConfig {
            spi: m.inbound.spi,
            peer: None,
            tunnel: i,
            // One replay window per SA, owned by one worker; frames that
            // arrive on other queues are handed to it.
            owner: t.worker as u16,
            cipher,
            key: KeyMaterial::new(m.inbound.key.to_vec()),
            esn: m.esn,
            window: t.replay_window,
            selectors: tunnel_selectors(cfg, t),
            name: crypto_map_tag(t),
        }),
        outbound: SaChange::SetOutbound(OutboundSaConfig {
            spi: m.outbound.spi,
            tunnel: i,
            // The same worker owns the outbound sequence counter: other
            // workers hand it their packets for this tunnel.
            owner: t.worker as u16,
            cipher,
            key: KeyMaterial::new(m.outbound.key.to_vec()),
            esn: m.esn,
            outer: OuterHeader {
                src: cfg.underlay.address,
                dst: t.peer,
                udp: udp_ports(t),
                ethernet: None,
                ttl: 64,
            },
            last_seq,
            seq_limit,
            name: crypto_map_tag(t),
        }),
    })
}

/// The buffered log behind `show logging`.
#[derive(Default)]
pub struct LogBuffer {
    lines: VecDeque<String>,
    /// Lines logged since start (including those rotated out).
    pub logged: u64,
    /// Lines also go to the remote collector (`[logging] host`): they
    /// wait in the outbox for the owner's shell, which sends them.
    pub forward: bool,
    outbox: Vec<String>,
}

impl LogBuffer {
    /// Append a line (already carrying its timestamp).
    pub fn push(&mut self, line: String) {
        if self.lines.len() == LOG_BUFFER_LINES {
            self.lines.pop_front();
        }
        if self.forward {
            self.outbox.push(line.clone());
        }
        self.lines.push_back(line);
        self.logged += 1;
    }

    /// The lines for the remote collector since the last call.
    pub fn take_outbox(&mut self) -> Vec<String> {
        std::mem::take(&mut self.outbox)
    }

    /// The buffered lines, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &String> {
        self.lines.iter()
    }

    /// Empty the buffer (`clear logging`).
    pub fn clear(&mut self) {
        self.lines.clear();
    }
}

/// `*Nov 27 14:30:01.123: ` as IOS prints with `service timestamps log datetime msec`.
pub fn ios_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "*{} {:>2} {:02}:{:02}:{:02}.{:03}: ",
        MON[(month - 1) as usize],
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Turns datapath drop events into rate-limited IOS log lines.
pub struct EventLogger {
    logger: IosLogger,
    tunnel_names: Vec<String>,
    /// Events the datapath could not queue (its ring was full).
    pub lost: u64,
}

impl EventLogger {
    /// A logger naming tunnels by index.
    pub fn new(tunnel_names: Vec<String>) -> Self {
        EventLogger {
            logger: IosLogger::default(),
            tunnel_names,
            lost: 0,
        }
    }

    /// Name tunnel index `i` in log lines (SD-WAN peers get their TLOC's
    /// `TunnelNNNNN`).
    pub fn set_name(&mut self, i: u32, name: String) {
        let i = i as usize;
        if self.tunnel_names.len() <= i {
            self.tunnel_names.resize(i + 1, String::new());
        }
        self.tunnel_names[i] = name;
    }

    /// Drain every worker's events into `log`; `now` is the daemon's clock.
    /// Returns the distinct (peer, SPI) pairs of ESP with an SPI no SA has
    /// (drops 1/4/9/12), for IKE's invalid-SPI recovery.
    pub fn drain(
        &mut self,
        workers: &[Arc<WorkerShared>],
        log: &mut LogBuffer,
        now: Duration,
    ) -> Vec<(std::net::IpAddr, u32)> {
        let mut unknown = Vec::new();
        for w in workers {
            for ev in w.events.drain(4096) {
                if matches!(
                    ev.reason,
                    DropReason::InV4HitInvalidSa
                        | DropReason::InV4SaNotFoundSpi
                        | DropReason::InV6HitInvalidSa
                        | DropReason::InV6SaNotFoundSpi
                ) && !unknown.contains(&(ev.src, ev.spi))
                    && unknown.len() < 64
                {
                    unknown.push((ev.src, ev.spi));
                }
                self.log_event(&ev, log, now);
            }
        }
        self.lost = workers.iter().map(|w| w.events.lost()).sum();
        unknown
    }

    /// Log one drop event (rate-limited per kind, as the datapath's).
    pub fn log_event(&mut self, ev: &DropEvent, log: &mut LogBuffer, now: Duration) {
        let iface = ev
            .tunnel
            .and_then(|t| self.tunnel_names.get(t as usize))
            .filter(|n| !n.is_empty())
            .map(String::as_str);
        if let Some(line) = self.logger.log(ev, iface, now) {
            // Keys never reach this line: it carries addresses and the SPI only.
            tracing::warn!(target: "ios", "{line}");
            log.push(format!("{}{line}", ios_timestamp(SystemTime::now())));
        }
    }

    /// Lines suppressed by the one-a-minute rate limit, per kind.
    pub fn suppressed(&self) -> [(LogKind, u64); LogKind::ALL.len()] {
        LogKind::ALL.map(|k| (k, self.logger.suppressed(k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ios_timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_789_801_123); // 2026-11-27 14:30:01.123 UTC
        assert_eq!(ios_timestamp(t), "*Nov 27 14:30:01.123: ");
        assert_eq!(ios_timestamp(UNIX_EPOCH), "*Jan  1 00:00:00.000: ");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(ios_timestamp(leap), "*Feb 29 00:00:00.000: ");
    }

    #[test]
    fn log_buffer_is_bounded() {
        let mut b = LogBuffer::default();
        for i in 0..LOG_BUFFER_LINES + 5 {
            b.push(format!("l{i}"));
        }
        assert_eq!(b.lines().count(), LOG_BUFFER_LINES);
        assert_eq!(b.lines().next().unwrap(), "l5");
        assert_eq!(b.logged, LOG_BUFFER_LINES as u64 + 5);
    }
}
