//! Coalescing of decrypted TCP segments into super-packets (the receive
//! side of the TUN offloads), without I/O: [`Gro::plan`] groups the
//! packets of one batch, [`build`] writes one group as a super-packet with
//! the virtio-net header that tells the kernel how it was cut.
//!
//! The rules are the kernel's GRO rules (`tcp_gro_receive`): same flow,
//! the next segment's sequence number exactly where the previous payload
//! ended, identical IP and TCP headers apart from lengths, IDs, checksums
//! and PSH (so the same ACK, window and options), flags ACK and at most
//! PSH, no IPv4 options or fragments, no IPv6 extension headers, every
//! segment but the last of the first one's size, at most 64 KB. A segment
//! with PSH, or smaller than the first, ends its group. Packets of one
//! flow keep their order; packets of different flows may be reordered
//! against each other.
use super::{F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, L3, TCP, TCP_PSH, VnetHdr, fold, l3, pseudo_sum};

/// Open groups kept at once; one more flow closes the oldest.
const MAX_GROUPS: usize = 8;
/// Largest super-packet (IPv4 total length, IPv6 payload length).
const MAX_SUPER: usize = 65535;
const TCP_ACK: u8 = 0x10;
/// Header bytes kept of a group's first packet (IPv4 20 or IPv6 40, TCP
/// up to 60).
const MAX_HDR: usize = 100;

/// One packet written to the TUN: a single packet, or a group of
/// coalesced TCP segments (packet indices in the batch: `first`, then
/// [`Gro::next`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroOut {
    /// Index of the first packet.
    pub first: u16,
    /// Packets in the group (1: write the packet as it is).
    pub count: u16,
    /// Bytes of the super-packet (headers once, every payload).
    pub len: u32,
}

#[derive(Clone, Copy)]
struct Group {
    out: GroOut,
    last: u16,
    /// The first packet's headers (IP + TCP) and their length.
    hdr: [u8; MAX_HDR],
    hdr_len: usize,
    l3: L3,
    /// Payload bytes of the first segment (every one but the last has it).
    seg_size: usize,
    next_seq: u32,
    /// A PSH or a short segment ended the group: nothing more joins.
    closed: bool,
}

/// Scratch for coalescing one batch (allocated once, reused).
#[derive(Default)]
pub struct Gro {
    groups: Vec<Group>,
    next: Vec<u16>,
    out: Vec<GroOut>,
}

/// A TCP segment that may join a group: its layout and fields.
struct Seg {
    l3: L3,
    hdr_len: usize,
    payload: usize,
    seq: u32,
    flags: u8,
}

/// `pkt` as a segment that may be coalesced, or `None` (not TCP, IPv4
/// options or a fragment, IPv6 extension headers, flags other than
/// ACK/PSH, no payload, lengths that disagree with the packet).
fn candidate(pkt: &[u8]) -> Option<Seg> {
    let l3 = l3(pkt)?;
    if l3.proto != TCP {
        return None;
    }
    if l3.v6 {
        if usize::from(u16::from_be_bytes([pkt[4], pkt[5]])) + 40 != pkt.len() {
            return None;
        }
    } else {
        let frag = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff;
        if l3.l4 != 20
            || frag != 0
            || usize::from(u16::from_be_bytes([pkt[2], pkt[3]])) != pkt.len()
        {
            return None;
        }
    }
    let tcp = pkt.get(l3.l4..l3.l4 + 20)?;
    let doff = usize::from(tcp[12] >> 4) * 4;
    let hdr_len = l3.l4 + doff;
    if doff < 20 || hdr_len > pkt.len() || hdr_len > MAX_HDR {
        return None;
    }
    let flags = tcp[13];
    if flags & !TCP_PSH != TCP_ACK || hdr_len == pkt.len() {
        return None;
    }
    Some(Seg {
        l3,
        hdr_len,
        payload: pkt.len() - hdr_len,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        flags,
    })
}

/// The 5-tuple's bytes of a TCP packet: addresses, ports.
fn same_flow(a: &[u8], b: &[u8], l3: L3) -> bool {
    let (addrs, ports) = if l3.v6 {
        (8..40, 40..44)
    } else {
        (12..20, 20..24)
    };
    a.get(addrs.clone()) == b.get(addrs) && a.get(ports.clone()) == b.get(ports)
}

/// Whether the headers of `b` equal `a`'s apart from the fields that
/// differ between segments: IPv4 total length, ID and checksum, IPv6
/// payload length, TCP sequence number, checksum and PSH.
fn same_headers(a: &[u8], b: &[u8], l3: L3) -> bool {
    if a.len() != b.len() || b.len() != l3.l4 + usize::from(b[l3.l4 + 12] >> 4) * 4 {
        return false;
    }
    let l4 = l3.l4;
    a.iter().zip(b).enumerate().all(|(i, (x, y))| {
        let skip = if l3.v6 {
            matches!(i, 4 | 5)
        } else {
            matches!(i, 2..=5 | 10 | 11)
        } || (l4 + 4..l4 + 8).contains(&i)
            || i == l4 + 16
            || i == l4 + 17;
        skip || if i == l4 + 13 {
            (x ^ y) & !TCP_PSH == 0
        } else {
            x == y
        }
    })
}

