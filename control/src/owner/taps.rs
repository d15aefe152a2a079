//! The commands of the packet trace, the drop capture and the Wireshark key
//! export (`debug platform packet-trace ...`, `show platform packet-trace
//! ...`, `monitor capture drops ...`, `show crypto ipsec sa export
//! wireshark FILE`). The trace's rows are rendered by `crate::show::trace`.
use std::{fmt::Write as _, io::Write as _, net::IpAddr, os::unix::fs::OpenOptionsExt, path::Path};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use xdpsec_datapath::{
    crypto::{Cipher, Integrity},
    sa::SaCold,
};
use xdpsec_worker::taps::{Capture, TRACE_MAX_PACKETS};

use super::Owner;
use crate::show::trace::{TracePacket, TraceSummary};

impl Owner {
    /// Called after every change of the trace or the capture (armed,
    /// cleared, started, stopped). The merge point for XDP early drop:
    /// while [`xdpsec_worker::taps::Taps::wants_every_frame`], early-droppable
    /// frames must still reach the workers (and so the trace and capture).
    pub(crate) fn taps_changed(&mut self) {
        // While a trace or capture is armed, XDP drops nothing early: they
        // see every frame userspace would count.
        self.early_drop_hold = self.taps.wants_every_frame();
        self.sync_early_drop();
    }

    /// `debug platform packet-trace packet N [drops-only]`.
    pub(crate) fn debug_packet_trace(
        &mut self,
        n: u32,
        drops_only: bool,
    ) -> Result<(String, Value)> {
        if n == 0 || n > TRACE_MAX_PACKETS {
            bail!("packet count must be 1 to {TRACE_MAX_PACKETS}");
        }
        self.taps.arm_trace(n, drops_only);
        self.taps_changed();
        let what = if drops_only {
            "dropped frames"
        } else {
            "frames"
        };
        Ok((
            format!("Packet trace armed for the next {n} {what}\n"),
            json!({"armed": n, "drops_only": drops_only}),
        ))
    }

    /// `clear platform packet-trace`: stop and forget.
    pub(crate) fn clear_packet_trace(&mut self) -> (String, Value) {
        self.taps.clear_trace();
        self.taps_changed();
        (String::new(), json!({"cleared": true}))
    }

    /// The name of tunnel index `t` (the Output column).
    fn tunnel_name(&self, t: u32) -> String {
        self.config
            .tunnels
            .get(t as usize)
            .map(|c| c.name.clone())
            .unwrap_or_else(|| format!("tunnel{t}"))
    }

    /// `show platform packet-trace summary`.
    pub(crate) fn packet_trace_summary(&self) -> TraceSummary {
        let (remaining, drops_only) = self.taps.trace_status();
        let name = |t: u32| self.tunnel_name(t);
        TraceSummary {
            packets: self
                .taps
                .trace_records()
                .iter()
                .map(|r| TracePacket::new(r, &self.interface, &name))
                .collect(),
            remaining,
            drops_only,
        }
    }

    /// `show platform packet-trace packet K`.
    pub(crate) fn packet_trace_packet(&self, k: u32) -> Result<TracePacket> {
        let recs = self.taps.trace_records();
        let r = recs
            .iter()
            .find(|r| r.pkt == k)
            .ok_or_else(|| anyhow!("packet {k} is not in the trace ({} packets)", recs.len()))?;
        Ok(TracePacket::new(r, &self.interface, &|t| {
            self.tunnel_name(t)
        }))
    }

    /// `monitor capture drops start file PATH [limit N]`.
    pub(crate) fn capture_start(
        &mut self,
        path: &str,
        limit: Option<u64>,
    ) -> Result<(String, Value)> {
        if let Some(c) = &self.capture {
            bail!(
                "a drop capture to {} is running: `monitor capture drops stop` first",
                c.path().display()
            );
        }
        let c = Capture::start(&self.taps, Path::new(path), limit)?;
        self.capture = Some(c);
        self.taps_changed();
        let lim = limit.map_or("no limit".to_string(), |n| format!("limit {n} frames"));
        Ok((
            format!("Started capture of dropped frames to {path} ({lim})\n"),
            json!({"file": path, "limit": limit}),
        ))
    }

    /// `monitor capture drops stop`.
    pub(crate) fn capture_stop(&mut self) -> Result<(String, Value)> {
        let c = self
            .capture
            .take()
            .ok_or_else(|| anyhow!("no drop capture is running"))?;
        let path = c.path().display().to_string();
        let (written, lost) = c.stop(&self.taps)?;
        self.taps_changed();
        Ok((
            format!("Stopped capture to {path}: {written} frames written, {lost} lost\n"),
            json!({"file": path, "written": written, "lost": lost}),
        ))
    }

