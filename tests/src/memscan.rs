//! Searching a running process's writable memory for key bytes (as root:
//! `/proc/PID/maps`, then `/proc/PID/mem`), directly or as the input key
//! material of an SD-WAN pairwise key.
//!
//! An SD-WAN edge exports its SA keys for Wireshark (`show crypto ipsec sa
//! export wireshark`), and those are pairwise keys: HKDF-SHA256 of the
//! receiving TLOC's advertised key (the TLOC key, the one the controller
//! reflects) and both TLOC identities. A TLOC key is found in memory by
//! trying every high-entropy 36-byte window as that input: a window whose
//! HKDF output is an exported pairwise key is the TLOC key.
use std::{
    io::{Read, Seek, SeekFrom},
    net::Ipv4Addr,
};

use ring::hkdf;

/// A writable region of a process and its bytes.
pub struct Region {
    /// The line of `/proc/PID/maps`.
    pub map: String,
    /// Its start address.
    pub start: u64,
    /// Its bytes, as read.
    pub bytes: Vec<u8>,
}

/// Every readable and writable mapping of process `pid` (private or
/// shared, heap, stacks, anonymous), read through `/proc/PID/mem`. Mappings
/// the kernel will not read (device memory such as AF_XDP rings, or
/// `[vvar]`) are left out and named in the second list.
pub fn writable_memory(pid: u32) -> (Vec<Region>, Vec<String>) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("/proc/PID/maps");
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("/proc/PID/mem");
    let (mut out, mut unread) = (Vec::new(), Vec::new());
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (range, perms) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        if !perms.starts_with("rw") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let start = u64::from_str_radix(a, 16).unwrap();
        let end = u64::from_str_radix(b, 16).unwrap();
        let mut bytes = vec![0u8; (end - start) as usize];
        let ok = mem.seek(SeekFrom::Start(start)).is_ok() && mem.read_exact(&mut bytes).is_ok();
        if ok {
            out.push(Region {
                map: line.to_string(),
                start,
                bytes,
            });
        } else {
            unread.push(line.to_string());
        }
    }
    (out, unread)
}

/// Where `needle` occurs in `regions`: (address, the region's maps line).
pub fn find(regions: &[Region], needle: &[u8]) -> Vec<(u64, String)> {
    let mut hits = Vec::new();
    for r in regions {
        for (i, w) in r.bytes.windows(needle.len()).enumerate() {
            if w == needle {
                hits.push((r.start + i as u64, r.map.clone()));
            }
        }
    }
    hits
}

/// A TLOC as the pairwise key's info names it.
pub struct Tloc<'a> {
    /// System-ip.
    pub system_ip: Ipv4Addr,
    /// Color.
    pub color: &'a str,
}

/// The HKDF info of the pairwise key from `sender` to `receiver` under the
/// receiver's SPI, as xdpsec-omp's `pairwise_key` documents it:
/// `"xdpsec-omp pairwise-key v1"` || sender system-ip || color length ||
/// color || receiver system-ip || color length || color || SPI (BE).
pub fn pairwise_info(sender: &Tloc, receiver: &Tloc, spi: u32) -> Vec<u8> {
    let mut info = b"xdpsec-omp pairwise-key v1".to_vec();
    for t in [sender, receiver] {
        info.extend_from_slice(&t.system_ip.octets());
        info.push(t.color.len() as u8);
        info.extend_from_slice(t.color.as_bytes());
    }
    info.extend_from_slice(&spi.to_be_bytes());
    info
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256 (no salt) of `ikm` with `info`, 36 bytes.
pub fn hkdf36(ikm: &[u8], info: &[u8]) -> [u8; 36] {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(ikm);
    let mut out = [0u8; 36];
    prk.expand(&[info], Len(36))
        .and_then(|okm| okm.fill(&mut out))
        .unwrap();
    out
}

/// For each (info, pairwise key) target, where in `regions` a 36-byte
/// window lies whose HKDF with that info is the key (the TLOC key it was
/// derived from). Only windows whose first 32 bytes (the AES key) hold at
/// least 20 distinct values are tried: 32 random bytes have about 30, and
/// fewer than 20 with a probability below 10^-9.
pub fn find_ikm(regions: &[Region], targets: &[(Vec<u8>, [u8; 36])]) -> Vec<Vec<(u64, String)>> {
    let mut hits = vec![Vec::new(); targets.len()];
    for r in regions {
        let b = &r.bytes;
        if b.len() < 36 {
            continue;
        }
        let mut count = [0u16; 256];
        let mut distinct = 0;
        for &x in &b[..32] {
            count[x as usize] += 1;
            distinct += usize::from(count[x as usize] == 1);
        }
        for i in 0..=b.len() - 36 {
            if distinct >= 20 {
                let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&b[i..i + 36]);
                for (t, (info, want)) in targets.iter().enumerate() {
                    let mut out = [0u8; 36];
                    prk.expand(&[info], Len(36))
                        .and_then(|okm| okm.fill(&mut out))
                        .unwrap();
                    if &out == want {
                        hits[t].push((r.start + i as u64, r.map.clone()));
                    }
                }
            }
            // Slide the 32-byte window by one.
            let (gone, new) = (b[i] as usize, b[i + 32] as usize);
            count[gone] -= 1;
            distinct -= usize::from(count[gone] == 0);
            count[new] += 1;
            distinct += usize::from(count[new] == 1);
        }
    }
    hits
}

