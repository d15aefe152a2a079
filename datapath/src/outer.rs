//! The outer headers of ESP on the underlay, both ways: written in front
//! of an ESP packet ([`OuterHeader::emit`], encap's framing) and located
//! in a received frame ([`locate_esp`], decap's pass 1). Shared with
//! senders and receivers outside the workers (the load tester's AF_XDP
//! probes and replies), so every ESP frame xdpsec builds or reads goes
//! through one implementation.
use core::net::IpAddr;
use core::ops::Range;

use crate::drop::DropReason;
use crate::sa::OuterHeader;
use crate::wire::{ecn, ethernet, ip_proto, ipv4, ipv6, udp};
use crate::worker::FrameClass;

impl OuterHeader {
    /// The lengths of its Ethernet (0 when unset), IP and UDP (0 when
    /// unset) headers.
    #[inline]
    fn lens(&self) -> (usize, usize, usize) {
        let eth = if self.ethernet.is_some() {
            ethernet::HEADER_LEN
        } else {
            0
        };
        let ip = if self.dst.is_ipv6() {
            ipv6::HEADER_LEN
        } else {
            ipv4::HEADER_LEN
        };
        (
            eth,
            ip,
            if self.udp.is_some() {
                udp::HEADER_LEN
            } else {
                0
            },
        )
    }

    /// Bytes of the headers in front of the ESP packet: Ethernet (when
    /// set), IPv4 or IPv6, UDP (when set).
    #[inline]
    pub fn header_len(&self) -> usize {
        let (eth, ip, udp) = self.lens();
        eth + ip + udp
    }

    /// Whether an ESP packet of `esp_len` bytes overflows the outer
    /// length fields.
    #[inline]
    pub fn too_long(&self, esp_len: usize) -> bool {
        let udp = if self.udp.is_some() {
            udp::HEADER_LEN
        } else {
            0
        };
        if self.dst.is_ipv6() {
            udp + esp_len > usize::from(u16::MAX)
        } else {
            ipv4::HEADER_LEN + udp + esp_len > usize::from(u16::MAX)
        }
    }

    /// Write the headers for an ESP packet of `esp_len` bytes into
    /// `out[..self.header_len()]` (`out` at least that long; the length
    /// checked with [`OuterHeader::too_long`]): IPv4 without DF, with
    /// identification `ident` and the header checksum; IPv6 flow label 0;
    /// `tos` the IPv4 TOS / IPv6 traffic class. The UDP checksum is left 0
    /// (RFC 3948 2.1 over IPv4); over IPv6 [`OuterHeader::finish`] fills it
    /// once the ESP packet is in place.
    #[inline]
    pub fn emit(&self, out: &mut [u8], esp_len: usize, tos: u8, ident: u16) {
        let (eth_len, ip_len, udp_len) = self.lens();
        let v6 = self.dst.is_ipv6();
        if let Some(e) = self.ethernet {
            let ethertype = if v6 {
                ethernet::ethertype::IPV6
            } else {
                ethernet::ethertype::IPV4
            };
            ethernet::Repr {
                src_addr: e.src,
                dst_addr: e.dst,
                ethertype,
            }
            .emit(&mut ethernet::Frame::new_unchecked(&mut out[..eth_len]));
        }
        let proto = if self.udp.is_some() {
            ip_proto::UDP
        } else {
            ip_proto::ESP
        };
        let ip_payload = udp_len + esp_len;
        let ip_buf = &mut out[eth_len..eth_len + ip_len];
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => ipv4::Repr {
                src_addr: src,
                dst_addr: dst,
                protocol: proto,
                payload_len: ip_payload,
                ttl: self.ttl,
                dscp_ecn: tos,
                dont_frag: false,
                ident,
            }
            .emit(&mut ipv4::Packet::new_unchecked(ip_buf)),
            (IpAddr::V6(src), IpAddr::V6(dst)) => ipv6::Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: proto,
                payload_len: ip_payload,
                hop_limit: self.ttl,
                traffic_class: tos,
            }
            .emit(&mut ipv6::Packet::new_unchecked(ip_buf)),
            // Refused by SaTable::apply (and by the load tester's config).
            _ => unreachable!("outer address families validated at install"),
        }
        if let Some((sport, dport)) = self.udp {
            let at = eth_len + ip_len;
            udp::Repr {
                src_port: sport,
                dst_port: dport,
                payload_len: esp_len,
            }
            .emit(&mut udp::Packet::new_unchecked(
                &mut out[at..at + udp::HEADER_LEN],
            ));
        }
    }

    /// After the ESP packet was written behind the headers: the UDP
    /// checksum over IPv6 (RFC 8200 section 8.1: zero is invalid there),
    /// over the finished ciphertext. `out`: the whole packet.
    #[inline]
    pub fn finish(&self, out: &mut [u8]) {
        if let (Some(_), IpAddr::V6(src), IpAddr::V6(dst)) = (self.udp, self.src, self.dst) {
            let (eth_len, ip_len, _) = self.lens();
            let at = eth_len + ip_len;
            udp::Packet::new_unchecked(&mut out[at..]).fill_checksum_v6(&src, &dst);
        }
    }
}

/// Where a frame's ESP bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspLocation {
    /// The ESP packet (SPI .. ICV) within the frame.
    pub esp: Range<usize>,
    /// Outer source address.
    pub src: IpAddr,
    /// Outer destination address.
    pub dst: IpAddr,
    /// UDP (source, destination) ports for ESP in UDP.
    pub ports: Option<(u16, u16)>,
    /// ECN bits of the outer IPv4 TOS / IPv6 traffic class.
    pub outer_ecn: u8,
}

