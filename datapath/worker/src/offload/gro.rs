//! Coalescing of decrypted TCP segments into super-packets (the receive
//! side of the TUN offloads), without I/O: [`Gro::push`] takes decrypted
//! packets one at a time and keeps, per flow, an open super-packet (a
//! copy: the frames go back to the kernel after their batch) that later
//! segments of the flow extend, across batches; a group is written (to
//! the caller's `out`) when nothing more can join it, when its flow sends
//! something that cannot join, when [`Gro::end_batch`] finds it
//! [`MAX_AGE`] batches old, and by [`Gro::flush`], which the worker calls
//! whenever its receive ring is empty (as NAPI flushes GRO at the end of
//! a poll). A group of one is written as the packet it was.
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
pub const MAX_GROUPS: usize = 8;
/// Batches a group stays open at most (a flow that trickles while others
/// keep the receive ring busy is not held back longer).
pub const MAX_AGE: u32 = 8;
/// Largest super-packet (IPv4 total length, IPv6 payload length).
const MAX_SUPER: usize = 65535;
const TCP_ACK: u8 = 0x10;
/// Header bytes of a packet that may be coalesced (IPv4 20 or IPv6 40,
/// TCP up to 60).
const MAX_HDR: usize = 100;

/// One packet for the TUN: a single packet as it was decrypted
/// ([`VnetHdr::DATA_VALID`]), or a super-packet of coalesced segments
/// (its GSO header).
pub struct GroOut<'a> {
    /// The virtio-net header to write before it.
    pub hdr: VnetHdr,
    /// The packet.
    pub pkt: &'a [u8],
    /// The caller's tags of the packets it carries, in order (their
    /// count: the segments).
    pub tags: &'a [u32],
}

/// One open group: the first packet as it was, every later payload
/// appended.
struct Group {
    buf: Vec<u8>,
    tags: Vec<u32>,
    hdr_len: usize,
    l3: L3,
    /// Payload bytes of the first segment (every one but the last has it).
    seg_size: usize,
    next_seq: u32,
    last_flags: u8,
    /// The batch it was opened in.
    born: u32,
}

/// The coalescing state of one worker (buffers allocated as groups first
/// open, then reused).
#[derive(Default)]
pub struct Gro {
    groups: Vec<Group>,
    /// Buffers of written groups, for the next ones.
    spare: Vec<(Vec<u8>, Vec<u32>)>,
    batch: u32,
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
    let l4 = l3.l4;
    if a.len() != b.len() || b.len() != l4 + usize::from(b[l4 + 12] >> 4) * 4 {
        return false;
    }
    // Compared as slices around the fields that may differ (this runs for
    // every decrypted segment).
    let ip = if l3.v6 {
        a[..4] == b[..4] && a[6..l4] == b[6..l4]
    } else {
        a[..2] == b[..2] && a[6..10] == b[6..10] && a[12..l4] == b[12..l4]
    };
    ip && a[l4..l4 + 4] == b[l4..l4 + 4]
        && a[l4 + 8..l4 + 13] == b[l4 + 8..l4 + 13]
        && (a[l4 + 13] ^ b[l4 + 13]) & !TCP_PSH == 0
        && a[l4 + 14..l4 + 16] == b[l4 + 14..l4 + 16]
        && a[l4 + 18..] == b[l4 + 18..]
}

