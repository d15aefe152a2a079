//! Types and constants shared by the XDP program (`ebpf/xdp`) and userspace.
//!
//! Everything here is `no_std`, `#[repr(C)]` or plain constants, so both the
//! BPF target and the host agree on map names, sizes and counter slots.
//! The `std` feature adds userspace-only helpers (`limiter`).
#![no_std]
#![deny(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

/// A per-key log rate limit (feature `std`, userspace only: the IKE and
/// OMP cores).
#[cfg(feature = "std")]
pub mod limiter;

/// Name of the XSKMAP holding one AF_XDP socket per rx queue.
pub const MAP_XSKS: &str = "XSKS";
/// Name of the array (indexed by UDP destination port) of steered UDP ports.
pub const MAP_UDP_PORTS: &str = "UDP_PORTS";
/// Name of the per-CPU counter array.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Name of the hash map of inbound SPIs (`u32` SPI -> [`SpiState`] value).
pub const MAP_SPIS: &str = "SPIS";
/// Name of the one-slot array whose non-zero value arms early drop.
pub const MAP_EARLY_DROP: &str = "EARLY_DROP";
/// Name of the ring buffer carrying [`SpiSample`]s of early-dropped frames.
pub const MAP_SPI_SAMPLES: &str = "SPI_SAMPLES";
/// Name of the per-CPU one-slot array with the time of the CPU's last sample.
pub const MAP_SAMPLE_AT: &str = "SAMPLE_AT";
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

/// Most SPIs the `SPIS` map holds (live plus recently deleted; entries are
/// allocated on insert, not preallocated).
pub const MAX_SPIS: u32 = 1 << 21;
/// Size in bytes of the sample ring buffer (a power of two, whole pages).
pub const SPI_SAMPLES_BYTES: u32 = 1 << 16;
/// Least time between two samples from one CPU: at most 1000 samples a
/// second per CPU reach userspace, whatever the flood.
pub const SAMPLE_GAP_NS: u64 = 1_000_000;

/// Value of an `SPIS` entry for a live inbound SPI (some SA has it, for
/// any peer). Any other value is a recently deleted SPI: the
/// `CLOCK_MONOTONIC` nanoseconds (`bpf_ktime_get_ns`) until which it counts
/// as "recently deleted" (1/9); after that it is unknown (4/12).
pub const SPI_LIVE: u64 = 0;

/// An early-dropped frame, sampled to userspace for the IOS log line.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpiSample {
    /// SPI (host order).
    pub spi: u32,
    /// 4 or 6.
    pub family: u8,
    /// 1 when the SPI was recently deleted (1/9), 0 when unknown (4/12).
    pub deleted: u8,
    /// UDP destination port (UDP-ESP), 0 for plain ESP.
    pub dport: u16,
    /// UDP source port (UDP-ESP), 0 for plain ESP.
    pub sport: u16,
    /// Padding.
    pub _pad: u16,
    /// Outer source address: its bytes in wire order in the memory of
    /// these two words (IPv4 in the first four bytes, the rest zero).
    // Words, not a byte array: zeroing and partly overwriting a byte array
    // makes LLVM call memset, which the verifier refuses.
    pub src: [u64; 2],
    /// Outer destination address, as `src`.
    pub dst: [u64; 2],
}

impl SpiSample {
    /// An address field's 16 bytes in wire order.
    pub fn addr_bytes(words: [u64; 2]) -> [u8; 16] {
        let (a, b) = (words[0].to_ne_bytes(), words[1].to_ne_bytes());
        [
            a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1], b[2], b[3], b[4], b[5],
            b[6], b[7],
        ]
    }
}

/// Name of the inside-role XDP program (gateway mode, `[inside] mode =
/// "xdp"`): inner packets towards tunnel-routed prefixes to the queue's
/// AF_XDP socket, everything else to the kernel.
pub const PROG_NAME_INSIDE: &str = "xdpsec_inside";
/// Name of the LPM trie of IPv4 inner prefixes routed into tunnels
/// (key: prefix length and the address's 4 bytes in wire order; value unused).
pub const MAP_INSIDE_ROUTES_V4: &str = "INSIDE_ROUTES_V4";
/// Name of the LPM trie of IPv6 inner prefixes routed into tunnels (16 bytes).
pub const MAP_INSIDE_ROUTES_V6: &str = "INSIDE_ROUTES_V6";
/// Name of the per-CPU counter array of the inside-role program.
pub const MAP_INSIDE_COUNTERS: &str = "INSIDE_COUNTERS";
/// Most prefixes each inside route trie holds.
pub const MAX_INSIDE_ROUTES: u32 = 1 << 16;
/// Name of the inside-role program's one-slot switch: non-zero once the
/// inside sockets are bound with `XDP_USE_SG` (they take a frame in a
/// chain of UMEM frames), so multi-buffer frames are redirected whole.
pub const MAP_INSIDE_MULTI_BUFFER: &str = "INSIDE_MULTI_BUFFER";
/// Longest frame the inside program redirects to a multi-buffer socket:
/// an Ethernet header and the largest IP packet (a host's 64 KB GSO
/// super-packet, seen whole by a generic-mode program).
pub const INSIDE_MAX_FRAME: u32 = 14 + 65535;

