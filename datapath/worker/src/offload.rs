//! Segmentation offloads on frames, without I/O: the virtio-net header a
//! TUN opened with `IFF_VNET_HDR` puts before every packet
//! (`include/uapi/linux/virtio_net.h`), TCP and UDP segmentation of the
//! GSO super-packets it hands over (`Documentation/networking/
//! segmentation-offloads.rst`), completion of partial checksums, and (in
//! [`gro`]) the coalescing of decrypted TCP segments into super-packets
//! written back with one header.
//!
//! Everything here reads untrusted bytes (the kernel's, and after decrypt
//! the peer's): every length is checked before use, nothing panics.

pub mod gro;

/// Bytes of the virtio-net header (`struct virtio_net_hdr`, the size set
/// with `TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start +
/// csum_offset` holds only the pseudo-header sum; the rest is ours to add.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksums were verified already.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO: IP fragmentation, never accepted here).
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO: one UDP datagram per segment).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: the TCP super-packet had CWR set.
pub const GSO_ECN: u8 = 0x80;

const TCP: u8 = 6;
const UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// `struct virtio_net_hdr` (fields in the host's byte order: a legacy TUN
/// header, as long as `TUNSETVNETBE`/`LE` are not used).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`, possibly with `GSO_ECN`.
    pub gso_type: u8,
    /// Bytes of the headers (IP + TCP/UDP) of a GSO packet.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksum to complete starts (the L4 header).
    pub csum_start: u16,
    /// The checksum field's offset from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The header at the start of `b`, or `None` when `b` is too short.
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..VNET_HDR_LEN)?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The header's bytes.
    pub fn emit(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        ]
        .into_iter()
        .enumerate()
        {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// The header of a single packet whose checksums need no checking.
    pub const DATA_VALID: VnetHdr = VnetHdr {
        flags: F_DATA_VALID,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// The GSO type without the ECN bit.
    pub fn gso(&self) -> u8 {
        self.gso_type & !GSO_ECN
    }
}

/// Why a packet read with a virtio-net header could not be used (the
/// caller drops it and counts it once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffloadError {
    /// Shorter than its headers say, or not IPv4/IPv6.
    Malformed,
    /// A GSO type not handled (UFO), or one that does not match the packet.
    Unsupported,
    /// The checksum offsets point outside the packet.
    BadChecksumOffsets,
    /// `gso_size` of 0, or headers that leave no room for payload within
    /// the largest inner packet.
    BadSegmentSize,
    /// The caller's buffer is too small for a segment.
    NoRoom,
}

/// Add `data` as big-endian 16-bit words to `sum` (an odd last byte is
/// padded with zero), unfolded.
pub fn sum_words(data: &[u8], mut sum: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        sum += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        sum += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Fold an unfolded sum to 16 bits (ones' complement), not inverted.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Where the L4 header of an IPv4/IPv6 packet starts and which protocol
/// it is (IPv6 without extension headers only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct L3 {
    pub v6: bool,
    pub l4: usize,
    pub proto: u8,
}

pub(crate) fn l3(pkt: &[u8]) -> Option<L3> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            (ihl >= 20 && pkt.len() >= ihl).then_some(L3 {
                v6: false,
                l4: ihl,
                proto: pkt[9],
            })
        }
        6 if pkt.len() >= 40 => Some(L3 {
            v6: true,
            l4: 40,
            proto: pkt[6],
        }),
        _ => None,
    }
}

/// The unfolded pseudo-header sum of `pkt` (its addresses, `proto`) for
/// an L4 length of `l4_len`.
pub(crate) fn pseudo_sum(pkt: &[u8], v6: bool, proto: u8, l4_len: usize) -> u64 {
    let addrs = if v6 { &pkt[8..40] } else { &pkt[12..20] };
    sum_words(addrs, u64::from(proto) + l4_len as u64)
}

