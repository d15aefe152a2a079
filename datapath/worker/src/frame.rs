//! Ethernet framing around the core: the encapsulation of an inner packet
//! into a frame for the underlay (the workers', control's injects' and the
//! generator's one path), and inner packets in and out of the inside
//! interface's Ethernet frames (gateway mode).
use xdpsec_datapath::{SaSnapshot, WorkerState, encap};

/// An IP packet without trailing bytes beyond its length field (the
/// padding of a short Ethernet frame); unchanged when the field does not
/// fit (the core judges the packet then).
pub(crate) fn ip_packet(b: &[u8]) -> &[u8] {
    let len = match b.first().map(|v| v >> 4) {
        Some(4) if b.len() >= 20 => usize::from(u16::from_be_bytes([b[2], b[3]])),
        Some(6) if b.len() >= 40 => 40 + usize::from(u16::from_be_bytes([b[4], b[5]])),
        _ => return b,
    };
    b.get(..len).unwrap_or(b)
}

/// Write an Ethernet frame (`dst`, `src`, the IP version's EtherType)
/// carrying the IP packet `pkt` into `buf`; its length, or `None` when it
/// does not fit.
pub(crate) fn ethernet_frame(
    buf: &mut [u8],
    dst: [u8; 6],
    src: [u8; 6],
    pkt: &[u8],
) -> Option<usize> {
    let len = 14 + pkt.len();
    let out = buf.get_mut(..len)?;
    out[..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    let et: u16 = if pkt.first().is_some_and(|v| v >> 4 == 6) {
        0x86dd
    } else {
        0x0800
    };
    out[12..14].copy_from_slice(&et.to_be_bytes());
    out[14..].copy_from_slice(pkt);
    Some(len)
}

/// Build the Ethernet frame (`macs`: destination, source) carrying `inner`
/// encrypted for `tunnel` into `buf`; returns its length, or `None` when
/// the core refused (and counted the drop). The one encapsulation path for
/// packets read from the TUN, handed off, or injected by control.
pub fn encap_frame(
    ws: &mut WorkerState,
    snap: &SaSnapshot,
    tunnel: u32,
    inner: &[u8],
    macs: [[u8; 6]; 2],
    buf: &mut [u8],
) -> Option<usize> {
    let Some((eth, rest)) = buf.split_at_mut_checked(14) else {
        // Too small for anything: the core counts 110.
        let _ = encap(ws, snap, tunnel, inner, &mut []);
        return None;
    };
    // Err: counted by the core (one drop reason each).
    let out = encap(ws, snap, tunnel, inner, rest).ok()?;
    eth[..6].copy_from_slice(&macs[0]);
    eth[6..12].copy_from_slice(&macs[1]);
    let et: u16 = if rest[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
    eth[12..14].copy_from_slice(&et.to_be_bytes());
    Some(14 + out.len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::udp4;

    #[test]
    fn inside_frames_lose_ethernet_padding_and_gain_a_header_on_the_way_out() {
        // A 28-byte IPv4 packet in a minimum frame: 18 bytes of padding.
        let mut p = udp4([203, 0, 113, 1], 7, [203, 0, 113, 2]);
        let mut padded = p.clone();
        padded.resize(46, 0);
        assert_eq!(ip_packet(&padded), &p[..]);
        // A length field beyond the bytes: left for the core to judge.
        p[3] = 200;
        assert_eq!(ip_packet(&p), &p[..]);
        assert_eq!(ip_packet(&[0x45, 0]), &[0x45, 0]);
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        v6.resize(48, 1);
        let mut padded = v6.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(ip_packet(&padded), &v6[..]);
        let mut buf = [0u8; 64];
        let (dst, src) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let n = ethernet_frame(&mut buf, dst, src, &v6).unwrap();
        assert_eq!(n, 14 + 48);
        assert_eq!(&buf[..12], &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
        assert_eq!(&buf[12..14], &[0x86, 0xdd]);
        assert_eq!(&buf[14..n], &v6[..]);
        // Too small a buffer: nothing written, no panic.
        assert_eq!(ethernet_frame(&mut buf[..40], dst, src, &v6), None);
    }
}