/// What the inside-role XDP program did with a frame. Every frame bumps
/// exactly one slot.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsideCounter {
    /// IPv4 to a tunnel-routed prefix: redirected to the queue's AF_XDP socket.
    SteeredV4 = 0,
    /// IPv6 to a tunnel-routed prefix: redirected.
    SteeredV6 = 1,
    /// Would have been steered, but the queue has no socket: passed.
    PassNoSocket = 2,
    /// Not IPv4/IPv6 (ARP, ...): passed to the kernel.
    PassNotIp = 3,
    /// IP to a destination no tunnel route covers (the gateway itself,
    /// unrouted traffic, ND): passed to the kernel.
    PassNoRoute = 4,
    /// Too short to read the destination address: passed.
    PassTruncated = 5,
    /// To a tunnel-routed prefix, but in several buffers or longer than a
    /// socket frame while the sockets take one frame each (bound without
    /// `XDP_USE_SG`), or longer than [`INSIDE_MAX_FRAME`]: dropped, never
    /// passed to the kernel, which would forward it unencrypted.
    DropMultiBuffer = 6,
}

/// Number of inside counter slots.
pub const INSIDE_COUNTER_COUNT: u32 = 7;

impl InsideCounter {
    /// All inside counters, in slot order.
    pub const ALL: [InsideCounter; INSIDE_COUNTER_COUNT as usize] = [
        InsideCounter::SteeredV4,
        InsideCounter::SteeredV6,
        InsideCounter::PassNoSocket,
        InsideCounter::PassNotIp,
        InsideCounter::PassNoRoute,
        InsideCounter::PassTruncated,
        InsideCounter::DropMultiBuffer,
    ];

    /// Stable name used in `show` output, JSON and tests.
    pub const fn name(self) -> &'static str {
        match self {
            InsideCounter::SteeredV4 => "inside_steered_v4",
            InsideCounter::SteeredV6 => "inside_steered_v6",
            InsideCounter::PassNoSocket => "inside_pass_no_socket",
            InsideCounter::PassNotIp => "inside_pass_not_ip",
            InsideCounter::PassNoRoute => "inside_pass_no_route",
            InsideCounter::PassTruncated => "inside_pass_truncated",
            InsideCounter::DropMultiBuffer => "inside_drop_multi_buffer",
        }
    }
}

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
    /// ESP in IPv4 (plain or UDP) with an SPI no inbound SA has: dropped
    /// (4 IN_US_V4_PKT_SA_NOT_FOUND_SPI).
    DropUnknownSpiV4 = 11,
    /// The same in IPv6 (12 IN_US_V6_PKT_SA_NOT_FOUND_SPI).
    DropUnknownSpiV6 = 12,
    /// ESP in IPv4 for a recently deleted SA: dropped (1 IN_V4_PKT_HIT_INVALID_SA).
    DropDeletedSpiV4 = 13,
    /// The same in IPv6 (9 IN_V6_PKT_HIT_INVALID_SA).
    DropDeletedSpiV6 = 14,
    /// ESP (plain or UDP) in a frame an AF_XDP socket cannot take: a
    /// multi-buffer frame (the program is loaded with `xdp.frags`, so
    /// jumbo MTUs and large GRO frames reach it in several buffers, and our
    /// sockets do not bind with `XDP_USE_SG`) or a single buffer longer
    /// than [`XSK_FRAME_ROOM`]. Passed to the kernel, whose raw ESP and
    /// UDP sockets hand it to xdpsec as they do reassembled fragments
    /// (`kernel_esp_v4` and the like; drop 70 when it exceeds a handoff
    /// buffer). Redirecting it would lose it uncounted in the socket.
    PassMultiBuffer = 15,
}

/// Number of counter slots.
pub const XDP_COUNTER_COUNT: u32 = 16;

/// Longest frame an AF_XDP socket of ours receives: the UMEM frame (4096
/// bytes, `datapath/afxdp`) less the kernel's `XDP_PACKET_HEADROOM` (256)
/// the copy-mode receive keeps in front of it.
pub const XSK_FRAME_ROOM: u32 = 4096 - 256;

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
        XdpCounter::DropUnknownSpiV4,
        XdpCounter::DropUnknownSpiV6,
        XdpCounter::DropDeletedSpiV4,
        XdpCounter::DropDeletedSpiV6,
        XdpCounter::PassMultiBuffer,
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
            XdpCounter::DropUnknownSpiV4 => "drop_unknown_spi_v4",
            XdpCounter::DropUnknownSpiV6 => "drop_unknown_spi_v6",
            XdpCounter::DropDeletedSpiV4 => "drop_deleted_spi_v4",
            XdpCounter::DropDeletedSpiV6 => "drop_deleted_spi_v6",
            XdpCounter::PassMultiBuffer => "pass_multi_buffer",
        }
    }

    /// Whether frames counted here were dropped in XDP (early drop).
    pub const fn is_early_drop(self) -> bool {
        matches!(
            self,
            XdpCounter::DropUnknownSpiV4
                | XdpCounter::DropUnknownSpiV6
                | XdpCounter::DropDeletedSpiV4
                | XdpCounter::DropDeletedSpiV6
        )
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
        assert_eq!(
            XdpCounter::ALL.iter().filter(|c| c.is_early_drop()).count(),
            4
        );
        assert_eq!(core::mem::size_of::<SpiSample>(), 48);
        for (i, c) in InsideCounter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            for d in &InsideCounter::ALL[..i] {
                assert_ne!(c.name(), d.name());
            }
        }
    }
}
