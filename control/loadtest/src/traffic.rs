//! `--traffic PPS`: ICMP echo requests through each tunnel as soon as its
//! child SA is up (the first at once, then PPS a second per tunnel), sealed
//! with the child SA's keys (the datapath's ESP transforms) and sent as
//! ESP in UDP from the peer's source address; the gateway's echo replies
//! are opened, checked and counted per tunnel. Time to first packet: the
//! attempt's first IKE_SA_INIT to the first decrypted reply.
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use xdpsec_datapath::crypto::{AesKeySize, Cipher, EspCipher, Integrity};
use xdpsec_ike::{ChildKeys, Encr, Integ};

/// Probes sent this long before the end of the run are not counted lost
/// (their replies may still be on the way).
pub const REPLY_GRACE: Duration = Duration::from_secs(1);

/// The datapath's transform for negotiated ESP keys, if it has one.
pub fn cipher_of(k: &ChildKeys) -> Option<EspCipher> {
    let integ = k.integ.map(|i| match i {
        Integ::HmacSha1_96 => Integrity::HmacSha1_96,
        Integ::HmacSha256_128 => Integrity::HmacSha256_128,
        Integ::HmacSha384_192 => Integrity::HmacSha384_192,
        Integ::HmacSha512_256 => Integrity::HmacSha512_256,
    });
    let c = match (k.encr, integ) {
        (Encr::AesGcm16_128, None) => Cipher::Aes128Gcm,
        (Encr::AesGcm16_256, None) => Cipher::Aes256Gcm,
        (Encr::ChaCha20Poly1305, None) => Cipher::ChaCha20Poly1305,
        (Encr::AesCbc128, Some(i)) => Cipher::AesCbc(AesKeySize::Aes128, i),
        (Encr::AesCbc256, Some(i)) => Cipher::AesCbc(AesKeySize::Aes256, i),
        _ => return None,
    };
    EspCipher::new(c, &k.key).ok()
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn add_words(sum: &mut u32, b: &[u8]) {
    for c in b.chunks(2) {
        *sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
}

/// An ICMP(v6) echo request from `src` to `dst` with identifier `id`,
/// sequence `seq` and 16 bytes of data, as an IP packet; the ESP next
/// header for it.
pub fn echo_request(src: IpAddr, dst: IpAddr, id: u16, seq: u16) -> (Vec<u8>, u8) {
    let mut icmp = vec![0u8; 8 + 16];
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    icmp[6..8].copy_from_slice(&seq.to_be_bytes());
    icmp[8..].copy_from_slice(b"xdpsec loadtest.");
    match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            icmp[0] = 128;
            let mut sum = 0;
            add_words(&mut sum, &s.octets());
            add_words(&mut sum, &d.octets());
            add_words(&mut sum, &(icmp.len() as u32).to_be_bytes());
            add_words(&mut sum, &[0, 0, 0, 58]);
            add_words(&mut sum, &icmp);
            icmp[2..4].copy_from_slice(&fold(sum).to_be_bytes());
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
            p.extend_from_slice(&[58, 64]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&icmp);
            (p, 41)
        }
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            icmp[0] = 8;
            let mut sum = 0;
            add_words(&mut sum, &icmp);
            icmp[2..4].copy_from_slice(&fold(sum).to_be_bytes());
            let total = (20 + icmp.len()) as u16;
            let mut p = vec![0x45, 0];
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            let mut sum = 0;
            add_words(&mut sum, &p);
            p[10..12].copy_from_slice(&fold(sum).to_be_bytes());
            p.extend_from_slice(&icmp);
            (p, 4)
        }
        _ => (Vec::new(), 0),
    }
}

/// The identifier and sequence of an echo reply from `from` to `to` in
/// the IP packet `p`, if it is one.
pub fn echo_reply(p: &[u8], from: IpAddr, to: IpAddr) -> Option<(u16, u16)> {
    let icmp = match p.first()? >> 4 {
        6 if p.len() >= 48 && p[6] == 58 => {
            let s: [u8; 16] = p[8..24].try_into().ok()?;
            let d: [u8; 16] = p[24..40].try_into().ok()?;
            (IpAddr::from(s) == from && IpAddr::from(d) == to && p[40] == 129).then(|| &p[40..])?
        }
        4 if p.len() >= 28 && p[9] == 1 => {
            let hl = usize::from(p[0] & 15) * 4;
            let s: [u8; 4] = p[12..16].try_into().ok()?;
            let d: [u8; 4] = p[16..20].try_into().ok()?;
            let icmp = p.get(hl..)?;
            (IpAddr::from(s) == from && IpAddr::from(d) == to && icmp.len() >= 8 && icmp[0] == 0)
                .then_some(icmp)?
        }
        _ => return None,
    };
    Some((
        u16::from_be_bytes([icmp[4], icmp[5]]),
        u16::from_be_bytes([icmp[6], icmp[7]]),
    ))
}