impl Gro {
    /// Group `pkts` (one batch of decrypted packets, in order). The
    /// returned outputs cover every packet exactly once.
    pub fn plan<'a>(&mut self, pkts: impl IntoIterator<Item = &'a [u8]>) -> &[GroOut] {
        self.groups.clear();
        self.next.clear();
        self.out.clear();
        for (i, pkt) in pkts.into_iter().enumerate() {
            let i = i as u16;
            self.next.push(u16::MAX);
            self.add(i, pkt);
        }
        let groups = std::mem::take(&mut self.groups);
        self.out.extend(groups.iter().map(|g| g.out));
        self.groups = groups;
        self.groups.clear();
        &self.out
    }

    /// What the last [`Gro::plan`] made of its batch.
    pub fn outputs(&self) -> &[GroOut] {
        &self.out
    }

    /// The packet after `i` in its group (`None` after the last).
    pub fn next(&self, i: u16) -> Option<u16> {
        self.next
            .get(usize::from(i))
            .copied()
            .filter(|&n| n != u16::MAX)
    }

    /// The packet indices of `out`, in order.
    pub fn members(&self, out: GroOut) -> impl Iterator<Item = u16> + '_ {
        std::iter::successors(Some(out.first), move |&i| self.next(i)).take(usize::from(out.count))
    }

    fn single(&mut self, i: u16, len: usize) {
        self.out.push(GroOut {
            first: i,
            count: 1,
            len: len as u32,
        });
    }

    /// Close (output) the open group of `pkt`'s flow, if any.
    fn close_flow(&mut self, pkt: &[u8]) -> Option<usize> {
        let l3 = l3(pkt)?;
        if l3.proto != TCP || pkt.len() < l3.l4 + 4 {
            return None;
        }
        let at = self
            .groups
            .iter()
            .position(|g| g.l3.v6 == l3.v6 && same_flow(&g.hdr[..g.hdr_len], pkt, l3))?;
        let g = self.groups.remove(at);
        self.out.push(g.out);
        Some(at)
    }

    fn add(&mut self, i: u16, pkt: &[u8]) {
        let Some(seg) = candidate(pkt) else {
            // Not coalesced: after what its flow had so far.
            self.close_flow(pkt);
            self.single(i, pkt.len());
            return;
        };
        let found = self
            .groups
            .iter()
            .position(|g| g.l3 == seg.l3 && same_flow(&g.hdr[..g.hdr_len], pkt, seg.l3));
        if let Some(at) = found {
            let g = &mut self.groups[at];
            let fits =
                g.out.len as usize + seg.payload - g.l3.l4 * usize::from(g.l3.v6) <= MAX_SUPER;
            if !g.closed
                && fits
                && seg.seq == g.next_seq
                && seg.payload <= g.seg_size
                && same_headers(&g.hdr[..g.hdr_len], &pkt[..seg.hdr_len], seg.l3)
            {
                self.next[usize::from(g.last)] = i;
                g.last = i;
                g.out.count += 1;
                g.out.len += seg.payload as u32;
                g.next_seq = seg.seq.wrapping_add(seg.payload as u32);
                g.closed = seg.flags & TCP_PSH != 0 || seg.payload < g.seg_size;
                return;
            }
            let g = self.groups.remove(at);
            self.out.push(g.out);
        } else if self.groups.len() == MAX_GROUPS {
            let g = self.groups.remove(0);
            self.out.push(g.out);
        }
        let mut hdr = [0u8; MAX_HDR];
        hdr[..seg.hdr_len].copy_from_slice(&pkt[..seg.hdr_len]);
        self.groups.push(Group {
            out: GroOut {
                first: i,
                count: 1,
                len: pkt.len() as u32,
            },
            last: i,
            hdr,
            hdr_len: seg.hdr_len,
            l3: seg.l3,
            seg_size: seg.payload,
            next_seq: seg.seq.wrapping_add(seg.payload as u32),
            closed: seg.flags & TCP_PSH != 0,
        });
    }
}

/// Write the group whose packets are `pkts` (in order, as [`Gro::plan`]
/// grouped them) into `out` as one super-packet: the first packet's
/// headers, every payload, the total length, PSH if the last had it, and
/// the TCP checksum field holding the pseudo-header sum for the kernel to
/// complete (`F_NEEDS_CSUM`). Returns its virtio-net header and length;
/// `None` when `out` is too small or the packets are not a group.
pub fn build<'a>(
    mut pkts: impl Iterator<Item = &'a [u8]>,
    out: &mut [u8],
) -> Option<(VnetHdr, usize)> {
    let first = pkts.next()?;
    let seg = candidate(first)?;
    let l3 = seg.l3;
    out.get_mut(..first.len())?.copy_from_slice(first);
    let mut len = first.len();
    let mut last_flags = seg.flags;
    for p in pkts {
        let s = candidate(p)?;
        let payload = &p[s.hdr_len..];
        out.get_mut(len..len + payload.len())?
            .copy_from_slice(payload);
        len += payload.len();
        last_flags = s.flags;
    }
    let pkt = &mut out[..len];
    if l3.v6 {
        pkt[4..6].copy_from_slice(&u16::try_from(len - 40).ok()?.to_be_bytes());
    } else {
        pkt[2..4].copy_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
        super::ipv4_header_checksum(pkt, l3.l4);
    }
    pkt[l3.l4 + 13] |= last_flags & TCP_PSH;
    let partial = fold(pseudo_sum(pkt, l3.v6, TCP, len - l3.l4));
    pkt[l3.l4 + 16..l3.l4 + 18].copy_from_slice(&partial.to_be_bytes());
    Some((
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if l3.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: seg.hdr_len as u16,
            gso_size: seg.payload as u16,
            csum_start: l3.l4 as u16,
            csum_offset: 16,
        },
        len,
    ))
}