    /// `show crypto ipsec sa export wireshark FILE`: Wireshark's `esp_sa`
    /// UAT table for the live SAs, both directions, written only to FILE
    /// (created mode 0600); the reply names the SAs, never the keys.
    pub(crate) fn export_wireshark(&self, path: &str) -> Result<(String, Value)> {
        // (source, destination, cold SA) of every live SA.
        let mut sas: Vec<(IpAddr, IpAddr, &SaCold)> = Vec::new();
        for e in self.registry.iter() {
            if let Some(c) = e.outbound.and_then(|s| self.table.cold(s.id)) {
                sas.push((e.local, e.peer, c));
            }
            for c in e.inbound.iter().filter_map(|s| self.table.cold(s.id)) {
                sas.push((e.peer, e.local, c));
            }
        }
        let mut text = String::from(
            "# Wireshark esp_sa (Preferences > Protocols > ESP > ESP SAs), written by xdpsec.\n\
             # Holds live keys: keep it private.\n",
        );
        let mut rows = Vec::new();
        let mut skipped = 0;
        for (src, dst, c) in &sas {
            let proto = if src.is_ipv4() { "IPv4" } else { "IPv6" };
            let spi = format!("0x{:08x}", c.spi);
            match wireshark_algorithms(c.cipher, c.key.as_bytes()) {
                Some((enc, ekey, auth, akey)) => {
                    let _ = writeln!(
                        text,
                        "\"{proto}\",\"{src}\",\"{dst}\",\"{spi}\",\"{enc}\",\"{ekey}\",\"{auth}\",\"{akey}\""
                    );
                }
                None => {
                    skipped += 1;
                    let _ = writeln!(
                        text,
                        "# {src} -> {dst} SPI {spi}: {} has no ESP decryption in Wireshark 4.0",
                        c.cipher.name()
                    );
                }
            }
            rows.push(json!({"src": src, "dst": dst, "spi": c.spi, "cipher": c.cipher.name()}));
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating {path}"))?;
        // An existing file keeps its mode through `open`: make sure.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .with_context(|| format!("chmod 600 {path}"))?;
        f.write_all(text.as_bytes())
            .with_context(|| format!("writing {path}"))?;
        let n = rows.len() - skipped;
        Ok((
            format!("Wrote {n} SAs to {path} (Wireshark esp_sa table, mode 0600)\n"),
            json!({"file": path, "sas": rows, "written": n, "skipped": skipped}),
        ))
    }
}

/// Wireshark's names and hex keys for a cipher and its key material:
/// (encryption algorithm, encryption key, authentication algorithm,
/// authentication key). AES-GCM's key is key || salt as one value, as
/// Wireshark wants it; `None` for ChaCha20-Poly1305, which Wireshark 4.0's
/// ESP dissector cannot decrypt.
fn wireshark_algorithms(
    cipher: Cipher,
    key: &[u8],
) -> Option<(&'static str, String, &'static str, String)> {
    let hex = |b: &[u8]| {
        let mut s = String::from("0x");
        for x in b {
            let _ = write!(s, "{x:02x}");
        }
        s
    };
    match cipher {
        Cipher::Aes128Gcm | Cipher::Aes256Gcm => Some((
            "AES-GCM with 16 octet ICV [RFC4106]",
            hex(key),
            "NULL",
            String::new(),
        )),
        Cipher::ChaCha20Poly1305 => None,
        Cipher::AesCbc(k, i) => {
            let (ek, ak) = key.split_at(k.key_len().min(key.len()));
            let auth = match i {
                Integrity::HmacSha1_96 => "HMAC-SHA-1-96 [RFC2404]",
                Integrity::HmacSha256_128 => "HMAC-SHA-256-128 [RFC4868]",
                Integrity::HmacSha384_192 => "HMAC-SHA-384-192 [RFC4868]",
                Integrity::HmacSha512_256 => "HMAC-SHA-512-256 [RFC4868]",
            };
            Some(("AES-CBC [RFC3602]", hex(ek), auth, hex(ak)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdpsec_datapath::crypto::AesKeySize;

    #[test]
    fn wireshark_names_and_keys() {
        let key: Vec<u8> = (0..36).collect();
        let (enc, k, auth, ak) = wireshark_algorithms(Cipher::Aes256Gcm, &key).unwrap();
        assert_eq!(enc, "AES-GCM with 16 octet ICV [RFC4106]");
        // Key and salt as one value.
        assert_eq!(k.len(), 2 + 72);
        assert!(k.starts_with("0x000102") && k.ends_with("2223"));
        assert_eq!((auth, ak.as_str()), ("NULL", ""));
        let key: Vec<u8> = (0..48).collect();
        let c = Cipher::AesCbc(AesKeySize::Aes128, Integrity::HmacSha256_128);
        let (enc, k, auth, ak) = wireshark_algorithms(c, &key).unwrap();
        assert_eq!(enc, "AES-CBC [RFC3602]");
        assert_eq!(k, format!("0x{}", "000102030405060708090a0b0c0d0e0f"));
        assert_eq!(auth, "HMAC-SHA-256-128 [RFC4868]");
        assert!(ak.starts_with("0x10111213") && ak.len() == 2 + 64);
        assert!(wireshark_algorithms(Cipher::ChaCha20Poly1305, &[0; 36]).is_none());
    }
}
