//! Types and constants shared by the XDP program (`ebpf/xdp`) and userspace.
//!
//! Everything here is `no_std`, `#[repr(C)]` or plain constants, so both the
//! BPF target and the host agree on map names, sizes and counter slots.
#![no_std]
#![deny(unsafe_code)]

/// Name of the XSKMAP holding one AF_XDP socket per rx queue.
pub const MAP_XSKS: &str = "XSKS";
/// Name of the array (indexed by UDP destination port) of steered UDP ports.
pub const MAP_UDP_PORTS: &str = "UDP_PORTS";
/// Name of the per-CPU counter array.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Name of the XDP program in the object file.
pub const PROG_NAME: &str = "xdpsec";

/// Size of the XSKMAP: the highest rx queue index that can be steered, plus one.
pub const MAX_QUEUES: u32 = 64;
/// Number of entries in the UDP port array (one per port).
pub const UDP_PORT_SLOTS: u32 = 65536;

/// UDP destination ports steered by default: 4500 (RFC 3948 NAT-T) and the
/// Cisco SD-WAN data-plane ports, base 12346 plus the four port-hop offsets
/// (12346 -> 12366 -> 12386 -> 12406 -> 12426; see shared/docs/references.md).
pub const DEFAULT_UDP_ENCAP_PORTS: [u16; 6] = [4500, 12346, 12366, 12386, 12406, 12426];

/// IP protocol number of ESP (RFC 4303).
pub const IPPROTO_ESP: u8 = 50;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// What the XDP program did with a frame. Every frame bumps exactly one slot.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpCounter {
    /// ESP in IPv4 redirected to the queue's AF_XDP socket.
    SteeredEspV4 = 0,
    /// ESP in IPv6 redirected to the queue's AF_XDP socket.
    SteeredEspV6 = 1,
    /// UDP-encapsulated ESP in IPv4 redirected.
    SteeredUdpEspV4 = 2,
    /// UDP-encapsulated ESP in IPv6 redirected.
    SteeredUdpEspV6 = 3,
    /// Would have been steered, but the queue has no socket: passed to the kernel.
    PassNoSocket = 4,
    /// Not IPv4/IPv6 (ARP, LLDP, VLAN-tagged, ...): passed.
    PassNotIp = 5,
    /// IP but neither ESP nor UDP to a steered port: passed.
    PassOther = 6,
    /// UDP on a steered port carrying the 4-byte non-ESP marker (IKE on 4500): passed.
    PassIkeMarker = 7,
    /// UDP on a steered port carrying a 1-byte 0xFF NAT keepalive: passed.
    PassKeepalive = 8,
    /// Too short or malformed to read (headers cut off, bad IHL, short ESP header): passed.
    PassTruncated = 9,
    /// An IPv4 or IPv6 fragment (any protocol): passed for the kernel to
    /// reassemble (RFC 4303 3.4.1); xdpsec receives whole ESP and UDP-ESP
    /// datagrams on its raw ESP and UDP sockets.
    PassFragment = 10,
}

/// Number of counter slots.
pub const XDP_COUNTER_COUNT: u32 = 11;

impl XdpCounter {
    /// All counters, in slot order.
    pub const ALL: [XdpCounter; XDP_COUNTER_COUNT as usize] = [
        XdpCounter::SteeredEspV4,
        XdpCounter::SteeredEspV6,
        XdpCounter::SteeredUdpEspV4,
        XdpCounter::SteeredUdpEspV6,
        XdpCounter::PassNoSocket,
        XdpCounter::PassNotIp,
        XdpCounter::PassOther,
        XdpCounter::PassIkeMarker,
        XdpCounter::PassKeepalive,
        XdpCounter::PassTruncated,
        XdpCounter::PassFragment,
    ];

    /// Stable name used in `show` output, JSON and tests.
    pub const fn name(self) -> &'static str {
        match self {
            XdpCounter::SteeredEspV4 => "steered_esp_v4",
            XdpCounter::SteeredEspV6 => "steered_esp_v6",
            XdpCounter::SteeredUdpEspV4 => "steered_udp_esp_v4",
            XdpCounter::SteeredUdpEspV6 => "steered_udp_esp_v6",
            XdpCounter::PassNoSocket => "pass_no_socket",
            XdpCounter::PassNotIp => "pass_not_ip",
            XdpCounter::PassOther => "pass_other",
            XdpCounter::PassIkeMarker => "pass_ike_marker",
            XdpCounter::PassKeepalive => "pass_nat_keepalive",
            XdpCounter::PassTruncated => "pass_truncated",
            XdpCounter::PassFragment => "pass_fragment",
        }
    }

    /// Whether frames counted here went to userspace.
    pub const fn is_steered(self) -> bool {
        (self as u32) < XdpCounter::PassNoSocket as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_slots_are_dense_and_named_uniquely() {
        for (i, c) in XdpCounter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            for d in &XdpCounter::ALL[..i] {
                assert_ne!(c.name(), d.name());
            }
        }
        assert_eq!(XdpCounter::ALL.iter().filter(|c| c.is_steered()).count(), 4);
    }
}