impl Gro {
    /// Whether no group is open.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Take the decrypted packet `pkt` (tagged `tag`, handed back with
    /// it): it joins its flow's open group, opens one, or is written
    /// through `out` at once (after its flow's open group).
    pub fn push(&mut self, pkt: &[u8], tag: u32, out: &mut impl FnMut(GroOut<'_>)) {
        let Some(seg) = candidate(pkt) else {
            // Not coalesced: after what its flow had so far.
            if let Some(at) = self.flow_of(pkt) {
                self.write(at, out);
            }
            return out(GroOut {
                hdr: VnetHdr::DATA_VALID,
                pkt,
                tags: &[tag],
            });
        };
        let found = self
            .groups
            .iter()
            .position(|g| g.l3 == seg.l3 && same_flow(&g.buf[..g.hdr_len], pkt, seg.l3));
        if let Some(at) = found {
            let g = &mut self.groups[at];
            let fits = g.buf.len() + seg.payload - g.l3.l4 * usize::from(g.l3.v6) <= MAX_SUPER;
            if fits
                && seg.seq == g.next_seq
                && seg.payload <= g.seg_size
                && same_headers(&g.buf[..g.hdr_len], &pkt[..seg.hdr_len], seg.l3)
            {
                g.buf.extend_from_slice(&pkt[seg.hdr_len..]);
                g.tags.push(tag);
                g.next_seq = seg.seq.wrapping_add(seg.payload as u32);
                g.last_flags = seg.flags;
                // A PSH or a short segment ends the group: nothing more
                // joins, so it goes now.
                if seg.flags & TCP_PSH != 0 || seg.payload < g.seg_size {
                    self.write(at, out);
                }
                return;
            }
            self.write(at, out);
        } else if self.groups.len() == MAX_GROUPS {
            self.write(0, out);
        }
        if seg.flags & TCP_PSH != 0 {
            // Nothing could join it.
            return out(GroOut {
                hdr: VnetHdr::DATA_VALID,
                pkt,
                tags: &[tag],
            });
        }
        let (mut buf, mut tags) = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.reserve(MAX_SUPER);
        buf.extend_from_slice(pkt);
        tags.clear();
        tags.push(tag);
        self.groups.push(Group {
            buf,
            tags,
            hdr_len: seg.hdr_len,
            l3: seg.l3,
            seg_size: seg.payload,
            next_seq: seg.seq.wrapping_add(seg.payload as u32),
            last_flags: seg.flags,
            born: self.batch,
        });
    }

    /// The end of a batch: groups [`MAX_AGE`] batches old are written.
    pub fn end_batch(&mut self, out: &mut impl FnMut(GroOut<'_>)) {
        self.batch = self.batch.wrapping_add(1);
        while let Some(at) = self
            .groups
            .iter()
            .position(|g| self.batch.wrapping_sub(g.born) >= MAX_AGE)
        {
            self.write(at, out);
        }
    }

    /// Write every open group (oldest first).
    pub fn flush(&mut self, out: &mut impl FnMut(GroOut<'_>)) {
        while !self.groups.is_empty() {
            self.write(0, out);
        }
    }

    /// The open group of `pkt`'s flow, if any.
    fn flow_of(&self, pkt: &[u8]) -> Option<usize> {
        let l3 = l3(pkt)?;
        if l3.proto != TCP || pkt.len() < l3.l4 + 4 {
            return None;
        }
        self.groups
            .iter()
            .position(|g| g.l3.v6 == l3.v6 && same_flow(&g.buf[..g.hdr_len], pkt, l3))
    }

    /// Write the group at `at` and keep its buffers.
    fn write(&mut self, at: usize, out: &mut impl FnMut(GroOut<'_>)) {
        let mut g = self.groups.remove(at);
        if g.tags.len() == 1 {
            out(GroOut {
                hdr: VnetHdr::DATA_VALID,
                pkt: &g.buf,
                tags: &g.tags,
            });
        } else {
            let hdr = finish(&mut g);
            out(GroOut {
                hdr,
                pkt: &g.buf,
                tags: &g.tags,
            });
        }
        self.spare.push((g.buf, g.tags));
    }
}

/// Make the group's buffer a super-packet: the total length, PSH if the
/// last segment had it, and the TCP checksum field holding the
/// pseudo-header sum for the kernel to complete (`F_NEEDS_CSUM`); its
/// virtio-net header.
fn finish(g: &mut Group) -> VnetHdr {
    let (l3, len) = (g.l3, g.buf.len());
    let pkt = &mut g.buf[..];
    // Within 16 bits: a segment joins only if the total fits MAX_SUPER.
    if l3.v6 {
        pkt[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    } else {
        pkt[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        super::ipv4_header_checksum(pkt, l3.l4);
    }
    pkt[l3.l4 + 13] |= g.last_flags & TCP_PSH;
    let partial = fold(pseudo_sum(pkt, l3.v6, TCP, len - l3.l4));
    pkt[l3.l4 + 16..l3.l4 + 18].copy_from_slice(&partial.to_be_bytes());
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if l3.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: g.hdr_len as u16,
        gso_size: g.seg_size as u16,
        csum_start: l3.l4 as u16,
        csum_offset: 16,
    }
}
