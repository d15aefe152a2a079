//! The one grammar of the daemon's commands: the command table the client
//! completes, helps and rejects against (IOS words, prefixes, `?`), and the
//! typed [`Command`] a parsed line becomes. The client parses a line once
//! and sends the `Command` (serde) over the control socket; the daemon
//! dispatches on it with an exhaustive `match`.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::cli::{self, Arg, CommandSpec, ParseError};

/// Commands the daemon knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// Steering and AF_XDP counters.
    ShowQfpStatistics,
    /// Zero them (as seen by `show`).
    ClearQfpStatistics,
    /// The steered UDP ports.
    ShowUdpPorts,
    /// Steer another UDP port.
    UdpPortAdd,
    /// Stop steering a UDP port.
    UdpPortRemove,
    /// `show platform hardware qfp active feature ipsec datapath drops`.
    ShowDrops,
    /// The same with `all`: zero rows too.
    ShowDropsAll,
    /// Zero the drop counters.
    ClearDrops,
    /// `show crypto ipsec sa`.
    ShowCryptoSa,
    /// `show crypto ipsec sa peer ADDR`.
    ShowCryptoSaPeer,
    /// `clear crypto sa counters`.
    ClearSaCounters,
    /// `clear crypto sa peer ADDR`.
    ClearSaPeer,
    /// `clear crypto sa`: every peer.
    ClearSaAll,
    /// Fault injection: the datapath forgets a peer's inbound SAs.
    ForgetSa,
    /// Start a CREATE_CHILD_SA rekey of a peer's child SAs now.
    RekeyChild,
    /// Start a CREATE_CHILD_SA rekey of a peer's IKE SA now.
    RekeyIke,
    /// `show logging`.
    ShowLogging,
    /// `clear logging`.
    ClearLogging,
    /// Re-read the config file and apply changed manual SAs.
    Reload,
    /// `show version`: software, node name, uptime.
    ShowVersion,
    /// `show crypto ikev2 sa`.
    ShowIkev2Sa,
    /// `show crypto ikev2 sa detailed`.
    ShowIkev2SaDetailed,
    /// `clear crypto ikev2 sa`.
    ClearIkev2Sa,
    /// `show crypto ikev2 proposal`.
    ShowIkev2Proposal,
    /// `show crypto ikev2 stats fragmentation`.
    ShowIkev2StatsFragmentation,
    /// `show crypto ipsec transform-set`.
    ShowIpsecTransformSet,
    /// `clear crypto ikev2 sa remote ADDR`.
    ClearIkev2SaRemote,
    /// `show crypto session`.
    ShowSession,
    /// `show crypto session detail`.
    ShowSessionDetail,
    /// `clear crypto session`.
    ClearSession,
    /// `clear crypto session remote ADDR`.
    ClearSessionRemote,
    /// `show sdwan bfd sessions`.
    ShowSdwanBfdSessions,
    /// `show sdwan control connections` (edge).
    ShowSdwanControlConnections,
    /// `show sdwan control connection-history` (edge).
    ShowSdwanControlConnectionHistory,
    /// `show sdwan omp tlocs` (edge).
    ShowSdwanOmpTlocs,
    /// `show sdwan omp routes` (edge).
    ShowSdwanOmpRoutes,
    /// `show sdwan omp peers` (edge).
    ShowSdwanOmpPeers,
    /// `request platform software sdwan security ipsec-rekey`.
    SdwanIpsecRekey,
    /// `clear sdwan omp all`.
    ClearSdwanOmp,
    /// `request platform software sdwan port_hop COLOR`.
    SdwanPortHop,
    /// `clear sdwan control connections`.
    ClearSdwanControl,
    /// `clear sdwan control connection-history`.
    ClearSdwanControlHistory,
    /// `show sdwan bfd summary`.
    ShowSdwanBfdSummary,
    /// `show sdwan ipsec inbound-connections`.
    ShowSdwanIpsecInbound,
    /// `show sdwan ipsec outbound-connections`.
    ShowSdwanIpsecOutbound,
    /// `show sdwan ipsec local-sa ADDR`.
    ShowSdwanIpsecLocalSa,
    /// `show sdwan tunnel statistics`.
    ShowSdwanTunnelStatistics,
    /// `show sdwan control local-properties`.
    ShowSdwanLocalProperties,
    /// `debug platform packet-trace packet N`.
    DebugPacketTrace,
    /// `debug platform packet-trace packet N drops-only`.
    DebugPacketTraceDrops,
    /// `clear platform packet-trace`.
    ClearPacketTrace,
    /// `show platform packet-trace summary`.
    ShowPacketTraceSummary,
    /// `show platform packet-trace packet K`.
    ShowPacketTracePacket,
    /// `monitor capture drops start file PATH`.
    CaptureDropsStart,
    /// `monitor capture drops start file PATH limit N`.
    CaptureDropsStartLimit,
    /// `monitor capture drops stop`.
    CaptureDropsStop,
    /// `show crypto ipsec sa export wireshark FILE`.
    ExportWireshark,
    /// The command list.
    Help,
}