/// One row of a Wireshark `esp_sa` file: (source, destination, SPI, key).
pub fn esp_sa_rows(text: &str) -> Vec<(String, String, u32, Vec<u8>)> {
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        if f.len() < 6 {
            continue;
        }
        let spi = u32::from_str_radix(f[3].trim_start_matches("0x"), 16).unwrap();
        let hex = f[5].trim_start_matches("0x");
        let key = (0..hex.len() / 2)
            .map(|k| u8::from_str_radix(&hex[2 * k..2 * k + 2], 16).unwrap())
            .collect();
        rows.push((f[1].to_string(), f[2].to_string(), spi, key));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_tloc_key_by_its_pairwise_key_and_a_key_by_its_bytes() {
        let tloc: Vec<u8> = (0..36u8).map(|i| i.wrapping_mul(97) ^ 0x3c).collect();
        let (a, b) = (
            Tloc {
                system_ip: Ipv4Addr::new(192, 0, 2, 1),
                color: "biz-internet",
            },
            Tloc {
                system_ip: Ipv4Addr::new(192, 0, 2, 2),
                color: "mpls",
            },
        );
        let info = pairwise_info(&a, &b, 0x1234);
        let pair = hkdf36(&tloc, &info);
        let mut bytes = vec![0u8; 5000];
        bytes[1001..1037].copy_from_slice(&tloc);
        bytes[3000..3036].copy_from_slice(&pair);
        let regions = [Region {
            map: "heap".into(),
            start: 0x1000,
            bytes,
        }];
        let hits = find_ikm(&regions, &[(info.clone(), pair), (info, [7; 36])]);
        assert_eq!(hits[0], [(0x1000 + 1001, "heap".to_string())]);
        assert!(hits[1].is_empty());
        assert_eq!(
            find(&regions, &pair[..16]),
            [(0x1000 + 3000, "heap".into())]
        );
    }

    #[test]
    fn pairwise_info_is_xdpsec_omps() {
        // The scan must derive exactly what the edges do.
        let ikm = xdpsec_omp::KeyMaterial::random(&ring::rand::SystemRandom::new());
        let (s, r) = (
            xdpsec_omp::TlocId {
                system_ip: Ipv4Addr::new(192, 0, 2, 3),
                color: "mpls".into(),
            },
            xdpsec_omp::TlocId {
                system_ip: Ipv4Addr::new(192, 0, 2, 1),
                color: "biz-internet".into(),
            },
        );
        let want = xdpsec_omp::pairwise_key(&ikm, &s, &r, 0xdead_beef);
        let info = pairwise_info(
            &Tloc {
                system_ip: s.system_ip,
                color: &s.color,
            },
            &Tloc {
                system_ip: r.system_ip,
                color: &r.color,
            },
            0xdead_beef,
        );
        assert_eq!(&hkdf36(ikm.bytes(), &info), want.bytes());
    }
}
