//! `show sdwan bfd sessions` and `show sdwan bfd summary`.
use std::net::{IpAddr, Ipv4Addr};

use serde_json::{Value, json};

use super::{dashes, table_line};
use crate::show::omp::uptime;

/// One BFD session, as `show sdwan bfd sessions` lists it: from a local
/// TLOC (color) to a remote TLOC.
#[derive(Debug, Clone)]
pub struct BfdSessionRow {
    /// The remote edge's system-ip.
    pub system_ip: Ipv4Addr,
    /// The remote edge's site-id.
    pub site_id: u32,
    /// `up` or `down`.
    pub state: &'static str,
    /// The local TLOC's color.
    pub source_color: String,
    /// The remote TLOC's color.
    pub remote_color: String,
    /// The local TLOC's address.
    pub source_ip: IpAddr,
    /// The remote TLOC's public address.
    pub destination_ip: IpAddr,
    /// The remote TLOC's public port (after any port hop).
    pub destination_port: u16,
    /// `ipsec`.
    pub encap: &'static str,
    /// BFD detect multiplier.
    pub multiplier: u8,
    /// BFD transmit interval in milliseconds.
    pub tx_interval_ms: u32,
    /// Seconds since the session came up (0 while down).
    pub uptime_seconds: u64,
    /// State transitions since the session was created.
    pub transitions: u64,
}

/// `show sdwan bfd sessions`, read by genieparser's `ShowSdwanBfdSessions`.
///
/// JSON: `{"sessions":[{"system_ip","site_id","state","source_color",
/// "remote_color","source_ip","destination_ip","destination_port","encap",
/// "multiplier","tx_interval_ms","uptime_seconds","transitions"}]}`.
/// Genie keys its result by system-ip and source color, so it keeps the
/// last row of each such pair.
pub fn bfd_sessions(rows: &[BfdSessionRow]) -> (String, Value) {
    const W: [usize; 13] = [16, 8, 11, 16, 16, 16, 16, 11, 6, 11, 15, 13, 0];
    let mut t = table_line(
        &W,
        &[
            "",
            "",
            "",
            "SOURCE TLOC",
            "REMOTE TLOC",
            "",
            "DST PUBLIC",
            "DST PUBLIC",
            "",
            "DETECT",
            "TX",
        ],
    );
    t += &table_line(
        &W,
        &[
            "SYSTEM IP",
            "SITE ID",
            "STATE",
            "COLOR",
            "COLOR",
            "SOURCE IP",
            "IP",
            "PORT",
            "ENCAP",
            "MULTIPLIER",
            "INTERVAL(msec)",
            "UPTIME",
            "TRANSITIONS",
        ],
    );
    t += &dashes(&t);
    let mut list = Vec::new();
    for r in rows {
        t += &table_line(
            &W,
            &[
                &r.system_ip.to_string(),
                &r.site_id.to_string(),
                r.state,
                &r.source_color,
                &r.remote_color,
                &r.source_ip.to_string(),
                &r.destination_ip.to_string(),
                &r.destination_port.to_string(),
                r.encap,
                &r.multiplier.to_string(),
                &r.tx_interval_ms.to_string(),
                &uptime(r.uptime_seconds),
                &r.transitions.to_string(),
            ],
        );
        list.push(json!({
            "system_ip": r.system_ip.to_string(),
            "site_id": r.site_id,
            "state": r.state,
            "source_color": r.source_color,
            "remote_color": r.remote_color,
            "source_ip": r.source_ip.to_string(),
            "destination_ip": r.destination_ip.to_string(),
            "destination_port": r.destination_port,
            "encap": r.encap,
            "multiplier": r.multiplier,
            "tx_interval_ms": r.tx_interval_ms,
            "uptime_seconds": r.uptime_seconds,
            "transitions": r.transitions,
        }));
    }
    (t, json!({ "sessions": list }))
}

/// The totals `show sdwan bfd summary` shows.
#[derive(Debug, Clone, Copy)]
pub struct BfdSummary {
    /// BFD sessions that exist now.
    pub sessions_total: u64,
    /// Of those, the ones up.
    pub sessions_up: u64,
    /// The most sessions that existed at once.
    pub sessions_max: u64,
    /// Session flaps (up to down) since start.
    pub sessions_flap: u64,
    /// The app-route poll interval in milliseconds (IOS default 600000).
    pub poll_interval_ms: u64,
}

/// `show sdwan bfd summary`, read by genieparser's `ShowSdwanBfdSummary`.
///
/// JSON: `{"sessions_total","sessions_up","sessions_max","sessions_flap",
/// "poll_interval"}` (numbers; `poll_interval` in milliseconds, as IOS).
pub fn bfd_summary(s: &BfdSummary) -> (String, Value) {
    let t = format!(
        "sessions-total         {}\n\
         sessions-up            {}\n\
         sessions-max           {}\n\
         sessions-flap          {}\n\
         poll-interval          {}\n",
        s.sessions_total, s.sessions_up, s.sessions_max, s.sessions_flap, s.poll_interval_ms
    );
    let j = json!({
        "sessions_total": s.sessions_total,
        "sessions_up": s.sessions_up,
        "sessions_max": s.sessions_max,
        "sessions_flap": s.sessions_flap,
        "poll_interval": s.poll_interval_ms,
    });
    (t, j)
}