/// The command table.
pub const COMMANDS: &[CommandSpec<Cmd>] = &[
    CommandSpec {
        pattern: "show platform hardware qfp active statistics",
        id: Cmd::ShowQfpStatistics,
        help: "XDP steering counters and AF_XDP queues (mode, frames received)",
    },
    CommandSpec {
        pattern: "clear platform hardware qfp active statistics",
        id: Cmd::ClearQfpStatistics,
        help: "zero the counters shown by `show platform hardware qfp active statistics`",
    },
    CommandSpec {
        pattern: "show platform software xdpsec udp-ports",
        id: Cmd::ShowUdpPorts,
        help: "UDP destination ports steered as UDP-encapsulated ESP",
    },
    CommandSpec {
        pattern: "request platform software xdpsec udp-port add <port>",
        id: Cmd::UdpPortAdd,
        help: "steer UDP destination port <port> to the datapath",
    },
    CommandSpec {
        pattern: "request platform software xdpsec udp-port remove <port>",
        id: Cmd::UdpPortRemove,
        help: "stop steering UDP destination port <port>",
    },
    CommandSpec {
        pattern: "show platform hardware qfp active feature ipsec datapath drops",
        id: Cmd::ShowDrops,
        help: "IPsec datapath drops by QFP drop type (non-zero rows)",
    },
    CommandSpec {
        pattern: "show platform hardware qfp active feature ipsec datapath drops all",
        id: Cmd::ShowDropsAll,
        help: "IPsec datapath drops, every drop type",
    },
    CommandSpec {
        pattern: "clear platform hardware qfp active feature ipsec datapath drops",
        id: Cmd::ClearDrops,
        help: "zero the IPsec datapath drop counters",
    },
    CommandSpec {
        pattern: "show crypto ipsec sa",
        id: Cmd::ShowCryptoSa,
        help: "IPsec SAs and their counters",
    },
    CommandSpec {
        pattern: "show crypto ipsec sa peer <address>",
        id: Cmd::ShowCryptoSaPeer,
        help: "IPsec SAs with one peer",
    },
    CommandSpec {
        pattern: "clear crypto sa counters",
        id: Cmd::ClearSaCounters,
        help: "zero the SA packet and error counters shown by `show crypto ipsec sa`",
    },
    CommandSpec {
        pattern: "clear crypto sa peer <address>",
        id: Cmd::ClearSaPeer,
        help: "delete and re-create the SAs with one peer (manual tunnels: re-installed from the config)",
    },
    CommandSpec {
        pattern: "clear crypto sa",
        id: Cmd::ClearSaAll,
        help: "delete and re-create the SAs with every peer",
    },
    CommandSpec {
        pattern: "request platform software xdpsec fault forget-sa peer <address>",
        id: Cmd::ForgetSa,
        help: "fault injection: the datapath loses that peer's inbound SAs; the control plane and the peer are not told",
    },
    CommandSpec {
        pattern: "request platform software xdpsec rekey child-sa peer <address>",
        id: Cmd::RekeyChild,
        help: "IKE tunnels: rekey that peer's child SAs now (CREATE_CHILD_SA, make-before-break), as their lifetime would",
    },
    CommandSpec {
        pattern: "request platform software xdpsec rekey ike-sa peer <address>",
        id: Cmd::RekeyIke,
        help: "IKE tunnels: rekey that peer's IKE SA now (CREATE_CHILD_SA; its child SAs move to the new one), as its lifetime would",
    },
    CommandSpec {
        pattern: "show logging",
        id: Cmd::ShowLogging,
        help: "the buffered log (IOS %CRYPTO/%IPSEC lines)",
    },
    CommandSpec {
        pattern: "clear logging",
        id: Cmd::ClearLogging,
        help: "empty the log buffer",
    },
    CommandSpec {
        pattern: "request platform software xdpsec reload",
        id: Cmd::Reload,
        help: "re-read the config file: apply changed manual SAs (SPIs, keys) without stopping traffic",
    },
    CommandSpec {
        pattern: "show crypto ikev2 sa",
        id: Cmd::ShowIkev2Sa,
        help: "IKEv2 SAs: local and remote address/port, status, transforms, lifetime",
    },
    CommandSpec {
        pattern: "show crypto ikev2 sa detailed",
        id: Cmd::ShowIkev2SaDetailed,
        help: "IKEv2 SAs with SPIs, identities, DPD and NAT-T state",
    },
    CommandSpec {
        pattern: "show crypto ikev2 stats fragmentation",
        id: Cmd::ShowIkev2StatsFragmentation,
        help: "IKE fragmentation (RFC 7383) counters: fragments sent, received, messages reassembled, fragments dropped",
    },
    CommandSpec {
        pattern: "show crypto ikev2 proposal",
        id: Cmd::ShowIkev2Proposal,
        help: "IKEv2 proposals of the IKE tunnels (`default`: IOS XE's, for tunnels without ike_proposals)",
    },
    CommandSpec {
        pattern: "show crypto ipsec transform-set",
        id: Cmd::ShowIpsecTransformSet,
        help: "ESP transform sets of the IKE tunnels (`default`: esp-aes esp-sha-hmac, for tunnels without esp_proposals)",
    },
    CommandSpec {
        pattern: "clear crypto ikev2 sa",
        id: Cmd::ClearIkev2Sa,
        help: "delete every IKEv2 SA (and its child SAs); initiators negotiate again",
    },
    CommandSpec {
        pattern: "clear crypto ikev2 sa remote <address>",
        id: Cmd::ClearIkev2SaRemote,
        help: "delete the IKEv2 SA with one peer (and its child SAs)",
    },
    CommandSpec {
        pattern: "show crypto session",
        id: Cmd::ShowSession,
        help: "crypto sessions: one per tunnel, with its IKE SA and flows",
    },
    CommandSpec {
        pattern: "show crypto session detail",
        id: Cmd::ShowSessionDetail,
        help: "crypto sessions with per-flow packet counters",
    },
    CommandSpec {
        pattern: "clear crypto session",
        id: Cmd::ClearSession,
        help: "delete every IKE session (as clear crypto ikev2 sa)",
    },
    CommandSpec {
        pattern: "clear crypto session remote <address>",
        id: Cmd::ClearSessionRemote,
        help: "delete the IKE session with one peer",
    },
    CommandSpec {
        pattern: "show version",
        id: Cmd::ShowVersion,
        help: "software version, node name and uptime",
    },
    CommandSpec {
        pattern: "show sdwan bfd sessions",
        id: Cmd::ShowSdwanBfdSessions,
        help: "SD-WAN: BFD sessions inside the tunnels, one per local and remote TLOC",
    },
    CommandSpec {
        pattern: "show sdwan control connections",
        id: Cmd::ShowSdwanControlConnections,
        help: "SD-WAN: control connections to the controller, one per local color",
    },
    CommandSpec {
        pattern: "show sdwan control connection-history",
        id: Cmd::ShowSdwanControlConnectionHistory,
        help: "SD-WAN: refused and failed control connections, with Cisco's error codes",
    },
    CommandSpec {
        pattern: "show sdwan omp tlocs",
        id: Cmd::ShowSdwanOmpTlocs,
        help: "SD-WAN: local and learned TLOCs (address, port, SPI; never a key)",
    },
    CommandSpec {
        pattern: "show sdwan omp routes",
        id: Cmd::ShowSdwanOmpRoutes,
        help: "SD-WAN: learned service routes and the TLOC colors they resolve through",
    },
    CommandSpec {
        pattern: "show sdwan omp peers",
        id: Cmd::ShowSdwanOmpPeers,
        help: "SD-WAN: OMP peers (the controller)",
    },
    CommandSpec {
        pattern: "request platform software sdwan security ipsec-rekey",
        id: Cmd::SdwanIpsecRekey,
        help: "SD-WAN: new inbound SPI and key on every local TLOC now, advertised through the controller",
    },
    CommandSpec {
        pattern: "clear sdwan omp all",
        id: Cmd::ClearSdwanOmp,
        help: "SD-WAN: withdraw and relearn every OMP route; every SD-WAN tunnel is rebuilt and every BFD session flaps",
    },
    CommandSpec {
        pattern: "request platform software sdwan port_hop <color>",
        id: Cmd::SdwanPortHop,
        help: "SD-WAN: move the TLOC of <color> to its next port (12346, 12366, ... 12426, plus its offset); its control connection and BFD sessions flap",
    },
    CommandSpec {
        pattern: "request platform software sdwan port-hop <color>",
        id: Cmd::SdwanPortHop,
        help: "the same as port_hop",
    },
    CommandSpec {
        pattern: "clear sdwan control connections",
        id: Cmd::ClearSdwanControl,
        help: "SD-WAN: flap every control connection and every BFD session; everything is relearned",
    },
    CommandSpec {
        pattern: "clear sdwan control connection-history",
        id: Cmd::ClearSdwanControlHistory,
        help: "SD-WAN: empty the control connection history",
    },
    CommandSpec {
        pattern: "show sdwan bfd summary",
        id: Cmd::ShowSdwanBfdSummary,
        help: "SD-WAN: BFD sessions total, up, flaps",
    },
    CommandSpec {
        pattern: "show sdwan ipsec inbound-connections",
        id: Cmd::ShowSdwanIpsecInbound,
        help: "SD-WAN: peers sending to our TLOCs (their address and port, SPIs in use)",
    },
    CommandSpec {
        pattern: "show sdwan ipsec outbound-connections",
        id: Cmd::ShowSdwanIpsecOutbound,
        help: "SD-WAN: peers we send to (their SPI, a hash of the pairwise key)",
    },
    CommandSpec {
        pattern: "show sdwan ipsec local-sa <address>",
        id: Cmd::ShowSdwanIpsecLocalSa,
        help: "SD-WAN: this edge's TLOC SPIs (give its system-ip or a TLOC address)",
    },
    CommandSpec {
        pattern: "show sdwan tunnel statistics",
        id: Cmd::ShowSdwanTunnelStatistics,
        help: "SD-WAN: packets and octets per tunnel peer",
    },
    CommandSpec {
        pattern: "show sdwan control local-properties",
        id: Cmd::ShowSdwanLocalProperties,
        help: "SD-WAN: system-ip, site-id and each TLOC's current port",
    },
    CommandSpec {
        pattern: "debug platform packet-trace packet <count>",
        id: Cmd::DebugPacketTrace,
        help: "trace the path of the next <count> received frames (1-8192)",
    },
    CommandSpec {
        pattern: "debug platform packet-trace packet <count> drops-only",
        id: Cmd::DebugPacketTraceDrops,
        help: "trace the path of the next <count> dropped frames",
    },
    CommandSpec {
        pattern: "clear platform packet-trace",
        id: Cmd::ClearPacketTrace,
        help: "stop the packet trace and forget its frames",
    },
    CommandSpec {
        pattern: "show platform packet-trace summary",
        id: Cmd::ShowPacketTraceSummary,
        help: "traced frames: input, output, state, drop reason",
    },
    CommandSpec {
        pattern: "show platform packet-trace packet <number>",
        id: Cmd::ShowPacketTracePacket,
        help: "one traced frame's path (XDP, outer headers, SPI, SA, anti-replay, ICV, result)",
    },
    CommandSpec {
        pattern: "monitor capture drops start file <file>",
        id: Cmd::CaptureDropsStart,
        help: "write dropped frames to a pcapng file, each with its drop type as a comment",
    },
    CommandSpec {
        pattern: "monitor capture drops start file <file> limit <count>",
        id: Cmd::CaptureDropsStartLimit,
        help: "the same, at most <count> frames",
    },
    CommandSpec {
        pattern: "monitor capture drops stop",
        id: Cmd::CaptureDropsStop,
        help: "stop the drop capture and close its file",
    },
    CommandSpec {
        pattern: "show crypto ipsec sa export wireshark <file>",
        id: Cmd::ExportWireshark,
        help: "write the live SAs' keys as Wireshark's esp_sa table to <file> (mode 0600)",
    },
    CommandSpec {
        pattern: "help",
        id: Cmd::Help,
        help: "list the commands",
    },
];

