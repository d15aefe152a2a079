//! Per-queue classification of received frames by outer headers, shown by
//! `show platform hardware qfp active statistics` beside the XDP counters.
use std::sync::atomic::AtomicU64;

/// What a worker saw, per class (single writer: the worker).
#[derive(Debug, Default)]
pub struct ClassStats {
    /// ESP directly in IPv4.
    pub esp_v4: AtomicU64,
    /// ESP directly in IPv6.
    pub esp_v6: AtomicU64,
    /// UDP-encapsulated ESP in IPv4.
    pub udp_esp_v4: AtomicU64,
    /// UDP-encapsulated ESP in IPv6.
    pub udp_esp_v6: AtomicU64,
    /// Anything else (should not be steered).
    pub other: AtomicU64,
}

/// Frame classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// ESP in IPv4.
    EspV4,
    /// ESP in IPv6.
    EspV6,
    /// UDP-encapsulated ESP in IPv4.
    UdpEspV4,
    /// UDP-encapsulated ESP in IPv6.
    UdpEspV6,
    /// Not ESP.
    Other,
}

/// Classify an Ethernet frame by its outer headers.
pub fn classify(frame: &[u8]) -> Class {
    if frame.len() < 14 {
        return Class::Other;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &frame[14..];
    let (proto, v6) = match ethertype {
        0x0800 if ip.len() >= 20 => (ip[9], false),
        0x86dd if ip.len() >= 40 => {
            // Walk the common extension headers as the XDP program does.
            let mut next = ip[6];
            let mut off = 40usize;
            for _ in 0..6 {
                match next {
                    0 | 43 | 60 | 51 if ip.len() >= off + 2 => {
                        let len = if next == 51 {
                            (ip[off + 1] as usize + 2) * 4
                        } else {
                            (ip[off + 1] as usize + 1) * 8
                        };
                        next = ip[off];
                        off += len;
                    }
                    44 if ip.len() >= off + 8 => {
                        next = ip[off];
                        off += 8;
                    }
                    _ => break,
                }
            }
            (next, true)
        }
        _ => return Class::Other,
    };
    match (proto, v6) {
        (50, false) => Class::EspV4,
        (50, true) => Class::EspV6,
        (17, false) => Class::UdpEspV4,
        (17, true) => Class::UdpEspV6,
        _ => Class::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn classifies_outer_headers() {
        let mut v4 = vec![0x45u8; 1];
        v4.extend_from_slice(&[0; 19]);
        v4[9] = 50;
        assert_eq!(classify(&eth(0x0800, &v4)), Class::EspV4);
        v4[9] = 17;
        assert_eq!(classify(&eth(0x0800, &v4)), Class::UdpEspV4);
        let mut v6 = vec![0x60u8];
        v6.extend_from_slice(&[0; 39]);
        v6[6] = 60; // destination options, then ESP
        v6.extend_from_slice(&[50, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(classify(&eth(0x86dd, &v6)), Class::EspV6);
        assert_eq!(classify(&eth(0x0806, &[0; 28])), Class::Other);
        assert_eq!(classify(&[0u8; 5]), Class::Other);
    }
}
