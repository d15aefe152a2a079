//! Why a control connection failed, in Cisco's words, and the
//! `show sdwan control connection-history` rows both cores keep.
//!
//! The codes and their numbers are those of the `ConnFlagEnum` textual
//! convention of Cisco's SD-WAN security MIB (VIPTELA-SECURITY, the MIB
//! `CISCO-SDWAN-SECURITY-MIB` carries on); the descriptions are the legend
//! IOS XE prints above `show sdwan control connection-history`. A code
//! crosses the wire as its number (one byte) in a `Refuse` message.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

/// A control-connection error code (Cisco's `ConnFlagEnum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorCode {
    /// No error.
    NoErr = 0,
    /// SSL handshake failure (a TLS failure with no more specific code).
    HsFail = 3,
    /// Connection failure (TCP connect refused or unreachable).
    DConFail = 10,
    /// Handshake timeout.
    DhsTmo = 24,
    /// Unable to get the peer's certificate.
    NoSlPrCrt = 35,
    /// Serial number not present (not in the controller's allowed list).
    SerNtPres = 37,
    /// Failed to verify the peer's certificate (not from the configured CA,
    /// bad signature, wrong role or key usage).
    CrtVerFl = 38,
    /// Hello from an unauthenticated peer / unexpected message.
    UnAuthEl = 46,
    /// Certificate organization name mismatch.
    CtOrgNmMis = 48,
    /// Certificate expired (or not yet valid).
    CertExprd = 53,
    /// System-ip changed: the edge claims a system-ip other than the one
    /// bound to its serial (and bound to no other serial).
    SysIpChng = 54,
    /// Duplicate system-ip: the edge claims a system-ip bound to another
    /// serial.
    DupSysIpDel = 65,
}