/// A daemon command with its arguments, typed: what a line means once parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Command {
    /// `show platform hardware qfp active statistics`.
    ShowQfpStatistics,
    /// `clear platform hardware qfp active statistics`.
    ClearQfpStatistics,
    /// `show platform software xdpsec udp-ports`.
    ShowUdpPorts,
    /// `request platform software xdpsec udp-port add|remove PORT`; the port
    /// as typed (0-65535 and 500 are refused by the daemon, naming it).
    UdpPort {
        /// The port.
        port: u32,
        /// `add` (steer) or `remove`.
        add: bool,
    },
    /// `show platform hardware qfp active feature ipsec datapath drops [all]`.
    ShowDrops {
        /// `all`: zero rows too.
        all: bool,
    },
    /// `clear platform hardware qfp active feature ipsec datapath drops`.
    ClearDrops,
    /// `show crypto ipsec sa [peer ADDR]`.
    ShowCryptoSa {
        /// Only this peer.
        peer: Option<IpAddr>,
    },
    /// `clear crypto sa counters`.
    ClearCryptoSaCounters,
    /// `clear crypto sa [peer ADDR]`.
    ClearCryptoSa {
        /// Only this peer (none: every peer).
        peer: Option<IpAddr>,
    },
    /// `request platform software xdpsec fault forget-sa peer ADDR`.
    ForgetSa {
        /// The peer.
        peer: IpAddr,
    },
    /// `request platform software xdpsec rekey child-sa|ike-sa peer ADDR`.
    Rekey {
        /// The peer.
        peer: IpAddr,
        /// `ike-sa` (else `child-sa`).
        ike: bool,
    },
    /// `show logging`.
    ShowLogging,
    /// `clear logging`.
    ClearLogging,
    /// `request platform software xdpsec reload`.
    Reload,
    /// `show version`.
    ShowVersion,
    /// `show crypto ikev2 sa [detailed]`.
    ShowIkev2Sa {
        /// `detailed`.
        detailed: bool,
    },
    /// `clear crypto ikev2 sa [remote ADDR]`.
    ClearIkev2Sa {
        /// Only this peer.
        remote: Option<IpAddr>,
    },
    /// `show crypto ikev2 proposal`.
    ShowIkev2Proposal,
    /// `show crypto ikev2 stats fragmentation`.
    ShowIkev2StatsFragmentation,
    /// `show crypto ipsec transform-set`.
    ShowIpsecTransformSet,
    /// `show crypto session [detail]`.
    ShowCryptoSession {
        /// `detail`.
        detail: bool,
    },
    /// `clear crypto session [remote ADDR]`.
    ClearCryptoSession {
        /// Only this peer.
        remote: Option<IpAddr>,
    },
    /// `show sdwan bfd sessions`.
    ShowSdwanBfdSessions,
    /// `show sdwan control connections`.
    ShowSdwanControlConnections,
    /// `show sdwan control connection-history` (edge).
    ShowSdwanControlConnectionHistory,
    /// `show sdwan omp tlocs`.
    ShowSdwanOmpTlocs,
    /// `show sdwan omp routes`.
    ShowSdwanOmpRoutes,
    /// `show sdwan omp peers`.
    ShowSdwanOmpPeers,
    /// `request platform software sdwan security ipsec-rekey`.
    SdwanIpsecRekey,
    /// `clear sdwan omp all`.
    ClearSdwanOmpAll,
    /// `request platform software sdwan port_hop COLOR` (or `port-hop`).
    SdwanPortHop {
        /// The TLOC color, as typed.
        color: String,
    },
    /// `clear sdwan control connections`.
    ClearSdwanControlConnections,
    /// `clear sdwan control connection-history`.
    ClearSdwanControlConnectionHistory,
    /// `show sdwan bfd summary`.
    ShowSdwanBfdSummary,
    /// `show sdwan ipsec inbound-connections`.
    ShowSdwanIpsecInbound,
    /// `show sdwan ipsec outbound-connections`.
    ShowSdwanIpsecOutbound,
    /// `show sdwan ipsec local-sa ADDR`.
    ShowSdwanIpsecLocalSa {
        /// A system-ip or TLOC address.
        address: IpAddr,
    },
    /// `show sdwan tunnel statistics`.
    ShowSdwanTunnelStatistics,
    /// `show sdwan control local-properties`.
    ShowSdwanLocalProperties,
    /// `debug platform packet-trace packet COUNT [drops-only]`.
    DebugPacketTrace {
        /// Frames to trace, as typed (the daemon checks 1-8192).
        count: u32,
        /// `drops-only`.
        drops_only: bool,
    },
    /// `clear platform packet-trace`.
    ClearPacketTrace,
    /// `show platform packet-trace summary`.
    ShowPacketTraceSummary,
    /// `show platform packet-trace packet NUMBER`.
    ShowPacketTracePacket {
        /// The traced frame's number.
        number: u32,
    },
    /// `monitor capture drops start file FILE [limit COUNT]`.
    CaptureDropsStart {
        /// The pcapng file.
        file: String,
        /// At most this many frames.
        limit: Option<u32>,
    },
    /// `monitor capture drops stop`.
    CaptureDropsStop,
    /// `show crypto ipsec sa export wireshark FILE`.
    ExportWireshark {
        /// The esp_sa file.
        file: String,
    },
    /// `help`.
    Help,
}

