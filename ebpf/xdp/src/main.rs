//! The xdpsec XDP program.
//!
//! Steers ESP (IP protocol 50, over IPv4 or IPv6) and UDP-encapsulated ESP
//! (RFC 3948, to the UDP destination ports marked in `UDP_PORTS`) to the
//! AF_XDP socket of the receiving queue. Everything else, and anything it
//! cannot parse with certainty, passes to the kernel untouched. Every frame
//! bumps exactly one per-CPU counter (`xdpsec_common::XdpCounter`).
//!
//! Early drop: while `EARLY_DROP` is armed, ESP whose SPI is not live in
//! `SPIS` (kept by control from its SA table) is dropped here and counted as
//! unknown (4/12) or recently deleted (1/9), with at most one sample per
//! millisecond per CPU sent to userspace through `SPI_SAMPLES` for the IOS
//! log line. Only frames the userspace parser would also have reached the
//! SPI lookup with are dropped; anything unusual goes up as before.
//!
//! Multi-buffer (`xdp.frags`): the program declares it handles frames in
//! several buffers. Without that, veth caps the peer's MTU at about 3.5 KB
//! (a jumbo-MTU veth refuses a driver-mode attach) and NIC drivers refuse
//! or disable multi-buffer receive. Everything here reads headers within
//! the first buffer only (`data..data_end` is the first buffer), which is
//! all a frags program may assume. A frame to be steered that is
//! multi-buffer, or longer than an AF_XDP frame, passes to the kernel
//! instead (`PassMultiBuffer`): our sockets bind without `XDP_USE_SG`,
//! and the kernel would drop such a redirect uncounted by us.
#![no_std]
#![no_main]

use core::mem;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_ns, bpf_xdp_get_buff_len},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, RingBuf, XskMap, lpm_trie::Key},
    programs::XdpContext,
};
use xdpsec_common::{
    INSIDE_COUNTER_COUNT, INSIDE_MAX_FRAME, IPPROTO_ESP, IPPROTO_UDP, InsideCounter, MAX_INSIDE_ROUTES, MAX_QUEUES,
    MAX_SPIS, SAMPLE_GAP_NS, SPI_LIVE, SPI_SAMPLES_BYTES, SpiSample, UDP_PORT_SLOTS,
    XDP_COUNTER_COUNT, XSK_FRAME_ROOM, XdpCounter,
};

#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

#[map(name = "UDP_PORTS")]
static UDP_PORTS: Array<u8> = Array::with_max_entries(UDP_PORT_SLOTS, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(XDP_COUNTER_COUNT, 0);

/// Inbound SPIs: `SPI_LIVE`, or "recently deleted until" in monotonic ns.
/// Entries are allocated on insert (BPF_F_NO_PREALLOC), not all up front.
#[map(name = "SPIS")]
static SPIS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_SPIS, BPF_F_NO_PREALLOC);

/// Slot 0 non-zero: early drop armed. Zero (the initial value) until
/// control filled `SPIS`, and while a capture or trace needs every frame.
#[map(name = "EARLY_DROP")]
static EARLY_DROP: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "SPI_SAMPLES")]
static SPI_SAMPLES: RingBuf = RingBuf::with_byte_size(SPI_SAMPLES_BYTES, 0);

/// Per CPU: when it last sent a sample (monotonic ns).
#[map(name = "SAMPLE_AT")]
static SAMPLE_AT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Inside role: IPv4 inner prefixes routed into tunnels (filled by control).
#[map(name = "INSIDE_ROUTES_V4")]
static INSIDE_ROUTES_V4: LpmTrie<[u8; 4], u8> =
    LpmTrie::with_max_entries(MAX_INSIDE_ROUTES, BPF_F_NO_PREALLOC);

/// Inside role: IPv6 inner prefixes routed into tunnels.
#[map(name = "INSIDE_ROUTES_V6")]
static INSIDE_ROUTES_V6: LpmTrie<[u8; 16], u8> =
    LpmTrie::with_max_entries(MAX_INSIDE_ROUTES, BPF_F_NO_PREALLOC);

/// Inside role: slot 0 non-zero once the sockets take chained frames
/// (`XDP_USE_SG`); set by control after binding them.
#[map(name = "INSIDE_MULTI_BUFFER")]
static INSIDE_MULTI_BUFFER: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "INSIDE_COUNTERS")]
static INSIDE_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(INSIDE_COUNTER_COUNT, 0);

