//! `show version`, `show logging`, `show platform software xdpsec
//! udp-ports` and `show platform hardware qfp active feature ipsec datapath
//! drops [all]`; the controller's `show version` and `show logging` too.
use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;

/// `show version`.
///
/// JSON: `{"version","node","uptime_s","operating_mode","kernel","image",
/// "interface","local"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Version {
    /// xdpsec's version.
    pub version: &'static str,
    /// The node's name.
    pub node: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Always `Autonomous`.
    pub operating_mode: &'static str,
    /// The kernel's name, release and machine.
    pub kernel: String,
    /// The executable's path.
    pub image: String,
    /// The underlay interface.
    pub interface: String,
    /// The underlay address.
    pub local: IpAddr,
}

/// IOS's uptime wording: `1 week, 2 days, 3 hours, 4 minutes`, leading
/// zero units left out, minutes always there.
pub fn ios_uptime(secs: u64) -> String {
    let units = [
        (secs / 604_800, "week"),
        (secs % 604_800 / 86_400, "day"),
        (secs % 86_400 / 3_600, "hour"),
        (secs % 3_600 / 60, "minute"),
    ];
    let first = units.iter().position(|(n, _)| *n != 0).unwrap_or(3);
    units[first..]
        .iter()
        .map(|(n, u)| format!("{n} {u}{}", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `show version` in the IOS XE layout, naming xdpsec for what it is.
//
// Test automation reads two lines: `NODE uptime is ...` and `Router
// operating mode: Autonomous` (pyATS/Unicon asks `show version | include
// operating mode`; `Controller-Managed` would make it send SD-WAN-only
// commands, which this CLI does not have). Nothing here claims to be
// Cisco software.
pub fn render_version(v: &Version) -> String {
    format!(
        "xdpsec Software, Version {version}\n\
         xdpsec: a userspace IPsec ESP datapath on XDP and AF_XDP for Linux, with an IOS-style CLI.\n\
         Not Cisco software; not affiliated with Cisco Systems, Inc.\n\
         \n\
         {node} uptime is {uptime}\n\
         System image file is \"{image}\"\n\
         Last reload reason: process start\n\
         \n\
         {kernel} host, XDP on {iface}\n\
         Router operating mode: {mode}\n\
         Underlay {iface} address {local}\n",
        version = v.version,
        node = v.node,
        uptime = ios_uptime(v.uptime_s),
        image = v.image,
        kernel = v.kernel,
        iface = v.interface,
        mode = v.operating_mode,
        local = v.local,
    )
}

/// SD-WAN's uptime: `D:HH:MM:SS` (the controller's `show version`, and
/// SD-WAN's shows).
pub fn dhms_uptime(secs: u64) -> String {
    format!(
        "{}:{:02}:{:02}:{:02}",
        secs / 86_400,
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// The controller's `show version`.
///
/// JSON: `{"node","version","role","uptime_seconds","listen"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControllerVersion {
    /// The controller's name.
    pub node: String,
    /// xdpsec's version.
    pub version: &'static str,
    /// Always `controller`.
    pub role: &'static str,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Where edges connect (OMP over TLS).
    #[serde(serialize_with = "serialize_display")]
    pub listen: SocketAddr,
}

fn serialize_display<S: serde::Serializer>(
    v: &impl std::fmt::Display,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The text of the controller's `show version`.
pub fn render_controller_version(v: &ControllerVersion) -> String {
    format!(
        "xdpsec {}, Version {}\n{} uptime is {}\nOMP control connections on tcp {}\n",
        v.role,
        v.version,
        v.node,
        dhms_uptime(v.uptime_seconds),
        v.listen
    )
}

/// `show logging` (the node's and the controller's).
///
/// JSON: `{"lines":[..],"rate_limited":[{"kind","suppressed"}],
/// "events_lost","logged"}`; the controller's: `{"lines":[..],"logged"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Logging {
    /// The log buffer, oldest first.
    pub lines: Vec<String>,
    /// The node's rate limit and datapath event rings (None: the
    /// controller, which has neither).
    #[serde(flatten)]
    pub limits: Option<LogLimits>,
    /// Lines logged since start, rotated out or cleared included:
    /// `terminal monitor` prints the lines it has not seen.
    pub logged: u64,
}

/// What the node's log held back or lost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLimits {
    /// Messages the rate limit held back, per kind.
    pub rate_limited: Vec<RateLimited>,
    /// Datapath events lost (the rings were full).
    pub events_lost: u64,
}

/// Messages of one kind the rate limit held back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimited {
    /// The kind (`Debug` name).
    pub kind: String,
    /// How many.
    pub suppressed: u64,
}

/// The text of `show logging`.
pub fn render_logging(l: &Logging) -> String {
    let mut text = String::from("Syslog logging: enabled (");
    if let Some(m) = &l.limits {
        let suppressed: u64 = m.rate_limited.iter().map(|r| r.suppressed).sum();
        let _ = write!(
            text,
            "{suppressed} messages rate-limited, {} events lost, ",
            m.events_lost
        );
    }
    let _ = write!(
        text,
        "{} messages logged)\n\nLog Buffer ({} lines):\n",
        l.logged,
        l.lines.len()
    );
    for line in &l.lines {
        let _ = writeln!(text, "{line}");
    }
    text
}

/// `show platform software xdpsec udp-ports` (and the reply of
/// `request platform software xdpsec udp-port`).
///
/// JSON: `{"udp_ports":[..]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UdpPorts {
    /// The destination ports XDP steers as UDP-encapsulated ESP, ascending.
    pub udp_ports: Vec<u16>,
}

/// The text of `show platform software xdpsec udp-ports`.
pub fn render_udp_ports(p: &UdpPorts) -> String {
    let list: Vec<String> = p.udp_ports.iter().map(|p| p.to_string()).collect();
    format!(
        "UDP-encapsulated ESP steered on destination ports: {}\n",
        list.join(" ")
    )
}

/// `show platform hardware qfp active feature ipsec datapath drops [all]`.
///
/// JSON: `{"drops":[{"id","name","packets"}]}`, every drop reason (with
/// `all` or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drops {
    /// `all`: the text lists the reasons that counted nothing too.
    #[serde(skip)]
    pub all: bool,
    /// Every drop reason.
    pub drops: Vec<DropRow>,
}

