//! The probes' and the replies' Ethernet frames on the AF_XDP path,
//! built and read with the datapath's own framing ([`OuterHeader`] for
//! encap, [`locate_esp`] for decap): Ethernet, IPv4 or IPv6, UDP to the
//! gateway's NAT-T port (`encap = "udp"`) or none (plain ESP, IP protocol
//! 50), ESP.
use std::{collections::BTreeMap, net::IpAddr, ops::Range};

use xdpsec_datapath::{
    outer::{NotEsp, locate_esp},
    pipeline::PassReason,
    sa::{EthernetHeader, OuterHeader},
    worker::FrameClass,
};

/// The outer TTL / hop limit of the probes.
pub const PROBE_TTL: u8 = 64;

/// The framing of one peer's probes: from `src` (and UDP port `sport`
/// with `encap = "udp"`) to the gateway `dst` (port `dport`); `macs`:
/// the next hop's toward the gateway, then the interface's own.
pub fn probe_outer(
    src: IpAddr,
    dst: IpAddr,
    udp: Option<(u16, u16)>,
    macs: [[u8; 6]; 2],
) -> OuterHeader {
    OuterHeader {
        src,
        dst,
        udp,
        ethernet: Some(EthernetHeader {
            dst: macs[0],
            src: macs[1],
        }),
        ttl: PROBE_TTL,
    }
}

/// Write the frame carrying the sealed ESP packet `esp` (SPI to ICV)
/// framed as `outer` says into `buf`: its length, or `None` when it does
/// not fit (or `esp` is shorter than an ESP header, or the families of
/// `outer` differ). IPv4's identification is the ESP sequence number's
/// low half, as the datapath's encap sets it.
pub fn probe_frame(buf: &mut [u8], outer: &OuterHeader, esp: &[u8]) -> Option<usize> {
    if esp.len() < 8 || outer.src.is_ipv4() != outer.dst.is_ipv4() || outer.too_long(esp.len()) {
        return None;
    }
    let head = outer.header_len();
    let out = buf.get_mut(..head + esp.len())?;
    outer.emit(out, esp.len(), 0, u16::from_be_bytes([esp[6], esp[7]]));
    out[head..].copy_from_slice(esp);
    outer.finish(out);
    Some(out.len())
}

/// The ESP of a received frame: where it is, the outer destination (one
/// of the peers' addresses) and UDP destination port (`None`: plain ESP),
/// and its SPI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyEsp {
    /// SPI to ICV within the frame.
    pub esp: Range<usize>,
    /// Outer destination address.
    pub dst: IpAddr,
    /// Outer source address.
    pub src: IpAddr,
    /// UDP destination port for ESP in UDP.
    pub dport: Option<u16>,
    /// The UDP source port (IKE's 500: IKE sent before NAT-T floated,
    /// without the non-ESP marker).
    pub sport: Option<u16>,
    /// The SPI.
    pub spi: u32,
}

/// Locate the ESP in a received frame (UDP: to a port `esp_port`
/// accepts); otherwise the name it is counted under.
pub fn reply_esp(frame: &[u8], esp_port: impl Fn(u16) -> bool) -> Result<ReplyEsp, &'static str> {
    let mut class = FrameClass::Other;
    let loc = locate_esp(frame, esp_port, &mut class).map_err(|e| match e {
        NotEsp::Pass(PassReason::NotIp) => "not_ip",
        NotEsp::Pass(PassReason::NotEsp) => "not_esp",
        NotEsp::Pass(PassReason::NatKeepalive) => "nat_keepalive",
        NotEsp::Pass(PassReason::IkeMarker) => "ike_marker",
        NotEsp::Drop(r) => r.name(),
    })?;
    let b = frame.get(loc.esp.clone()).ok_or("truncated_esp")?;
    let spi = b.get(..4).ok_or("truncated_esp")?;
    if b.len() < 8 {
        return Err("truncated_esp");
    }
    Ok(ReplyEsp {
        spi: u32::from_be_bytes([spi[0], spi[1], spi[2], spi[3]]),
        esp: loc.esp,
        dst: loc.dst,
        src: loc.src,
        dport: loc.ports.map(|p| p.1),
        sport: loc.ports.map(|p| p.0),
    })
}

/// Frames received on the AF_XDP sockets that counted as no reply, by
/// name (the text output's `traffic: ... not counted` line, `--json`'s
/// `traffic_other`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Other(pub BTreeMap<&'static str, u64>);

impl Other {
    /// One more frame named `what`.
    pub fn count(&mut self, what: &'static str) {
        *self.0.entry(what).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdpsec_datapath::wire::checksum;

    const MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];

    fn esp(n: usize) -> Vec<u8> {
        let mut e: Vec<u8> = (0..n).map(|i| i as u8).collect();
        e[..4].copy_from_slice(&0xc0de_0001u32.to_be_bytes());
        e[4..8].copy_from_slice(&0x0001_0203u32.to_be_bytes());
        e
    }