const BPF_F_NO_PREALLOC: u32 = 1;
const ETH_HDR_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPV6_HDR_LEN: usize = 40;
const UDP_HDR_LEN: usize = 8;
/// SPI + sequence number: the least a frame must carry to be handed to the datapath.
const ESP_HDR_LEN: usize = 8;
/// IPv6 extension headers walked before giving up (and passing the frame);
/// `ipv6::MAX_EXT_HEADERS` in the datapath is the same.
const MAX_IPV6_EXT_HDRS: usize = 6;
/// Largest transport offset accepted; keeps the verifier's offset range bounded.
const MAX_L4_OFFSET: usize = 512;

/// Where a frame goes.
enum Verdict {
    Steer(XdpCounter),
    Pass(XdpCounter),
    Drop(XdpCounter),
}

/// The outer IP header as early drop needs it.
struct Outer {
    /// Offset of the IP header.
    l3: usize,
    v6: bool,
    /// End of the IP datagram (from its length field).
    ip_end: usize,
    /// The userspace parser would reach the SPI lookup on this header
    /// (IPv4: no options, valid checksum, length within the frame; IPv6: no
    /// extension headers, length within the frame). Only then may XDP drop:
    /// anything else goes up and gets its own drop reason there.
    clean: bool,
}

// `frags`: loaded with BPF_F_XDP_HAS_FRAGS (section `xdp.frags`); see the
// module doc for what that asks of the program.
#[xdp(frags)]
pub fn xdpsec(ctx: XdpContext) -> u32 {
    match classify(&ctx) {
        Verdict::Steer(_) if !fits_socket(&ctx) => {
            count(XdpCounter::PassMultiBuffer);
            xdp_action::XDP_PASS
        }
        Verdict::Steer(counter) => {
            // SAFETY: ctx.ctx is the kernel's xdp_md for this invocation.
            let queue = unsafe { (*ctx.ctx).rx_queue_index };
            // Falls back to XDP_PASS when the queue has no socket in the map.
            match XSKS.redirect(queue, xdp_action::XDP_PASS as u64) {
                Ok(action) => {
                    count(counter);
                    action
                }
                Err(_) => {
                    count(XdpCounter::PassNoSocket);
                    xdp_action::XDP_PASS
                }
            }
        }
        Verdict::Pass(counter) => {
            count(counter);
            xdp_action::XDP_PASS
        }
        Verdict::Drop(counter) => {
            count(counter);
            xdp_action::XDP_DROP
        }
    }
}

/// Whether an AF_XDP socket without `XDP_USE_SG` can take the frame: one
/// buffer, no longer than a UMEM frame's room.
#[inline(always)]
fn fits_socket(ctx: &XdpContext) -> bool {
    // SAFETY: ctx.ctx is the kernel's xdp_md for this invocation.
    let total = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    total == ctx.data_end() - ctx.data() && total <= XSK_FRAME_ROOM as usize
}

/// The inside role (gateway mode): inner IPv4/IPv6 whose destination a
/// tunnel route covers goes to the queue's AF_XDP socket (to be
/// encrypted); everything else (ARP, neighbour discovery, traffic for the
/// gateway itself or for unrouted destinations) passes to the kernel. The
/// routes are the control plane's `INSIDE_ROUTES_*` tries, so nothing that
/// would find no tunnel in userspace is taken from the kernel.
// `frags` as the underlay program: a jumbo inside MTU keeps driver mode.
#[xdp(frags)]
pub fn xdpsec_inside(ctx: XdpContext) -> u32 {
    let (steer, counter) = classify_inside(&ctx);
    if !steer {
        count_inside(counter);
        return xdp_action::XDP_PASS;
    }
    if !fits_inside_socket(&ctx) {
        // Our socket cannot take it, and the kernel would route it in
        // clear: dropped, counted.
        count_inside(InsideCounter::DropMultiBuffer);
        return xdp_action::XDP_DROP;
    }
    // SAFETY: ctx.ctx is the kernel's xdp_md for this invocation.
    let queue = unsafe { (*ctx.ctx).rx_queue_index };
    match XSKS.redirect(queue, xdp_action::XDP_PASS as u64) {
        Ok(action) => {
            count_inside(counter);
            action
        }
        Err(_) => {
            count_inside(InsideCounter::PassNoSocket);
            xdp_action::XDP_PASS
        }
    }
}

/// Whether the inside socket can take the frame: any frame up to
/// [`INSIDE_MAX_FRAME`] once the sockets take chained frames (a host's
/// GSO super-packet, which a generic-mode program sees whole on veth),
/// else one that fits a single UMEM frame.
#[inline(always)]
fn fits_inside_socket(ctx: &XdpContext) -> bool {
    match INSIDE_MULTI_BUFFER.get(0) {
        Some(on) if *on != 0 => {
            // SAFETY: ctx.ctx is the kernel's xdp_md for this invocation.
            let total = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
            total <= INSIDE_MAX_FRAME as usize
        }
        _ => fits_socket(ctx),
    }
}