/// Parse one command line against [`COMMANDS`]: the typed command, or the
/// IOS error naming the word (`% Invalid input detected at '^' marker.`).
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let p = cli::parse(COMMANDS, line)?;
    let addr = |i: usize| match p.args.get(i) {
        Some(Arg::Addr(a)) => Some(*a),
        _ => None,
    };
    let num = |i: usize| match p.args.get(i) {
        Some(Arg::Num(n)) => Some(*n),
        _ => None,
    };
    let word = |i: usize| match p.args.get(i) {
        Some(Arg::Word(w)) => Some(w.clone()),
        _ => None,
    };
    // The table's patterns put an argument of the right type at each
    // place read here; a mismatch is a table bug, answered as incomplete.
    let missing = || ParseError("% Incomplete command.".into());
    Ok(match p.id {
        Cmd::ShowQfpStatistics => Command::ShowQfpStatistics,
        Cmd::ClearQfpStatistics => Command::ClearQfpStatistics,
        Cmd::ShowUdpPorts => Command::ShowUdpPorts,
        Cmd::UdpPortAdd | Cmd::UdpPortRemove => Command::UdpPort {
            port: num(0).ok_or_else(missing)?,
            add: p.id == Cmd::UdpPortAdd,
        },
        Cmd::ShowDrops => Command::ShowDrops { all: false },
        Cmd::ShowDropsAll => Command::ShowDrops { all: true },
        Cmd::ClearDrops => Command::ClearDrops,
        Cmd::ShowCryptoSa => Command::ShowCryptoSa { peer: None },
        Cmd::ShowCryptoSaPeer => Command::ShowCryptoSa {
            peer: Some(addr(0).ok_or_else(missing)?),
        },
        Cmd::ClearSaCounters => Command::ClearCryptoSaCounters,
        Cmd::ClearSaPeer => Command::ClearCryptoSa {
            peer: Some(addr(0).ok_or_else(missing)?),
        },
        Cmd::ClearSaAll => Command::ClearCryptoSa { peer: None },
        Cmd::ForgetSa => Command::ForgetSa {
            peer: addr(0).ok_or_else(missing)?,
        },
        Cmd::RekeyChild | Cmd::RekeyIke => Command::Rekey {
            peer: addr(0).ok_or_else(missing)?,
            ike: p.id == Cmd::RekeyIke,
        },
        Cmd::ShowLogging => Command::ShowLogging,
        Cmd::ClearLogging => Command::ClearLogging,
        Cmd::Reload => Command::Reload,
        Cmd::ShowVersion => Command::ShowVersion,
        Cmd::ShowIkev2Sa => Command::ShowIkev2Sa { detailed: false },
        Cmd::ShowIkev2SaDetailed => Command::ShowIkev2Sa { detailed: true },
        Cmd::ClearIkev2Sa => Command::ClearIkev2Sa { remote: None },
        Cmd::ClearIkev2SaRemote => Command::ClearIkev2Sa {
            remote: Some(addr(0).ok_or_else(missing)?),
        },
        Cmd::ShowIkev2Proposal => Command::ShowIkev2Proposal,
        Cmd::ShowIkev2StatsFragmentation => Command::ShowIkev2StatsFragmentation,
        Cmd::ShowIpsecTransformSet => Command::ShowIpsecTransformSet,
        Cmd::ShowSession => Command::ShowCryptoSession { detail: false },
        Cmd::ShowSessionDetail => Command::ShowCryptoSession { detail: true },
        Cmd::ClearSession => Command::ClearCryptoSession { remote: None },
        Cmd::ClearSessionRemote => Command::ClearCryptoSession {
            remote: Some(addr(0).ok_or_else(missing)?),
        },
        Cmd::ShowSdwanBfdSessions => Command::ShowSdwanBfdSessions,
        Cmd::ShowSdwanControlConnections => Command::ShowSdwanControlConnections,
        Cmd::ShowSdwanControlConnectionHistory => Command::ShowSdwanControlConnectionHistory,
        Cmd::ShowSdwanOmpTlocs => Command::ShowSdwanOmpTlocs,
        Cmd::ShowSdwanOmpRoutes => Command::ShowSdwanOmpRoutes,
        Cmd::ShowSdwanOmpPeers => Command::ShowSdwanOmpPeers,
        Cmd::SdwanIpsecRekey => Command::SdwanIpsecRekey,
        Cmd::ClearSdwanOmp => Command::ClearSdwanOmpAll,
        Cmd::SdwanPortHop => Command::SdwanPortHop {
            color: word(0).ok_or_else(missing)?,
        },
        Cmd::ClearSdwanControl => Command::ClearSdwanControlConnections,
        Cmd::ClearSdwanControlHistory => Command::ClearSdwanControlConnectionHistory,
        Cmd::ShowSdwanBfdSummary => Command::ShowSdwanBfdSummary,
        Cmd::ShowSdwanIpsecInbound => Command::ShowSdwanIpsecInbound,
        Cmd::ShowSdwanIpsecOutbound => Command::ShowSdwanIpsecOutbound,
        Cmd::ShowSdwanIpsecLocalSa => Command::ShowSdwanIpsecLocalSa {
            address: addr(0).ok_or_else(missing)?,
        },
        Cmd::ShowSdwanTunnelStatistics => Command::ShowSdwanTunnelStatistics,
        Cmd::ShowSdwanLocalProperties => Command::ShowSdwanLocalProperties,
        Cmd::DebugPacketTrace | Cmd::DebugPacketTraceDrops => Command::DebugPacketTrace {
            count: num(0).ok_or_else(missing)?,
            drops_only: p.id == Cmd::DebugPacketTraceDrops,
        },
        Cmd::ClearPacketTrace => Command::ClearPacketTrace,
        Cmd::ShowPacketTraceSummary => Command::ShowPacketTraceSummary,
        Cmd::ShowPacketTracePacket => Command::ShowPacketTracePacket {
            number: num(0).ok_or_else(missing)?,
        },
        Cmd::CaptureDropsStart => Command::CaptureDropsStart {
            file: word(0).ok_or_else(missing)?,
            limit: None,
        },
        Cmd::CaptureDropsStartLimit => Command::CaptureDropsStart {
            file: word(0).ok_or_else(missing)?,
            limit: Some(num(1).ok_or_else(missing)?),
        },
        Cmd::CaptureDropsStop => Command::CaptureDropsStop,
        Cmd::ExportWireshark => Command::ExportWireshark {
            file: word(0).ok_or_else(missing)?,
        },
        Cmd::Help => Command::Help,
    })
}