/// Recompute an IPv4 header's checksum (`ihl` bytes at the start of `pkt`).
pub(crate) fn ipv4_header_checksum(pkt: &mut [u8], ihl: usize) {
    pkt[10] = 0;
    pkt[11] = 0;
    let c = !fold(sum_words(&pkt[..ihl], 0));
    pkt[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Complete a partial checksum (`F_NEEDS_CSUM`): the field holds the
/// pseudo-header sum; add everything from `csum_start` on and store the
/// complement. Nothing to do without the flag.
pub fn complete_checksum(hdr: &VnetHdr, pkt: &mut [u8]) -> Result<(), OffloadError> {
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if start > pkt.len() || at + 2 > pkt.len() {
        return Err(OffloadError::BadChecksumOffsets);
    }
    let mut c = !fold(sum_words(&pkt[start..], 0));
    // UDP: a computed 0 is sent as 0xffff (0 means "no checksum").
    if c == 0 && hdr.csum_offset == 6 {
        c = 0xffff;
    }
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Gateway mode: complete the TCP or UDP checksum of `pkt` (an IP packet
/// read from the inside interface) if it is in the partial form a host
/// with transmit checksum offload leaves for the device (the field holds
/// the pseudo-header sum only; AF_XDP carries no `CHECKSUM_PARTIAL` to
/// say so). A checksum that already adds up, or that is wrong in any
/// other way, is left as it is (the receiver judges it). True when one
/// was completed. Not for fragments or IPv6 extension headers.
pub fn complete_partial(pkt: &mut [u8]) -> bool {
    let Some(l3) = l3(pkt) else {
        return false;
    };
    let field = match l3.proto {
        TCP => 16,
        UDP => 6,
        _ => return false,
    };
    if !l3.v6 && u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
        return false;
    }
    let at = l3.l4 + field;
    let Some(cur) = pkt.get(at..at + 2) else {
        return false;
    };
    let cur = u16::from_be_bytes([cur[0], cur[1]]);
    let pseudo = pseudo_sum(pkt, l3.v6, l3.proto, pkt.len() - l3.l4);
    if cur != fold(pseudo) {
        return false;
    }
    // The field holds the pseudo-header sum: the sum over the L4 bytes
    // as they are is pseudo-header plus data. All ones (with the pseudo
    // header added once more) means it was already right.
    let l4 = sum_words(&pkt[l3.l4..], 0);
    if fold(l4 + pseudo) == 0xffff {
        return false;
    }
    let mut c = !fold(l4);
    if c == 0 && l3.proto == UDP {
        c = 0xffff;
    }
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Write a full L4 checksum into `seg` (whose L4 header starts at `l3.l4`;
/// the field at `l4 + field`).
fn l4_checksum(seg: &mut [u8], l3: L3, field: usize) {
    let at = l3.l4 + field;
    seg[at] = 0;
    seg[at + 1] = 0;
    let sum = sum_words(
        &seg[l3.l4..],
        pseudo_sum(seg, l3.v6, l3.proto, seg.len() - l3.l4),
    );
    let mut c = !fold(sum);
    if c == 0 && l3.proto == UDP {
        c = 0xffff;
    }
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// What [`segment`] made of a super-packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segmented {
    /// Segments emitted.
    pub segments: u32,
}

/// Split the GSO super-packet `pkt` (read after `hdr`) into packets of at
/// most `max_len` bytes, as the kernel's TSO/USO would: for TCP the
/// sequence numbers advance by the payload, FIN and PSH stay only on the
/// last segment and CWR only on the first; for UDP each segment is a
/// datagram of its own; IPv4 IDs count up from the super-packet's, lengths
/// and checksums (IPv4 header, TCP/UDP) are computed for each segment.
/// Each segment is built in `scratch` and handed to `emit` in order.
pub fn segment(
    hdr: &VnetHdr,
    pkt: &[u8],
    max_len: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<Segmented, OffloadError> {
    let l3 = l3(pkt).ok_or(OffloadError::Malformed)?;
    let want = match hdr.gso() {
        GSO_TCPV4 => (false, TCP),
        GSO_TCPV6 => (true, TCP),
        GSO_UDP_L4 => (l3.v6, UDP),
        _ => return Err(OffloadError::Unsupported),
    };
    if (l3.v6, l3.proto) != want {
        return Err(OffloadError::Unsupported);
    }
    let hdr_len = if l3.proto == TCP {
        let doff = usize::from(pkt.get(l3.l4 + 12).ok_or(OffloadError::Malformed)? >> 4) * 4;
        if doff < 20 {
            return Err(OffloadError::Malformed);
        }
        l3.l4 + doff
    } else {
        l3.l4 + 8
    };
    if pkt.len() < hdr_len {
        return Err(OffloadError::Malformed);
    }
    let mss = usize::from(hdr.gso_size).min(max_len.saturating_sub(hdr_len));
    if mss == 0 {
        return Err(OffloadError::BadSegmentSize);
    }
    let (head, payload) = pkt.split_at(hdr_len);
    let n = payload.len().div_ceil(mss).max(1);
    if scratch.len() < hdr_len + mss.min(payload.len()) {
        return Err(OffloadError::NoRoom);
    }
    let ip_id = if l3.v6 {
        0
    } else {
        u16::from_be_bytes([pkt[4], pkt[5]])
    };
    let seq0 = if l3.proto == TCP {
        u32::from_be_bytes([
            pkt[l3.l4 + 4],
            pkt[l3.l4 + 5],
            pkt[l3.l4 + 6],
            pkt[l3.l4 + 7],
        ])
    } else {
        0
    };
    for i in 0..n {
        let chunk = payload
            .get(i * mss..((i + 1) * mss).min(payload.len()))
            .unwrap_or(&[]);
        let len = hdr_len + chunk.len();
        let seg = &mut scratch[..len];
        seg[..hdr_len].copy_from_slice(head);
        seg[hdr_len..].copy_from_slice(chunk);
        if l3.v6 {
            seg[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        } else {
            seg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            seg[4..6].copy_from_slice(&ip_id.wrapping_add(i as u16).to_be_bytes());
            ipv4_header_checksum(seg, l3.l4);
        }
        if l3.proto == TCP {
            let seq = seq0.wrapping_add((i * mss) as u32);
            seg[l3.l4 + 4..l3.l4 + 8].copy_from_slice(&seq.to_be_bytes());
            if i + 1 < n {
                seg[l3.l4 + 13] &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                seg[l3.l4 + 13] &= !TCP_CWR;
            }
            l4_checksum(seg, l3, 16);
        } else {
            seg[l3.l4 + 4..l3.l4 + 6].copy_from_slice(&((len - l3.l4) as u16).to_be_bytes());
            l4_checksum(seg, l3, 6);
        }
        emit(seg);
    }
    Ok(Segmented { segments: n as u32 })
}

/// Gateway mode: the header that makes [`segment`] cut the TCP packet
/// `pkt`, longer than `max_len`, into segments of at most `max_len` bytes
/// (as TSO would have, had the host's MTU been the tunnel's); `None` when
/// it is not TCP, an IPv4 fragment, or malformed.
pub fn tso_header(pkt: &[u8], max_len: usize) -> Option<VnetHdr> {
    let l3 = l3(pkt)?;
    if l3.proto != TCP || (!l3.v6 && u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0) {
        return None;
    }
    let doff = usize::from(*pkt.get(l3.l4 + 12)? >> 4) * 4;
    let hdr_len = l3.l4 + doff;
    if doff < 20 || pkt.len() <= hdr_len || max_len <= hdr_len {
        return None;
    }
    Some(VnetHdr {
        flags: 0,
        gso_type: if l3.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: hdr_len as u16,
        gso_size: u16::try_from(max_len - hdr_len).ok()?,
        csum_start: l3.l4 as u16,
        csum_offset: 16,
    })
}

/// A packet read from a TUN with virtio-net headers, made ready to
/// encrypt: a GSO super-packet is split by [`segment`] (each piece to
/// `emit`), any other packet gets its partial checksum completed in place
/// and goes to `emit` as it is. Returns how many packets were emitted and
/// whether the input was a super-packet.
pub fn prepare(
    hdr: &VnetHdr,
    pkt: &mut [u8],
    max_len: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<(u32, bool), OffloadError> {
    if hdr.gso() == GSO_NONE {
        complete_checksum(hdr, pkt)?;
        emit(pkt);
        return Ok((1, false));
    }
    let s = segment(hdr, pkt, max_len, scratch, emit)?;
    Ok((s.segments, true))
}

#[cfg(test)]
pub(crate) mod tests;