/// One tunnel's traffic.
#[derive(Default)]
struct Flow {
    /// Next ESP sequence number per outbound SPI.
    seq: HashMap<u32, u64>,
    sent: u64,
    replies: u64,
    next_probe: u16,
    /// Probes sent during a rekey, not answered yet (probe seq -> sent at).
    in_rekey: HashMap<u16, Instant>,
    answered: HashSet<u16>,
    /// Scheduled (in `due`).
    active: bool,
}

/// Every tunnel's traffic: the schedule and the counters.
pub struct Traffic {
    interval: Duration,
    flows: Vec<Flow>,
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    ciphers: HashMap<(usize, u32), EspCipher>,
    /// Replies that did not open or were not echo replies.
    pub bad: u64,
}

/// Counters at the end of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TrafficTotals {
    /// Probes sent.
    pub sent: u64,
    /// Replies counted.
    pub replies: u64,
    /// Tunnels with at least one reply.
    pub tunnels_answered: u64,
    /// Probes sent during a rekey and never answered.
    pub lost_in_rekeys: u64,
}

impl Traffic {
    /// `pps` probes a second per tunnel, `tunnels` tunnels.
    pub fn new(pps: f64, tunnels: usize) -> Traffic {
        Traffic {
            interval: Duration::from_secs_f64(1.0 / pps),
            flows: (0..tunnels).map(|_| Flow::default()).collect(),
            due: BinaryHeap::new(),
            ciphers: HashMap::new(),
            bad: 0,
        }
    }

    /// Tunnel `i` came up at `now` (or has a child SA again): its first
    /// probe is due at once (unless it is being probed already).
    pub fn tunnel_up(&mut self, i: usize, now: Instant) {
        if !self.flows[i].active {
            self.flows[i].active = true;
            self.due.push(Reverse((now, i)));
        }
    }