/// (steer?, counter) for a frame on the inside interface.
#[inline(always)]
fn classify_inside(ctx: &XdpContext) -> (bool, InsideCounter) {
    let Some(ethertype) = read::<[u8; 2]>(ctx, 12) else {
        return (false, InsideCounter::PassTruncated);
    };
    match u16::from_be_bytes(ethertype) {
        ETH_P_IP => {
            // Version/IHL .. destination address: the fixed 20 bytes.
            let Some(hdr) = read::<[u8; 20]>(ctx, ETH_HDR_LEN) else {
                return (false, InsideCounter::PassTruncated);
            };
            if hdr[0] >> 4 != 4 {
                return (false, InsideCounter::PassTruncated);
            }
            let key = Key::new(32, [hdr[16], hdr[17], hdr[18], hdr[19]]);
            match INSIDE_ROUTES_V4.get(&key) {
                Some(_) => (true, InsideCounter::SteeredV4),
                None => (false, InsideCounter::PassNoRoute),
            }
        }
        ETH_P_IPV6 => {
            let Some(dst) = read::<[u8; 16]>(ctx, ETH_HDR_LEN + 24) else {
                return (false, InsideCounter::PassTruncated);
            };
            // Two bytes, never one (see classify_v4).
            match read::<[u8; 2]>(ctx, ETH_HDR_LEN) {
                Some(v) if v[0] >> 4 == 6 => {}
                _ => return (false, InsideCounter::PassTruncated),
            }
            match INSIDE_ROUTES_V6.get(&Key::new(128, dst)) {
                Some(_) => (true, InsideCounter::SteeredV6),
                None => (false, InsideCounter::PassNoRoute),
            }
        }
        _ => (false, InsideCounter::PassNotIp),
    }
}