    /// IPv6, ESP in UDP from and to 4500.
    fn v6_udp() -> OuterHeader {
        probe_outer(
            "2001:db8::1000".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            Some((4500, 4500)),
            MACS,
        )
    }

    /// IPv4, plain ESP.
    fn v4_plain() -> OuterHeader {
        probe_outer(
            "198.51.100.10".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
            None,
            MACS,
        )
    }

    #[test]
    fn probes_are_ethernet_ip_udp_esp_with_valid_checksums() {
        let e = esp(64);
        // IPv6 in UDP: the UDP checksum over the pseudo-header verifies.
        let o = v6_udp();
        let mut buf = [0u8; 256];
        let n = probe_frame(&mut buf, &o, &e).unwrap();
        let f = &buf[..n];
        assert_eq!(n, 14 + 40 + 8 + 64);
        assert_eq!(&f[..12], &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!((f[20], f[21]), (17, PROBE_TTL));
        let ip = &f[14..54];
        let udp = &f[54..];
        assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 72);
        assert_eq!(udp[..6], [0x11, 0x94, 0x11, 0x94, 0, 72]);
        let s = checksum::combine(
            checksum::pseudo_header_v6(
                &"2001:db8::1000".parse().unwrap(),
                &"2001:db8::1".parse().unwrap(),
                72,
                17,
            ),
            checksum::sum(udp),
        );
        assert_eq!(s, 0xffff);
        assert_eq!(&udp[8..], &e[..]);
        // Located again as what it is.
        let r = reply_esp(f, |p| p == 4500).unwrap();
        assert_eq!(&f[r.esp.clone()], &e[..]);
        assert_eq!(
            (r.spi, r.dport, r.sport, r.dst),
            (0xc0de_0001, Some(4500), Some(4500), o.dst)
        );

        // IPv4, plain ESP: protocol 50, the header checksum verifies, the
        // identification is the sequence number's low half.
        let o = v4_plain();
        let n = probe_frame(&mut buf, &o, &e).unwrap();
        let f = &buf[..n];
        assert_eq!(n, 14 + 20 + 64);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!((f[14], f[22], f[23]), (0x45, PROBE_TTL, 50));
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 84);
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 0x0203);
        assert_eq!(checksum::sum(&f[14..34]), 0xffff);
        let r = reply_esp(f, |_| false).unwrap();
        assert_eq!((r.dport, &f[r.esp.clone()]), (None, &e[..]));

        // Too small a buffer, a runt ESP, mixed families: nothing.
        assert_eq!(probe_frame(&mut buf[..60], &o, &e), None);
        assert_eq!(probe_frame(&mut buf, &o, &e[..7]), None);
        let mixed = probe_outer(o.src, "2001:db8::1".parse().unwrap(), None, MACS);
        assert_eq!(probe_frame(&mut buf, &mixed, &e), None);
    }

    #[test]
    fn anything_else_is_named_and_never_panics() {
        let e = esp(32);
        let o = v6_udp();
        let mut buf = [0u8; 256];
        let n = probe_frame(&mut buf, &o, &e).unwrap();
        let f = buf[..n].to_vec();
        // Another UDP port, IKE's non-ESP marker, a keepalive.
        assert_eq!(reply_esp(&f, |p| p == 4501), Err("not_esp"));
        let mut ike = f.clone();
        ike[62..66].copy_from_slice(&[0; 4]);
        assert_eq!(reply_esp(&ike, |_| true), Err("ike_marker"));
        let mut ka = f[..62].to_vec();
        ka.push(0xff);
        ka[18..20].copy_from_slice(&9u16.to_be_bytes());
        ka[58..60].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(reply_esp(&ka, |_| true), Err("nat_keepalive"));
        // ARP; a damaged IPv4 header.
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(reply_esp(&arp, |_| true), Err("not_ip"));
        let o4 = v4_plain();
        let n4 = probe_frame(&mut buf, &o4, &e).unwrap();
        let mut bad = buf[..n4].to_vec();
        bad[24] ^= 1;
        assert_eq!(reply_esp(&bad, |_| true), Err("IN_V4_PKT_CHECKSUM_ERR"));
        // ESP shorter than its header.
        let mut runt = buf[..14 + 20 + 4].to_vec();
        runt[16..18].copy_from_slice(&24u16.to_be_bytes());
        let c = checksum::compute(&{
            let mut h = runt[14..34].to_vec();
            h[10..12].copy_from_slice(&[0, 0]);
            h
        });
        runt[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(reply_esp(&runt, |_| true), Err("truncated_esp"));
        // Every truncation of a good frame: a name or the ESP, no panic.
        for cut in 0..f.len() {
            let _ = reply_esp(&f[..cut], |_| true);
        }
        let mut other = Other::default();
        other.count("not_esp");
        other.count("not_esp");
        assert_eq!(other.0.get("not_esp"), Some(&2));
    }
}