    /// When the next probe is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((t, _))| *t)
    }

    /// The tunnels whose probe is due by `now` (each rescheduled).
    pub fn take_due(&mut self, now: Instant) -> Vec<usize> {
        let mut v = Vec::new();
        while let Some(Reverse((t, i))) = self.due.peek().copied() {
            if t > now {
                break;
            }
            self.due.pop();
            v.push(i);
            self.due
                .push(Reverse((t.max(now - self.interval) + self.interval, i)));
        }
        v
    }

    /// Stop probing tunnel `i` (it went down): its next due entry is dropped when taken.
    pub fn forget(&mut self, i: usize) {
        self.flows[i].active = false;
        self.due.retain(|Reverse((_, j))| *j != i);
    }

    /// Tunnel `i` went away during the run (the gateway deleted it, or it
    /// died): no more probes, and those it sent during a rekey are not
    /// counted lost in rekeys.
    pub fn tunnel_gone(&mut self, i: usize) {
        self.forget(i);
        self.flows[i].in_rekey.clear();
    }

    /// Seal tunnel `i`'s next probe from `src` (its inside address) to `dst`
    /// with `keys`; the ESP packet (SPI to ICV). `rekeying` marks it for the
    /// loss count.
    pub fn probe(
        &mut self,
        i: usize,
        keys: &ChildKeys,
        src: IpAddr,
        dst: IpAddr,
        rekeying: bool,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let c = match self.ciphers.entry((i, keys.spi)) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(cipher_of(keys)?),
        };
        let f = &mut self.flows[i];
        let n = f.next_probe;
        f.next_probe = f.next_probe.wrapping_add(1);
        let (inner, nh) = echo_request(src, dst, i as u16, n);
        let seq = f.seq.entry(keys.spi).or_insert(1);
        let mut esp = vec![0u8; c.sealed_len(inner.len())];
        let o = c.ciphertext_offset();
        esp[o..o + inner.len()].copy_from_slice(&inner);
        c.seal_in_place(&mut esp, inner.len(), nh, keys.spi, *seq, false)
            .ok()?;
        *seq += 1;
        f.sent += 1;
        if rekeying {
            f.in_rekey.insert(n, now);
        }
        Some(esp)
    }

    /// An ESP packet (SPI to ICV) for tunnel `i`'s inbound SA `keys`: open
    /// it and count it if it is the echo reply from `from` to `to`:
    /// `Some(first)` when counted (`first`: the tunnel's first reply).
    pub fn reply(
        &mut self,
        i: usize,
        keys: &ChildKeys,
        esp: &mut [u8],
        from: IpAddr,
        to: IpAddr,
    ) -> Option<bool> {
        if !self.ciphers.contains_key(&(i, keys.spi)) {
            let Some(c) = cipher_of(keys) else {
                self.bad += 1;
                return None;
            };
            self.ciphers.insert((i, keys.spi), c);
        }
        let c = &self.ciphers[&(i, keys.spi)];
        let Ok(opened) = c.open_in_place(esp, None) else {
            self.bad += 1;
            return None;
        };
        let Some((id, n)) = echo_reply(&esp[opened.payload], from, to) else {
            self.bad += 1;
            return None;
        };
        let f = &mut self.flows[i];
        if id != i as u16 || !f.answered.insert(n) {
            self.bad += 1;
            return None;
        }
        f.in_rekey.remove(&n);
        f.replies += 1;
        Some(f.replies == 1)
    }

    /// Totals at `end` (probes of a rekey sent within [`REPLY_GRACE`] of
    /// it are not counted lost).
    pub fn totals(&self, end: Instant) -> TrafficTotals {
        let mut t = TrafficTotals::default();
        for f in &self.flows {
            t.sent += f.sent;
            t.replies += f.replies;
            t.tunnels_answered += u64::from(f.replies > 0);
            t.lost_in_rekeys += f
                .in_rekey
                .values()
                .filter(|s| **s + REPLY_GRACE <= end)
                .count() as u64;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksums() {
        // ICMPv6 and IPv4/ICMP checksums verify to zero (RFC 1071).
        let (p, nh) = echo_request(
            "2001:db8:1::1".parse().unwrap(),
            "2001:db8:2::1".parse().unwrap(),
            7,
            9,
        );
        assert_eq!(nh, 41);
        let mut sum = 0;
        add_words(&mut sum, &p[8..40]);
        add_words(&mut sum, &((p.len() - 40) as u32).to_be_bytes());
        add_words(&mut sum, &[0, 0, 0, 58]);
        add_words(&mut sum, &p[40..]);
        assert_eq!(fold(sum), 0);
        let (p, nh) = echo_request(
            "203.0.113.1".parse().unwrap(),
            "203.0.113.2".parse().unwrap(),
            7,
            9,
        );
        assert_eq!(nh, 4);
        let mut sum = 0;
        add_words(&mut sum, &p[..20]);
        assert_eq!(fold(sum), 0);
        let mut sum = 0;
        add_words(&mut sum, &p[20..]);
        assert_eq!(fold(sum), 0);
    }

    #[test]
    fn replies_are_matched_and_counted_once() {
        let a: IpAddr = "2001:db8:1::1".parse().unwrap();
        let b: IpAddr = "2001:db8:2::1".parse().unwrap();
        let (mut p, _) = echo_request(b, a, 3, 4);
        p[40] = 129;
        assert_eq!(echo_reply(&p, b, a), Some((3, 4)));
        // From elsewhere, or a request: not a reply.
        assert_eq!(echo_reply(&p, a, b), None);
        p[40] = 128;
        assert_eq!(echo_reply(&p, b, a), None);
        assert_eq!(echo_reply(&p[..20], b, a), None);

        // Through a GCM SA both ways: the first reply is the first, a
        // duplicate is not counted, a damaged one neither.
        let keys = ChildKeys {
            spi: 0x1234,
            encr: Encr::AesGcm16_256,
            integ: None,
            key: zeroize::Zeroizing::new(vec![7; 36]),
        };
        let mut t = Traffic::new(10.0, 2);
        let now = Instant::now();
        let esp = t.probe(1, &keys, a, b, true, now).unwrap();
        // The "gateway": open, turn into a reply, seal again.
        let c = cipher_of(&keys).unwrap();
        let mut e = esp.clone();
        let o = c.open_in_place(&mut e, None).unwrap();
        let (mut r, nh) = echo_request(b, a, 1, 0);
        r[40] = 129;
        let mut back = vec![0u8; c.sealed_len(r.len())];
        let off = c.ciphertext_offset();
        back[off..off + r.len()].copy_from_slice(&r);
        c.seal_in_place(&mut back, r.len(), nh, 0x1234, 1, false)
            .unwrap();
        assert_eq!(e[o.payload].len(), 64);
        assert_eq!(t.totals(now + Duration::from_secs(5)).lost_in_rekeys, 1);
        assert_eq!(t.reply(1, &keys, &mut back.clone(), b, a), Some(true));
        assert_eq!(t.reply(1, &keys, &mut back.clone(), b, a), None);
        let mut bad = back.clone();
        bad[20] ^= 1;
        assert_eq!(t.reply(1, &keys, &mut bad, b, a), None);
        let tot = t.totals(now + Duration::from_secs(5));
        assert_eq!(
            (
                tot.sent,
                tot.replies,
                tot.tunnels_answered,
                tot.lost_in_rekeys
            ),
            (1, 1, 1, 0)
        );
        assert_eq!(t.bad, 2);
    }

    #[test]
    fn probes_are_paced_per_tunnel() {
        let mut t = Traffic::new(10.0, 2);
        let t0 = Instant::now();
        t.tunnel_up(0, t0);
        t.tunnel_up(1, t0 + Duration::from_millis(30));
        assert_eq!(t.take_due(t0), vec![0]);
        assert_eq!(t.take_due(t0 + Duration::from_millis(50)), vec![1]);
        assert_eq!(t.next_due(), Some(t0 + Duration::from_millis(100)));
        let mut n = 0;
        for ms in (100..=1000).step_by(10) {
            n += t.take_due(t0 + Duration::from_millis(ms)).len();
        }
        // Ten more each in the second after they came up (1 s in 100 ms steps).
        assert_eq!(n, 10 + 10 - 1);
    }
}
