//! Packets the unit tests build.

/// An inner IPv4/UDP packet header from `src` port `sport` to `dst`.
pub(crate) fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&[0x30, 0x39, 0, 8, 0, 0]);
    p
}
