//! Remote syslog (`[logging] host`): every line of the IOS log buffer
//! (`%CRYPTO-4-RECVD_PKT_INV_SPI` and the rest, already rate-limited as
//! `show logging` shows them) is also sent over UDP to a collector, as a
//! router does with `logging host`: RFC 3164 form by default (IOS's own
//! layout: `<PRI>SEQ: HOST: *TIMESTAMP: %FAC-SEV-MNEMONIC: text`), RFC 5424
//! on request; facility local7 by default, as on IOS.
use std::net::{SocketAddr, UdpSocket};

use crate::config::logging::{Format, LoggingConfig};

/// Sends log lines to the collector (best effort, as syslog over UDP is).
pub struct RemoteSyslog {
    sock: UdpSocket,
    cfg: LoggingConfig,
    host: String,
    seq: u64,
    /// Lines that could not be sent (the socket refused them).
    pub send_errors: u64,
}

impl RemoteSyslog {
    /// A sender from an unbound local port; `host` names this node.
    pub fn new(cfg: LoggingConfig, host: &str) -> std::io::Result<RemoteSyslog> {
        let bind: SocketAddr = if cfg.host.is_ipv4() {
            "0.0.0.0:0".parse().expect("valid")
        } else {
            "[::]:0".parse().expect("valid")
        };
        let sock = UdpSocket::bind(bind)?;
        sock.set_nonblocking(true)?;
        Ok(RemoteSyslog {
            sock,
            cfg,
            host: host.to_string(),
            seq: 0,
            send_errors: 0,
        })
    }

    /// Send one buffered line (`*Nov 28 21:00:26.523: %FAC-SEV-MNEM: ...`).
    pub fn send(&mut self, line: &str) {
        self.seq += 1;
        let msg = format_line(
            &self.cfg,
            &self.host,
            self.seq,
            line,
            std::time::SystemTime::now(),
        );
        if self.sock.send_to(msg.as_bytes(), self.cfg.host).is_err() {
            self.send_errors += 1;
        }
    }
}

/// The severity in `%FAC-SEV-MNEMONIC` (5, notice, when there is none).
fn severity(line: &str) -> u8 {
    line.split('%')
        .nth(1)
        .and_then(|m| m.split('-').nth(1))
        .and_then(|s| s.parse::<u8>().ok())
        .filter(|s| *s <= 7)
        .unwrap_or(5)
}

/// One datagram for `line`.
pub fn format_line(
    cfg: &LoggingConfig,
    host: &str,
    seq: u64,
    line: &str,
    now: std::time::SystemTime,
) -> String {
    let pri = u16::from(cfg.facility) * 8 + u16::from(severity(line));
    match cfg.format {
        // IOS: `<189>42: edge1: *Nov 28 21:00:26.523: %CRYPTO-4-...: text`
        Format::Rfc3164 => format!("<{pri}>{seq}: {host}: {line}"),
        Format::Rfc5424 => {
            let d = now
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let msg = line.find('%').map_or(line, |i| &line[i..]);
            format!(
                "<{pri}>1 {} {host} xdpsec - {} - {msg}",
                rfc3339(d),
                msgid(msg)
            )
        }
    }
}

/// RFC 5424's MSGID for the message `msg`: its `FAC-SEV-MNEMONIC`, cut to
/// the 32 characters the field holds (`CRYPTO-4-RECVD_PKT_INV_IDENTITY_ACL`
/// is 35); `-` (none) when `msg` has no mnemonic or it is not printable
/// US-ASCII without spaces.
fn msgid(msg: &str) -> &str {
    let Some(rest) = msg.strip_prefix('%') else {
        return "-";
    };
    let m = rest.split(':').next().unwrap_or_default();
    if m.is_empty() || !m.bytes().all(|b| (33..=126).contains(&b)) {
        return "-";
    }
    &m[..m.len().min(32)]
}

/// `2026-11-28T21:00:26.523Z`.
fn rfc3339(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "*Nov 28 21:00:26.523: %CRYPTO-4-RECVD_PKT_INV_SPI: decaps: rec'd IPSEC packet has invalid spi for destaddr=198.51.100.1, prot=50, spi=0x1(1), srcaddr=198.51.100.2";

    #[test]
    fn ios_layout_with_local7_and_the_messages_severity() {
        let cfg = LoggingConfig {
            host: "198.51.100.2:514".parse().unwrap(),
            facility: 23,
            format: Format::Rfc3164,
        };
        let m = format_line(&cfg, "edge1", 7, LINE, std::time::SystemTime::now());
        // local7 (23) * 8 + warning (4) = 188.
        assert_eq!(m, format!("<188>7: edge1: {LINE}"));
        assert_eq!(severity("*x: %SDWAN-3-CONTROL_AUTH_FAIL: y"), 3);
        assert_eq!(severity("no mnemonic"), 5);
    }

    #[test]
    fn rfc5424_form() {
        let cfg = LoggingConfig {
            host: "198.51.100.2:514".parse().unwrap(),
            facility: 16,
            format: Format::Rfc5424,
        };
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_813_226_523);
        let m = format_line(&cfg, "edge1", 1, LINE, t);
        // local0 (16) * 8 + warning (4) = 132.
        assert!(m.starts_with("<132>1 2026-11-27T21:00:26.523Z "), "{m}");
        assert!(
            m.contains(
                " edge1 xdpsec - CRYPTO-4-RECVD_PKT_INV_SPI - %CRYPTO-4-RECVD_PKT_INV_SPI: decaps"
            ),
            "{m}"
        );
        // MSGID is at most 32 printable characters (RFC 5424 section 6).
        let acl = format_line(
            &cfg,
            "edge1",
            2,
            "*Nov 28 21:00:26.523: %CRYPTO-4-RECVD_PKT_INV_IDENTITY_ACL: decapsulate",
            t,
        );
        assert!(
            acl.contains(" edge1 xdpsec - CRYPTO-4-RECVD_PKT_INV_IDENTITY_ - %CRYPTO-4-RECVD_PKT_INV_IDENTITY_ACL: decapsulate"),
            "{acl}"
        );
        let plain = format_line(&cfg, "edge1", 3, "*Nov 28 21:00:26.523: no mnemonic", t);
        assert!(plain.contains(" edge1 xdpsec - - - *Nov 28"), "{plain}");
        assert_eq!(
            rfc3339(std::time::Duration::from_millis(951_782_400_000)),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