/// One drop reason's count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropRow {
    /// QFP drop type id.
    pub id: u16,
    /// QFP drop type name.
    pub name: &'static str,
    /// Packets dropped since the last clear.
    pub packets: u64,
}

/// The text of the drops table: a row per reason that counted (all with
/// `all`), the count right-aligned to column 72.
pub fn render_drops(d: &Drops) -> String {
    let dash = "-".repeat(72);
    let mut text = format!("{dash}\n{:<65}{:>7}\n{dash}\n", "Drop Type Name", "Packets");
    for r in &d.drops {
        let n = r.packets;
        if n != 0 || d.all {
            let left = format!("{} {}", r.id, r.name);
            let width = 72usize
                .saturating_sub(left.len())
                .max(n.to_string().len() + 1);
            let _ = writeln!(text, "{left}{n:>width$}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn uptime_reads_as_on_ios() {
        assert_eq!(ios_uptime(59), "0 minutes");
        assert_eq!(ios_uptime(61), "1 minute");
        assert_eq!(ios_uptime(3_600 + 120), "1 hour, 2 minutes");
        assert_eq!(ios_uptime(86_400), "1 day, 0 hours, 0 minutes");
        assert_eq!(
            ios_uptime(2 * 604_800 + 86_400 + 7_200 + 180),
            "2 weeks, 1 day, 2 hours, 3 minutes"
        );
    }

    #[test]
    fn version_text_and_json() {
        let v = Version {
            version: "0.1.0",
            node: "a".into(),
            uptime_s: 3_720,
            operating_mode: "Autonomous",
            kernel: "Linux 6.18.44 (x86_64)".into(),
            image: "/usr/bin/xdpsec".into(),
            interface: "veth-a".into(),
            local: "198.51.100.1".parse().unwrap(),
        };
        let (text, json) = super::super::reply(&v, render_version);
        assert_eq!(
            text,
            "xdpsec Software, Version 0.1.0\n\
             xdpsec: a userspace IPsec ESP datapath on XDP and AF_XDP for Linux, with an IOS-style CLI.\n\
             Not Cisco software; not affiliated with Cisco Systems, Inc.\n\
             \n\
             a uptime is 1 hour, 2 minutes\n\
             System image file is \"/usr/bin/xdpsec\"\n\
             Last reload reason: process start\n\
             \n\
             Linux 6.18.44 (x86_64) host, XDP on veth-a\n\
             Router operating mode: Autonomous\n\
             Underlay veth-a address 198.51.100.1\n"
        );
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            r#"{"image":"/usr/bin/xdpsec","interface":"veth-a","kernel":"Linux 6.18.44 (x86_64)","local":"198.51.100.1","node":"a","operating_mode":"Autonomous","uptime_s":3720,"version":"0.1.0"}"#
        );
    }

    #[test]
    fn logging_text_sums_the_rate_limited_kinds() {
        let l = Logging {
            lines: vec![
                "*Dec  6 03:24:42.452: %IKEV2-5-SA_UP: SA UP (Tunnel2 peer 198.51.100.2)".into(),
            ],
            limits: Some(LogLimits {
                rate_limited: vec![
                    RateLimited {
                        kind: "InvalidSpi".into(),
                        suppressed: 3,
                    },
                    RateLimited {
                        kind: "Replay".into(),
                        suppressed: 4,
                    },
                ],
                events_lost: 2,
            }),
            logged: 9,
        };
        let (text, json) = super::super::reply(&l, render_logging);
        assert_eq!(
            text,
            "Syslog logging: enabled (7 messages rate-limited, 2 events lost, 9 messages logged)\n\n\
             Log Buffer (1 lines):\n\
             *Dec  6 03:24:42.452: %IKEV2-5-SA_UP: SA UP (Tunnel2 peer 198.51.100.2)\n"
        );
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            r#"{"events_lost":2,"lines":["*Dec  6 03:24:42.452: %IKEV2-5-SA_UP: SA UP (Tunnel2 peer 198.51.100.2)"],"logged":9,"rate_limited":[{"kind":"InvalidSpi","suppressed":3},{"kind":"Replay","suppressed":4}]}"#
        );
    }

    /// The controller's: no rate limit or event rings, so neither in the
    /// text nor in the JSON.
    #[test]
    fn controller_logging_text_and_json() {
        let l = Logging {
            lines: vec!["*Dec  6 03:24:42.452: %OMP-5-PEER_UP: 192.0.2.1 up".into()],
            limits: None,
            logged: 4,
        };
        let (text, json) = super::super::reply(&l, render_logging);
        assert_eq!(
            text,
            "Syslog logging: enabled (4 messages logged)\n\n\
             Log Buffer (1 lines):\n\
             *Dec  6 03:24:42.452: %OMP-5-PEER_UP: 192.0.2.1 up\n"
        );
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            r#"{"lines":["*Dec  6 03:24:42.452: %OMP-5-PEER_UP: 192.0.2.1 up"],"logged":4}"#
        );
    }

    #[test]
    fn controller_version_text_and_json() {
        let v = ControllerVersion {
            node: "vsmart".into(),
            version: "0.1.0",
            role: "controller",
            uptime_seconds: 6 * 86_400 + 13 * 3_600 + 57 * 60 + 28,
            listen: "198.51.100.10:12346".parse().unwrap(),
        };
        let (text, json) = super::super::reply(&v, render_controller_version);
        assert_eq!(
            text,
            "xdpsec controller, Version 0.1.0\n\
             vsmart uptime is 6:13:57:28\n\
             OMP control connections on tcp 198.51.100.10:12346\n"
        );
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            r#"{"listen":"198.51.100.10:12346","node":"vsmart","role":"controller","uptime_seconds":568648,"version":"0.1.0"}"#
        );
    }

    #[test]
    fn udp_ports_text_and_json() {
        let (text, json) = super::super::reply(
            &UdpPorts {
                udp_ports: vec![4500, 12346],
            },
            render_udp_ports,
        );
        assert_eq!(
            text,
            "UDP-encapsulated ESP steered on destination ports: 4500 12346\n"
        );
        assert_eq!(json, json!({"udp_ports": [4500, 12346]}));
    }

    /// Counts end in column 72; a count too wide for its row keeps one
    /// blank after the name; without `all` only the reasons that counted.
    #[test]
    fn drops_table_layout() {
        let row = |id, name, packets| DropRow { id, name, packets };
        let mut d = Drops {
            all: false,
            drops: vec![
                row(1, "IN_V4_PKT_HIT_INVALID_SA", 0),
                row(19, "IN_OCT_ANTI_REPLAY_FAIL", 12),
                row(
                    64,
                    "A_VERY_LONG_DROP_REASON_NAME_THAT_FILLS_THE_LINE_ALMOST_TO_END",
                    123_456_789_012,
                ),
            ],
        };
        let dash = "-".repeat(72);
        let head = format!(
            "{dash}\nDrop Type Name                                                   Packets\n{dash}\n"
        );
        let (text, json) = super::super::reply(&d, render_drops);
        assert_eq!(
            text,
            format!(
                "{head}19 IN_OCT_ANTI_REPLAY_FAIL                                            12\n\
                 64 A_VERY_LONG_DROP_REASON_NAME_THAT_FILLS_THE_LINE_ALMOST_TO_END 123456789012\n"
            )
        );
        assert_eq!(json["drops"].as_array().unwrap().len(), 3, "every reason");
        assert_eq!(
            json["drops"][0],
            json!({"id": 1, "name": "IN_V4_PKT_HIT_INVALID_SA", "packets": 0})
        );
        d.all = true;
        let text = render_drops(&d);
        assert!(text.starts_with(&format!(
            "{head}1 IN_V4_PKT_HIT_INVALID_SA                                             0\n"
        )));
        assert!(
            text.lines().skip(3).take(2).all(|l| l.len() == 72),
            "{text}"
        );
    }
}
