//! The edge core's configuration, inputs, actions and connection view
//! (re-exported by [`crate::edge`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::consts::*;
use crate::history::ErrorCode;
use crate::tls::PeerCert;
use crate::{Prefix, SdwanSa, TlocId};

/// One local TLOC of the edge's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlocConfig {
    /// Color, e.g. `biz-internet`.
    pub color: String,
    /// Underlay address of the TLOC.
    pub address: IpAddr,
    /// Added to the TLOC port (12346 + hop * 20 + offset).
    pub port_offset: u16,
}

/// The edge core's configuration.
#[derive(Clone)]
pub struct EdgeConfig {
    /// System-ip (an identifier only).
    pub system_ip: Ipv4Addr,
    /// Site-id.
    pub site_id: u32,
    /// The organization the controller's certificate must carry.
    pub organization: String,
    /// The controller's address (for the connection history only).
    pub controller: Option<SocketAddr>,
    /// Local TLOCs.
    pub tlocs: Vec<TlocConfig>,
    /// Inside prefixes advertised as service routes.
    pub service_prefixes: Vec<Prefix>,
    /// Rekey interval of each TLOC's inbound key.
    pub rekey: Duration,
    /// Old inbound SA kept this long after a rekey.
    pub rekey_grace: Duration,
    /// Keepalive interval.
    pub keepalive: Duration,
    /// No message for this long: the connection is down.
    pub hold: Duration,
    /// Learned routes are kept this long after every connection that
    /// carried them dropped.
    pub graceful_restart: Duration,
}

impl EdgeConfig {
    /// A configuration with the default timers.
    pub fn new(
        system_ip: Ipv4Addr,
        site_id: u32,
        organization: &str,
        tlocs: Vec<TlocConfig>,
    ) -> Self {
        EdgeConfig {
            system_ip,
            site_id,
            organization: organization.to_owned(),
            controller: None,
            tlocs,
            service_prefixes: Vec::new(),
            rekey: REKEY_INTERVAL,
            rekey_grace: REKEY_GRACE,
            keepalive: KEEPALIVE_INTERVAL,
            hold: KEEPALIVE_HOLD,
            graceful_restart: GRACEFUL_RESTART,
        }
    }
}

impl std::fmt::Debug for EdgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeConfig")
            .field("system_ip", &self.system_ip)
            .field("site_id", &self.site_id)
            .field("organization", &self.organization)
            .field("tlocs", &self.tlocs)
            .field("service_prefixes", &self.service_prefixes)
            .field("rekey", &self.rekey)
            .field("rekey_grace", &self.rekey_grace)
            .finish()
    }
}

/// What the shell tells the edge core.
#[derive(Debug)]
pub enum Input<'a> {
    /// The control connection of this color completed its TLS handshake:
    /// the controller's chain is from the CA (the shell checked it).
    Connected {
        /// The TLOC color.
        color: &'a str,
        /// What the controller's certificate says.
        peer: &'a PeerCert,
    },
    /// The TLS handshake failed (refused by either side): the shell has
    /// closed the connection.
    Failed {
        /// The TLOC color.
        color: &'a str,
        /// What we found wrong.
        local: ErrorCode,
        /// What the controller told us it found wrong.
        remote_error: ErrorCode,
        /// A short reason.
        detail: &'a str,
    },
    /// It failed to connect or was closed by the peer.
    Closed {
        /// The TLOC color.
        color: &'a str,
    },
    /// Bytes arrived on it.
    Bytes {
        /// The TLOC color.
        color: &'a str,
        /// The bytes.
        data: &'a [u8],
    },
    /// `next_timeout()` has passed.
    Timer,
}

/// What the edge core asks the shell to do, in order.
pub enum Action {
    /// Open the TLS control connection of this TLOC to the controller
    /// (from the TLOC's address); answer with `Connected`, `Failed` or
    /// `Closed`.
    Connect {
        /// The TLOC color.
        color: String,
    },
    /// Write bytes to that connection.
    Send {
        /// The TLOC color.
        color: String,
        /// One or more frames (may carry key material: zeroized on drop).
        data: Zeroizing<Vec<u8>>,
    },
    /// Close that connection (no `Closed` input is expected after it).
    Close {
        /// The TLOC color.
        color: String,
    },
    /// The TLOC's IPsec/UDP port (at start and after a port hop): the XDP
    /// port map and the TLOC's socket follow.
    TlocPort {
        /// The TLOC color.
        color: String,
        /// Address of the TLOC.
        address: IpAddr,
        /// The new port.
        port: u16,
        /// The previous port, if any.
        old_port: Option<u16>,
    },
    /// Install or replace the SA pair to a remote TLOC (see [`SdwanSa`]).
    SaInstall(SdwanSa),
    /// Remove the SA pair of `local_color` to `remote`.
    SaRemove {
        /// Local TLOC color.
        local_color: String,
        /// The remote TLOC.
        remote: TlocId,
    },
    /// Route a service prefix through the tunnels to a remote TLOC.
    RouteAdd {
        /// The prefix.
        prefix: Prefix,
        /// The remote TLOC.
        via: TlocId,
    },
    /// Remove that route.
    RouteRemove {
        /// The prefix.
        prefix: Prefix,
        /// The remote TLOC.
        via: TlocId,
    },
    /// A log line (IOS-style, never a key).
    Log(String),
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Connect { color } => write!(f, "Connect {{ color: {color:?} }}"),
            // Frames may carry key material: only their length is shown.
            Action::Send { color, data } => {
                write!(
                    f,
                    "Send {{ color: {color:?}, data: <{} bytes> }}",
                    data.len()
                )
            }
            Action::Close { color } => write!(f, "Close {{ color: {color:?} }}"),
            Action::TlocPort {
                color,
                address,
                port,
                old_port,
            } => write!(
                f,
                "TlocPort {{ color: {color:?}, address: {address}, port: {port}, old_port: {old_port:?} }}"
            ),
            Action::SaInstall(sa) => write!(f, "SaInstall({sa:?})"),
            Action::SaRemove {
                local_color,
                remote,
            } => write!(
                f,
                "SaRemove {{ local_color: {local_color:?}, remote: {remote} }}"
            ),
            Action::RouteAdd { prefix, via } => {
                write!(f, "RouteAdd {{ prefix: {prefix}, via: {via} }}")
            }
            Action::RouteRemove { prefix, via } => {
                write!(f, "RouteRemove {{ prefix: {prefix}, via: {via} }}")
            }
            Action::Log(l) => write!(f, "Log({l:?})"),
        }
    }
}

/// A connection's view for `show sdwan control connections` on the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionView {
    /// Always `vsmart` on an edge.
    pub peer_type: &'static str,
    /// The controller's system-ip once known.
    pub system_ip: Option<Ipv4Addr>,
    /// The controller's site-id once known.
    pub site_id: Option<u32>,
    /// Local TLOC color.
    pub color: String,
    /// `up`, `connect`, `challenge`, `down`.
    pub state: &'static str,
    /// Seconds up (0 unless up).
    pub uptime_seconds: u64,
}