/// Why a frame was handed back untouched (it is not ESP for us).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassReason {
    /// Ethernet type is neither IPv4 nor IPv6.
    NotIp,
    /// IP protocol is neither ESP nor UDP on an ESP port.
    NotEsp,
    /// RFC 3948 NAT keepalive (one 0xFF byte).
    NatKeepalive,
    /// RFC 3948 non-ESP marker (4 zero bytes): IKE on the NAT-T port.
    IkeMarker,
}

/// Why a frame has no ESP to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotEsp {
    /// Not ESP (for an ESP port): handed back untouched.
    Pass(PassReason),
    /// Malformed ESP framing (or a fragment): dropped for this reason.
    Drop(DropReason),
}

/// Locate the ESP bytes of an Ethernet frame: IPv4 (header checksum
/// checked, fragments refused) or IPv6 (extension headers walked), then
/// ESP, or UDP to a port `esp_port` accepts carrying neither a NAT
/// keepalive nor the non-ESP marker (IKE). `class` is set as soon as the
/// outer protocol is known (the classes the XDP program counts).
#[inline]
pub fn locate_esp(
    frame: &[u8],
    esp_port: impl Fn(u16) -> bool,
    class: &mut FrameClass,
) -> Result<EspLocation, NotEsp> {
    let eth = ethernet::Frame::new_checked(frame)
        .map_err(|_| NotEsp::Drop(DropReason::InHeadPadLenErr))?;
    let l3 = eth.payload_offset();
    let ip_bytes = &frame[l3..];
    let (proto, l4, src, dst, outer_ecn) = match eth.payload_ethertype() {
        ethernet::ethertype::IPV4 => {
            match ip_bytes.first() {
                None => return Err(NotEsp::Drop(DropReason::InHeadPadLenErr)),
                Some(b) if b >> 4 != 4 => return Err(NotEsp::Drop(DropReason::InIpVerInvalid)),
                _ => {}
            }
            let ip = ipv4::Packet::new_checked(ip_bytes)
                .map_err(|_| NotEsp::Drop(DropReason::InHeadPadLenErr))?;
            *class = match ip.protocol() {
                ip_proto::ESP => FrameClass::EspV4,
                ip_proto::UDP => FrameClass::UdpEspV4,
                _ => FrameClass::Other,
            };
            // Before anything else of the header is trusted.
            if !ip.verify_checksum() {
                return Err(NotEsp::Drop(DropReason::InV4ChecksumErr));
            }
            if ip.is_fragment() {
                return Err(NotEsp::Drop(DropReason::InV4FragErr));
            }
            let start = l3 + ip.header_len() as usize;
            let end = l3 + ip.total_len() as usize;
            (
                ip.protocol(),
                start..end,
                IpAddr::V4(ip.src_addr()),
                IpAddr::V4(ip.dst_addr()),
                ip.dscp_ecn() & ecn::MASK,
            )
        }
        ethernet::ethertype::IPV6 => {
            match ip_bytes.first() {
                None => return Err(NotEsp::Drop(DropReason::InHeadPadLenErr)),
                Some(b) if b >> 4 != 6 => return Err(NotEsp::Drop(DropReason::InIpVerInvalid)),
                _ => {}
            }
            let ip = ipv6::Packet::new_checked(ip_bytes)
                .map_err(|_| NotEsp::Drop(DropReason::InHeadPadLenErr))?;
            let ul = ipv6::walk_extension_headers(ip.next_header(), ip.payload())
                .map_err(|_| NotEsp::Drop(DropReason::InHeadPadLenErr))?;
            *class = match ul.protocol {
                ip_proto::ESP => FrameClass::EspV6,
                ip_proto::UDP => FrameClass::UdpEspV6,
                _ => FrameClass::Other,
            };
            if ul.fragment {
                // IOS has no IPv6 form of 70; the same reason covers both.
                return Err(NotEsp::Drop(DropReason::InV4FragErr));
            }
            let base = l3 + ipv6::HEADER_LEN;
            let end = base + ip.payload_len() as usize;
            (
                ul.protocol,
                base + ul.offset..end,
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                ip.traffic_class() & ecn::MASK,
            )
        }
        _ => return Err(NotEsp::Pass(PassReason::NotIp)),
    };
    match proto {
        ip_proto::ESP => Ok(EspLocation {
            esp: l4,
            src,
            dst,
            ports: None,
            outer_ecn,
        }),
        ip_proto::UDP => {
            let u = udp::Packet::new_checked(&frame[l4.clone()])
                .map_err(|_| NotEsp::Drop(DropReason::InHeadPadLenErr))?;
            // What XDP steers as UDP-ESP: an ESP port, neither keepalive
            // nor IKE. The rest is "other" there too.
            if !esp_port(u.dst_port()) {
                *class = FrameClass::Other;
                return Err(NotEsp::Pass(PassReason::NotEsp));
            }
            let payload = u.payload();
            if payload == [0xff] {
                *class = FrameClass::Other;
                return Err(NotEsp::Pass(PassReason::NatKeepalive));
            }
            if payload.len() >= 4 && payload[..4] == [0; 4] {
                *class = FrameClass::Other;
                return Err(NotEsp::Pass(PassReason::IkeMarker));
            }
            let start = l4.start + udp::HEADER_LEN;
            Ok(EspLocation {
                esp: start..start + payload.len(),
                src,
                dst,
                ports: Some((u.src_port(), u.dst_port())),
                outer_ecn,
            })
        }
        _ => Err(NotEsp::Pass(PassReason::NotEsp)),
    }
}