impl std::fmt::Display for Command {
    /// The command's line in full words, which [`parse`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt =
            |kw: &str, a: &Option<IpAddr>| a.map(|a| format!(" {kw} {a}")).unwrap_or_default();
        let flag = |kw: &str, on: bool| if on { format!(" {kw}") } else { String::new() };
        match self {
            Command::ShowQfpStatistics => write!(f, "show platform hardware qfp active statistics"),
            Command::ClearQfpStatistics => {
                write!(f, "clear platform hardware qfp active statistics")
            }
            Command::ShowUdpPorts => write!(f, "show platform software xdpsec udp-ports"),
            Command::UdpPort { port, add } => write!(
                f,
                "request platform software xdpsec udp-port {} {port}",
                if *add { "add" } else { "remove" }
            ),
            Command::ShowDrops { all } => write!(
                f,
                "show platform hardware qfp active feature ipsec datapath drops{}",
                flag("all", *all)
            ),
            Command::ClearDrops => write!(
                f,
                "clear platform hardware qfp active feature ipsec datapath drops"
            ),
            Command::ShowCryptoSa { peer } => {
                write!(f, "show crypto ipsec sa{}", opt("peer", peer))
            }
            Command::ClearCryptoSaCounters => write!(f, "clear crypto sa counters"),
            Command::ClearCryptoSa { peer } => write!(f, "clear crypto sa{}", opt("peer", peer)),
            Command::ForgetSa { peer } => write!(
                f,
                "request platform software xdpsec fault forget-sa peer {peer}"
            ),
            Command::Rekey { peer, ike } => write!(
                f,
                "request platform software xdpsec rekey {} peer {peer}",
                if *ike { "ike-sa" } else { "child-sa" }
            ),
            Command::ShowLogging => write!(f, "show logging"),
            Command::ClearLogging => write!(f, "clear logging"),
            Command::Reload => write!(f, "request platform software xdpsec reload"),
            Command::ShowVersion => write!(f, "show version"),
            Command::ShowIkev2Sa { detailed } => {
                write!(f, "show crypto ikev2 sa{}", flag("detailed", *detailed))
            }
            Command::ClearIkev2Sa { remote } => {
                write!(f, "clear crypto ikev2 sa{}", opt("remote", remote))
            }
            Command::ShowIkev2Proposal => write!(f, "show crypto ikev2 proposal"),
            Command::ShowIkev2StatsFragmentation => {
                write!(f, "show crypto ikev2 stats fragmentation")
            }
            Command::ShowIpsecTransformSet => write!(f, "show crypto ipsec transform-set"),
            Command::ShowCryptoSession { detail } => {
                write!(f, "show crypto session{}", flag("detail", *detail))
            }
            Command::ClearCryptoSession { remote } => {
                write!(f, "clear crypto session{}", opt("remote", remote))
            }
            Command::ShowSdwanBfdSessions => write!(f, "show sdwan bfd sessions"),
            Command::ShowSdwanControlConnections => write!(f, "show sdwan control connections"),
            Command::ShowSdwanControlConnectionHistory => {
                write!(f, "show sdwan control connection-history")
            }
            Command::ShowSdwanOmpTlocs => write!(f, "show sdwan omp tlocs"),
            Command::ShowSdwanOmpRoutes => write!(f, "show sdwan omp routes"),
            Command::ShowSdwanOmpPeers => write!(f, "show sdwan omp peers"),
            Command::SdwanIpsecRekey => {
                write!(f, "request platform software sdwan security ipsec-rekey")
            }
            Command::ClearSdwanOmpAll => write!(f, "clear sdwan omp all"),
            Command::SdwanPortHop { color } => {
                write!(f, "request platform software sdwan port_hop {color}")
            }
            Command::ClearSdwanControlConnections => {
                write!(f, "clear sdwan control connections")
            }
            Command::ClearSdwanControlConnectionHistory => {
                write!(f, "clear sdwan control connection-history")
            }
            Command::ShowSdwanBfdSummary => write!(f, "show sdwan bfd summary"),
            Command::ShowSdwanIpsecInbound => write!(f, "show sdwan ipsec inbound-connections"),
            Command::ShowSdwanIpsecOutbound => write!(f, "show sdwan ipsec outbound-connections"),
            Command::ShowSdwanIpsecLocalSa { address } => {
                write!(f, "show sdwan ipsec local-sa {address}")
            }
            Command::ShowSdwanTunnelStatistics => write!(f, "show sdwan tunnel statistics"),
            Command::ShowSdwanLocalProperties => write!(f, "show sdwan control local-properties"),
            Command::DebugPacketTrace { count, drops_only } => write!(
                f,
                "debug platform packet-trace packet {count}{}",
                flag("drops-only", *drops_only)
            ),
            Command::ClearPacketTrace => write!(f, "clear platform packet-trace"),
            Command::ShowPacketTraceSummary => write!(f, "show platform packet-trace summary"),
            Command::ShowPacketTracePacket { number } => {
                write!(f, "show platform packet-trace packet {number}")
            }
            Command::CaptureDropsStart { file, limit } => {
                write!(f, "monitor capture drops start file {file}")?;
                match limit {
                    Some(n) => write!(f, " limit {n}"),
                    None => Ok(()),
                }
            }
            Command::CaptureDropsStop => write!(f, "monitor capture drops stop"),
            Command::ExportWireshark { file } => {
                write!(f, "show crypto ipsec sa export wireshark {file}")
            }
            Command::Help => write!(f, "help"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One command of every kind, with every optional part both ways.
    fn every_command() -> Vec<Command> {
        let v4: IpAddr = "198.51.100.2".parse().unwrap();
        let v6: IpAddr = "2001:db8::2".parse().unwrap();
        vec![
            Command::ShowQfpStatistics,
            Command::ClearQfpStatistics,
            Command::ShowUdpPorts,
            Command::UdpPort {
                port: 4500,
                add: true,
            },
            Command::UdpPort {
                port: 12346,
                add: false,
            },
            Command::ShowDrops { all: false },
            Command::ShowDrops { all: true },
            Command::ClearDrops,
            Command::ShowCryptoSa { peer: None },
            Command::ShowCryptoSa { peer: Some(v6) },
            Command::ClearCryptoSaCounters,
            Command::ClearCryptoSa { peer: None },
            Command::ClearCryptoSa { peer: Some(v4) },
            Command::ForgetSa { peer: v4 },
            Command::Rekey {
                peer: v4,
                ike: false,
            },
            Command::Rekey {
                peer: v6,
                ike: true,
            },
            Command::ShowLogging,
            Command::ClearLogging,
            Command::Reload,
            Command::ShowVersion,
            Command::ShowIkev2Sa { detailed: false },
            Command::ShowIkev2Sa { detailed: true },
            Command::ClearIkev2Sa { remote: None },
            Command::ClearIkev2Sa { remote: Some(v6) },
            Command::ShowIkev2Proposal,
            Command::ShowIkev2StatsFragmentation,
            Command::ShowIpsecTransformSet,
            Command::ShowCryptoSession { detail: false },
            Command::ShowCryptoSession { detail: true },
            Command::ClearCryptoSession { remote: None },
            Command::ClearCryptoSession { remote: Some(v4) },
            Command::ShowSdwanBfdSessions,
            Command::ShowSdwanControlConnections,
            Command::ShowSdwanControlConnectionHistory,
            Command::ShowSdwanOmpTlocs,
            Command::ShowSdwanOmpRoutes,
            Command::ShowSdwanOmpPeers,
            Command::SdwanIpsecRekey,
            Command::ClearSdwanOmpAll,
            Command::SdwanPortHop {
                color: "biz-internet".into(),
            },
            Command::ClearSdwanControlConnections,
            Command::ClearSdwanControlConnectionHistory,
            Command::ShowSdwanBfdSummary,
            Command::ShowSdwanIpsecInbound,
            Command::ShowSdwanIpsecOutbound,
            Command::ShowSdwanIpsecLocalSa { address: v4 },
            Command::ShowSdwanTunnelStatistics,
            Command::ShowSdwanLocalProperties,
            Command::DebugPacketTrace {
                count: 16,
                drops_only: false,
            },
            Command::DebugPacketTrace {
                count: 8192,
                drops_only: true,
            },
            Command::ClearPacketTrace,
            Command::ShowPacketTraceSummary,
            Command::ShowPacketTracePacket { number: 3 },
            Command::CaptureDropsStart {
                file: "/tmp/drops.pcapng".into(),
                limit: None,
            },
            Command::CaptureDropsStart {
                file: "/tmp/drops.pcapng".into(),
                limit: Some(10),
            },
            Command::CaptureDropsStop,
            Command::ExportWireshark {
                file: "/tmp/esp_sa".into(),
            },
            Command::Help,
        ]
    }

    #[test]
    fn every_command_round_trips_through_its_line_and_serde() {
        let all = every_command();
        for c in &all {
            let line = c.to_string();
            assert_eq!(parse(&line).as_ref(), Ok(c), "{line}");
            let wire = serde_json::to_string(c).unwrap();
            assert_eq!(
                &serde_json::from_str::<Command>(&wire).unwrap(),
                c,
                "{wire}"
            );
        }
        // Every pattern of the table is some command's line (port-hop aside,
        // which reads as port_hop).
        for spec in COMMANDS {
            let words: Vec<&str> = spec.pattern.split_whitespace().collect();
            let fits = |c: &Command| {
                let line = c.to_string();
                let got: Vec<&str> = line.split_whitespace().collect();
                got.len() == words.len()
                    && got
                        .iter()
                        .zip(&words)
                        .all(|(g, w)| w.starts_with('<') || g == w)
            };
            assert!(
                spec.pattern.contains("port-hop") || all.iter().any(fits),
                "no round-trip case for `{}`",
                spec.pattern
            );
        }
    }

    #[test]
    fn abbreviations_and_aliases_parse_to_the_same_command() {
        assert_eq!(
            parse("sh pl ha q a f i d drops all"),
            Ok(Command::ShowDrops { all: true })
        );
        assert_eq!(
            parse("req plat soft sdwan port-hop private1"),
            Ok(Command::SdwanPortHop {
                color: "private1".into()
            })
        );
        assert_eq!(
            parse("request platform software xdpsec udp-port add 0x1194"),
            Ok(Command::UdpPort {
                port: 4500,
                add: true
            })
        );
        assert_eq!(
            parse("CLEAR crypto SA peer 2001:db8::1"),
            Ok(Command::ClearCryptoSa {
                peer: Some("2001:db8::1".parse().unwrap())
            })
        );
    }

    #[test]
    fn parse_errors_name_the_offending_word() {
        let e = parse("show crypto ipsec sa peer 198.51.100.300")
            .unwrap_err()
            .0;
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines[0], "show crypto ipsec sa peer 198.51.100.300");
        // The caret stands under the bad address.
        assert_eq!(lines[1], format!("{}^", " ".repeat(26)));
        assert_eq!(lines[2], "% Invalid input detected at '^' marker.");
        assert_eq!(lines[3], "  expected: <address>");
        let e = parse("show cripto ipsec sa").unwrap_err().0;
        assert_eq!(e.lines().nth(1), Some("     ^"), "{e}");
        let e = parse("request platform software xdpsec udp-port add http")
            .unwrap_err()
            .0;
        assert!(e.ends_with("expected: <port>"), "{e}");
        let e = parse("debug platform packet-trace packet").unwrap_err().0;
        assert_eq!(e, "% Incomplete command.\n  expected: <count>");
        let e = parse("show crypto i").unwrap_err().0;
        assert!(
            e.starts_with("% Ambiguous command:  \"show crypto i\""),
            "{e}"
        );
    }

    #[test]
    fn a_bare_line_and_a_typed_command_read_the_same_on_the_wire() {
        // Old clients (and test harnesses) send only the line.
        let r: crate::ctlsock::Request =
            serde_json::from_str(r#"{"command":"show version","json":true}"#).unwrap();
        assert!(r.cmd.is_none());
        let r: crate::ctlsock::Request = serde_json::from_str(
            r#"{"command":"clear crypto sa peer 198.51.100.2","cmd":{"kind":"clear_crypto_sa","peer":"198.51.100.2"}}"#,
        )
        .unwrap();
        assert_eq!(
            r.cmd,
            Some(Command::ClearCryptoSa {
                peer: Some("198.51.100.2".parse().unwrap())
            })
        );
    }
}