impl ErrorCode {
    /// Every code, for decoding.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::NoErr,
        ErrorCode::HsFail,
        ErrorCode::DConFail,
        ErrorCode::DhsTmo,
        ErrorCode::NoSlPrCrt,
        ErrorCode::SerNtPres,
        ErrorCode::CrtVerFl,
        ErrorCode::UnAuthEl,
        ErrorCode::CtOrgNmMis,
        ErrorCode::CertExprd,
        ErrorCode::SysIpChng,
        ErrorCode::DupSysIpDel,
    ];

    /// The code from its MIB number.
    pub fn from_u8(v: u8) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| *c as u8 == v)
    }

    /// The code as IOS shows it (`CRTVERFL`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NoErr => "NOERR",
            ErrorCode::HsFail => "HSFAIL",
            ErrorCode::DConFail => "DCONFAIL",
            ErrorCode::DhsTmo => "DHSTMO",
            ErrorCode::NoSlPrCrt => "NOSLPRCRT",
            ErrorCode::SerNtPres => "SERNTPRES",
            ErrorCode::CrtVerFl => "CRTVERFL",
            ErrorCode::UnAuthEl => "UNAUTHEL",
            ErrorCode::CtOrgNmMis => "CTORGNMMIS",
            ErrorCode::CertExprd => "CERTEXPRD",
            ErrorCode::SysIpChng => "SYSIPCHNG",
            ErrorCode::DupSysIpDel => "DUPSYSIPDEL",
        }
    }

    /// The legend's description.
    pub fn description(self) -> &'static str {
        match self {
            ErrorCode::NoErr => "No Error.",
            ErrorCode::HsFail => "SSL Handshake failure.",
            ErrorCode::DConFail => "DTLS connection failure.",
            ErrorCode::DhsTmo => "DTLS HandShake Timeout.",
            ErrorCode::NoSlPrCrt => "Unable to get peer's certificate.",
            ErrorCode::SerNtPres => "Serial Number not present.",
            ErrorCode::CrtVerFl => "Fail to verify Peer Certificate.",
            ErrorCode::UnAuthEl => "Recd Hello from Unauthenticated peer.",
            ErrorCode::CtOrgNmMis => "Certificate Org name mismatch.",
            ErrorCode::CertExprd => "Certificate Expired",
            ErrorCode::SysIpChng => "System-IP changed.",
            ErrorCode::DupSysIpDel => "Duplicate System IP.",
        }
    }

    /// The `%SDWAN-3-...` mnemonic of a refusal with this code.
    pub fn mnemonic(self) -> &'static str {
        match self {
            ErrorCode::CrtVerFl | ErrorCode::NoSlPrCrt => "CERT_VERIFY_FAIL",
            ErrorCode::CertExprd => "CERT_EXPIRED",
            ErrorCode::CtOrgNmMis => "ORG_NAME_MISMATCH",
            ErrorCode::SerNtPres => "SERIAL_NOT_PRESENT",
            ErrorCode::DupSysIpDel | ErrorCode::SysIpChng => "SYSTEM_IP_MISMATCH",
            _ => "CONTROL_CONN_FAIL",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `show sdwan control connection-history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// `vsmart` (on an edge) or `vedge` (on the controller).
    pub peer_type: &'static str,
    /// The peer's system-ip, if known.
    pub system_ip: Option<Ipv4Addr>,
    /// The peer's site-id (0 unknown).
    pub site_id: u32,
    /// The peer's address and port.
    pub peer_ip: Option<IpAddr>,
    /// See `peer_ip`.
    pub peer_port: u16,
    /// The TLOC color of the connection (`default` when unknown).
    pub color: String,
    /// The state the connection was in: `connect`, `challenge`, `up`,
    /// `tear_down`.
    pub state: &'static str,
    /// What this side found wrong.
    pub local_error: ErrorCode,
    /// What the peer said it found wrong.
    pub remote_error: ErrorCode,
    /// Times the same failure repeated after the first (IOS counts repeats).
    pub repeat_count: u32,
    /// The organization in the peer's certificate, if one was received.
    pub organization: String,
    /// When the last of these failures happened.
    pub downtime: Instant,
}

impl HistoryRow {
    fn same_failure(&self, o: &HistoryRow) -> bool {
        self.peer_type == o.peer_type
            && self.system_ip == o.system_ip
            && self.peer_ip == o.peer_ip
            && self.color == o.color
            && self.state == o.state
            && self.local_error == o.local_error
            && self.remote_error == o.remote_error
    }
}

/// Most rows kept; older ones are dropped (ours; IOS keeps a bounded list too).
pub const HISTORY_ROWS: usize = 256;

/// The connection history, newest first; a failure that repeats the newest
/// row of the same peer and color counts up its repeat count.
#[derive(Debug, Default, Clone)]
pub struct History {
    rows: VecDeque<HistoryRow>,
}

impl History {
    /// Adds a failure (or counts a repeat of the newest of the same kind).
    pub fn push(&mut self, row: HistoryRow) {
        let same_peer = self.rows.iter().position(|r| {
            r.peer_type == row.peer_type && r.peer_ip == row.peer_ip && r.color == row.color
        });
        if let Some(i) = same_peer
            && self.rows[i].same_failure(&row)
        {
            let mut r = self.rows.remove(i).expect("index in range");
            r.repeat_count = r.repeat_count.saturating_add(1);
            r.downtime = row.downtime;
            r.organization = row.organization;
            r.site_id = row.site_id;
            r.peer_port = row.peer_port;
            self.rows.push_front(r);
            return;
        }
        self.rows.push_front(row);
        self.rows.truncate(HISTORY_ROWS);
    }

    /// Newest first.
    pub fn rows(&self) -> impl Iterator<Item = &HistoryRow> {
        self.rows.iter()
    }

    /// Forget every row.
    pub fn clear(&mut self) {
        self.rows.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    /// Every code against `ConnFlagEnum` of Cisco's CISCO-SDWAN-SECURITY-MIB
    /// (cisco/cisco-mibs, viptela-mibs/IOS-XE/17.12, the same numbers in
    /// 17.6, 17.9 and VIPTELA-SECURITY 20.x): the name we show is the
    /// MIB's label upper-cased, the number the MIB's.
    #[test]
    fn codes_are_the_mibs() {
        let mib = [
            ("noerr", 0),
            ("hsfail", 3),
            ("dconfail", 10),
            ("dhstmo", 24),
            ("noslprcrt", 35),
            ("serntpres", 37),
            ("crtverfl", 38),
            ("unauthel", 46),
            ("ctorgnmmis", 48),
            ("certexprd", 53),
            ("sysipchng", 54),
            ("dupsysipdel", 65),
        ];
        assert_eq!(mib.len(), ErrorCode::ALL.len());
        for (c, (name, n)) in ErrorCode::ALL.into_iter().zip(mib) {
            assert_eq!((c.as_str().to_lowercase().as_str(), c as u8), (name, n));
            assert_eq!(ErrorCode::from_u8(n), Some(c));
        }
    }
}