#[inline(always)]
fn count_inside(counter: InsideCounter) {
    if let Some(slot) = INSIDE_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn count(counter: XdpCounter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// A pointer to a `T` at `offset`, if the whole `T` lies inside the frame.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    // SAFETY: ptr_at checked that the bytes are inside the packet.
    ptr_at::<T>(ctx, offset).map(|p| unsafe { core::ptr::read_unaligned(p) })
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> Verdict {
    let Some(ethertype) = read::<[u8; 2]>(ctx, 12) else {
        return Verdict::Pass(XdpCounter::PassTruncated);
    };
    match u16::from_be_bytes(ethertype) {
        ETH_P_IP => classify_v4(ctx, ETH_HDR_LEN),
        ETH_P_IPV6 => classify_v6(ctx, ETH_HDR_LEN),
        _ => Verdict::Pass(XdpCounter::PassNotIp),
    }
}

#[inline(always)]
fn classify_v4(ctx: &XdpContext, l3: usize) -> Verdict {
    // Fixed part of the IPv4 header: version/IHL, ..., flags/fragment offset, TTL, protocol.
    let Some(hdr) = read::<[u8; 20]>(ctx, l3) else {
        return Verdict::Pass(XdpCounter::PassTruncated);
    };
    if hdr[0] >> 4 != 4 {
        return Verdict::Pass(XdpCounter::PassTruncated);
    }
    let ihl = ((hdr[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Verdict::Pass(XdpCounter::PassTruncated);
    }
    let frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    let more_fragments = frag & 0x2000 != 0;
    let frag_offset = frag & 0x1fff;
    let l4 = l3 + ihl;
    // Options must be present in full before we trust the transport offset.
    // (Never a 1-byte check: LLVM turns `p + 1 > end` into `end > p`, which
    // the verifier does not accept as a bound. Read the last two bytes.)
    if ptr_at::<[u8; 2]>(ctx, l4 - 2).is_none() {
        return Verdict::Pass(XdpCounter::PassTruncated);
    }
    // Fragments go to the kernel, which reassembles them; xdpsec reads
    // whole ESP and UDP-ESP datagrams from its raw ESP and UDP sockets
    // (RFC 4303 3.4.1: reassembly before ESP processing).
    if more_fragments || frag_offset != 0 {
        return Verdict::Pass(XdpCounter::PassFragment);
    }
    let total = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
    let frame_len = ctx.data_end() - ctx.data();
    let outer = Outer {
        l3,
        v6: false,
        ip_end: l3 + total,
        clean: ihl == 20 && total >= 20 && l3 + total <= frame_len && checksum_ok(&hdr),
    };
    match hdr[9] {
        IPPROTO_ESP => esp_header_present(ctx, &outer, l4, XdpCounter::SteeredEspV4),
        IPPROTO_UDP => classify_udp(ctx, &outer, l4, XdpCounter::SteeredUdpEspV4),
        _ => Verdict::Pass(XdpCounter::PassOther),
    }
}

#[inline(always)]
fn classify_v6(ctx: &XdpContext, l3: usize) -> Verdict {
    let Some(hdr) = read::<[u8; 8]>(ctx, l3) else {
        return Verdict::Pass(XdpCounter::PassTruncated);
    };
    if hdr[0] >> 4 != 6 {
        return Verdict::Pass(XdpCounter::PassTruncated);
    }
    let mut next = hdr[6];
    let mut off = l3 + IPV6_HDR_LEN;
    for _ in 0..MAX_IPV6_EXT_HDRS {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-octet units, not counting the first.
            0 | 43 | 60 => {
                let Some(ext) = read::<[u8; 2]>(ctx, off) else {
                    return Verdict::Pass(XdpCounter::PassTruncated);
                };
                next = ext[0];
                off += (ext[1] as usize + 1) * 8;
            }
            // A fragment: for the kernel to reassemble (as in classify_v4).
            44 => return Verdict::Pass(XdpCounter::PassFragment),
            // Authentication header: length in 4-octet units, minus 2 (RFC
            // 4302 2.2). The datapath's walker (datapath/src/wire/ipv6.rs)
            // does the same, with the same limit of headers.
            51 => {
                let Some(ext) = read::<[u8; 2]>(ctx, off) else {
                    return Verdict::Pass(XdpCounter::PassTruncated);
                };
                next = ext[0];
                off += (ext[1] as usize + 2) * 4;
            }
            _ => break,
        }
        if off > MAX_L4_OFFSET {
            return Verdict::Pass(XdpCounter::PassTruncated);
        }
    }
    if off > MAX_L4_OFFSET {
        return Verdict::Pass(XdpCounter::PassTruncated);
    }
    let payload_len = u16::from_be_bytes([hdr[4], hdr[5]]) as usize;
    let ip_end = l3 + IPV6_HDR_LEN + payload_len;
    let outer = Outer {
        l3,
        v6: true,
        ip_end,
        clean: off == l3 + IPV6_HDR_LEN && ip_end <= ctx.data_end() - ctx.data(),
    };
    match next {
        IPPROTO_ESP => esp_header_present(ctx, &outer, off, XdpCounter::SteeredEspV6),
        IPPROTO_UDP => classify_udp(ctx, &outer, off, XdpCounter::SteeredUdpEspV6),
        // Still an extension header after the walk, or any other protocol.
        _ => Verdict::Pass(XdpCounter::PassOther),
    }
}

#[inline(always)]
fn esp_header_present(ctx: &XdpContext, outer: &Outer, off: usize, counter: XdpCounter) -> Verdict {
    if ptr_at::<[u8; ESP_HDR_LEN]>(ctx, off).is_none() {
        return Verdict::Pass(XdpCounter::PassTruncated);
    }
    if off + ESP_HDR_LEN > outer.ip_end {
        return Verdict::Steer(counter);
    }
    early_drop(ctx, outer, off, 0, 0, counter)
}

#[inline(always)]
fn classify_udp(ctx: &XdpContext, outer: &Outer, l4: usize, counter: XdpCounter) -> Verdict {
    let Some(udp) = read::<[u8; UDP_HDR_LEN]>(ctx, l4) else {
        return Verdict::Pass(XdpCounter::PassTruncated);
    };
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    match UDP_PORTS.get(dport as u32) {
        Some(v) if *v != 0 => {}
        _ => return Verdict::Pass(XdpCounter::PassOther),
    }
    // Payload length from the UDP header, not the frame: Ethernet may pad short frames.
    let ulen = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if ulen < UDP_HDR_LEN {
        return Verdict::Pass(XdpCounter::PassTruncated);
    }
    let payload = ulen - UDP_HDR_LEN;
    let data = l4 + UDP_HDR_LEN;
    // RFC 3948 section 2.2: a single 0xFF octet is a NAT-keepalive.
    if payload == 1 {
        // Read the payload byte with the last byte of the UDP header before
        // it: see classify_v4 on why no 1-byte bounds check.
        return match read::<[u8; 2]>(ctx, data - 1) {
            Some([_, 0xff]) => Verdict::Pass(XdpCounter::PassKeepalive),
            Some(_) => Verdict::Pass(XdpCounter::PassOther),
            None => Verdict::Pass(XdpCounter::PassTruncated),
        };
    }
    if payload < 4 {
        return Verdict::Pass(XdpCounter::PassTruncated);
    }
    let Some(marker) = read::<[u8; 4]>(ctx, data) else {
        return Verdict::Pass(XdpCounter::PassTruncated);
    };
    // RFC 3948 section 2.2: a zero SPI field is the non-ESP marker (IKE on port 4500).
    if marker == [0, 0, 0, 0] {
        return Verdict::Pass(XdpCounter::PassIkeMarker);
    }
    // ESP needs at least SPI and sequence number.
    if payload < ESP_HDR_LEN || ptr_at::<[u8; ESP_HDR_LEN]>(ctx, data).is_none() {
        return Verdict::Pass(XdpCounter::PassTruncated);
    }
    if l4 + ulen > outer.ip_end {
        return Verdict::Steer(counter);
    }
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    early_drop(ctx, outer, data, sport, dport, counter)
}

/// IPv4 header checksum (RFC 791) over a 20-byte header: valid when the
/// one's complement sum of its 16-bit words is 0xffff.
#[inline(always)]
fn checksum_ok(hdr: &[u8; 20]) -> bool {
    let mut sum = 0u32;
    let mut i = 0;
    while i < 20 {
        sum += u16::from_be_bytes([hdr[i], hdr[i + 1]]) as u32;
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum == 0xffff
}

/// Steer the ESP frame at `esp` (SPI and sequence number present), or drop
/// it when early drop is armed and its SPI is not live.
#[inline(always)]
fn early_drop(
    ctx: &XdpContext,
    outer: &Outer,
    esp: usize,
    sport: u16,
    dport: u16,
    steer: XdpCounter,
) -> Verdict {
    if !outer.clean {
        return Verdict::Steer(steer);
    }
    let Some(spi) = read::<[u8; 4]>(ctx, esp) else {
        return Verdict::Steer(steer);
    };
    let spi = u32::from_be_bytes(spi);
    // SAFETY: the value is copied out at once; the kernel frees a deleted
    // entry only after the program run (RCU).
    let deleted_until = match unsafe { SPIS.get(&spi) } {
        Some(&SPI_LIVE) => return Verdict::Steer(steer),
        Some(&until) => until,
        None => 0,
    };
    match EARLY_DROP.get(0) {
        Some(armed) if *armed != 0 => {}
        _ => return Verdict::Steer(steer),
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let deleted = now < deleted_until;
    sample(ctx, outer, spi, deleted, sport, dport, now);
    Verdict::Drop(match (outer.v6, deleted) {
        (false, false) => XdpCounter::DropUnknownSpiV4,
        (true, false) => XdpCounter::DropUnknownSpiV6,
        (false, true) => XdpCounter::DropDeletedSpiV4,
        (true, true) => XdpCounter::DropDeletedSpiV6,
    })
}

/// Send the dropped frame's SPI and addresses to userspace, at most one
/// sample per `SAMPLE_GAP_NS` per CPU (the log line is rate-limited further
/// there); a full ring loses the sample, never the count.
#[inline(always)]
fn sample(
    ctx: &XdpContext,
    outer: &Outer,
    spi: u32,
    deleted: bool,
    sport: u16,
    dport: u16,
    now: u64,
) {
    let Some(last) = SAMPLE_AT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, only this CPU touches it while the program runs.
    unsafe {
        if now.wrapping_sub(*last) < SAMPLE_GAP_NS {
            return;
        }
        *last = now;
    }
    // One read at a time, each returning on failure: a tuple of Options
    // lets LLVM carry an undefined register into the merge, which the
    // verifier refuses.
    let (src, dst) = if outer.v6 {
        let Some(a) = read::<u64>(ctx, outer.l3 + 8) else {
            return;
        };
        let Some(b) = read::<u64>(ctx, outer.l3 + 16) else {
            return;
        };
        let Some(c) = read::<u64>(ctx, outer.l3 + 24) else {
            return;
        };
        let Some(d) = read::<u64>(ctx, outer.l3 + 32) else {
            return;
        };
        ([a, b], [c, d])
    } else {
        let Some(a) = read::<u32>(ctx, outer.l3 + 12) else {
            return;
        };
        let Some(b) = read::<u32>(ctx, outer.l3 + 16) else {
            return;
        };
        // Little-endian BPF: the low word's bytes come first in memory.
        ([a as u64, 0], [b as u64, 0])
    };
    let s = SpiSample {
        spi,
        family: if outer.v6 { 6 } else { 4 },
        deleted: deleted as u8,
        dport,
        sport,
        _pad: 0,
        src,
        dst,
    };
    let _ = SPI_SAMPLES.output::<SpiSample>(&s, 0);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
