//! Routes into a device over rtnetlink (`ip route replace|del PREFIX dev
//! DEV` without the subprocess): used at start-up for the tunnels'
//! `remote_subnets` and by the owner's shell for SD-WAN service routes.
use std::io;

use anyhow::{Context, Result};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
};

use super::neighbor::netlink::Rtnl;
use crate::config::Cidr;

/// What `ip route replace|del PREFIX dev DEV` sends: main table, protocol
/// boot, link scope (no gateway), unicast.
pub fn route_message(prefix: Cidr, ifindex: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if prefix.addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.destination_prefix_length = prefix.len;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::Link;
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(prefix.addr)));
    m.attributes.push(RouteAttribute::Oif(ifindex));
    m
}

/// What `ip route del PREFIX dev DEV` sends: as the replace, but any
/// protocol, scope and type.
pub fn delete_message(prefix: Cidr, ifindex: u32) -> RouteMessage {
    let mut m = route_message(prefix, ifindex);
    m.header.protocol = RouteProtocol::Unspec;
    m.header.scope = RouteScope::NoWhere;
    m.header.kind = RouteType::Unspec;
    m
}

/// A route socket bound to one device.
pub struct DeviceRoutes {
    rtnl: Rtnl,
    dev: String,
    ifindex: u32,
}

impl DeviceRoutes {
    /// Routes into `dev` (which must exist).
    pub fn open(dev: &str) -> Result<DeviceRoutes> {
        let ifindex =
            crate::platform::ifindex(dev).with_context(|| format!("device {dev} for routes"))?;
        let rtnl = Rtnl::open().context("opening rtnetlink")?;
        Ok(DeviceRoutes {
            rtnl,
            dev: dev.to_string(),
            ifindex,
        })
    }

    /// `ip route replace PREFIX dev DEV`.
    pub fn replace(&mut self, prefix: Cidr) -> io::Result<()> {
        let m = route_message(prefix, self.ifindex);
        self.rtnl.exec(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// `ip route del PREFIX dev DEV`.
    pub fn delete(&mut self, prefix: Cidr) -> io::Result<()> {
        self.rtnl.exec(
            RouteNetlinkMessage::DelRoute(delete_message(prefix, self.ifindex)),
            0,
        )
    }

    /// Route every one of `prefixes` into the device (one request each,
    /// one socket: linear and quick with thousands of tunnels).
    pub fn replace_all(&mut self, prefixes: &[Cidr]) -> Result<()> {
        for &p in prefixes {
            self.replace(p)
                .with_context(|| format!("routing {p} into {}", self.dev))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};

    /// The request as `Rtnl` sends it (sequence number 0).
    fn bytes(m: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
        let mut b = Vec::new();
        crate::platform::neighbor::netlink::serialize_into(&mut b, m, flags, 0);
        b
    }

    /// The requests are the ones iproute2 6.x sends, as captured with
    /// `strace -e trace=sendmsg -X raw -xx ip route replace|del
    /// 198.51.100.0/24 dev <ifindex 2>` in a namespace: a 44-byte message,
    /// the rtmsg, RTA_DST, RTA_OIF.
    #[test]
    fn route_requests_match_iproute2() {
        let prefix = "198.51.100.0/24".parse().unwrap();
        let add = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let b = bytes(RouteNetlinkMessage::NewRoute(route_message(prefix, 2)), add);
        assert_eq!(b.len(), 44);
        // RTM_NEWROUTE (0x18), flags 0x505.
        assert_eq!(&b[4..8], &[0x18, 0, 0x05, 0x05]);
        // family, dst_len, src_len, tos, table main, protocol boot, scope link, unicast, flags.
        assert_eq!(&b[16..28], &[2, 24, 0, 0, 0xfe, 3, 0xfd, 1, 0, 0, 0, 0]);
        assert_eq!(&b[28..36], &[8, 0, 1, 0, 198, 51, 100, 0]);
        assert_eq!(&b[36..44], &[8, 0, 4, 0, 2, 0, 0, 0]);
        let del = NLM_F_REQUEST | NLM_F_ACK;
        let b = bytes(
            RouteNetlinkMessage::DelRoute(delete_message(prefix, 2)),
            del,
        );
        assert_eq!(b.len(), 44);
        assert_eq!(&b[4..8], &[0x19, 0, 0x05, 0]);
        assert_eq!(&b[16..28], &[2, 24, 0, 0, 0xfe, 0, 0xff, 0, 0, 0, 0, 0]);
        assert_eq!(
            &b[28..44],
            &[8, 0, 1, 0, 198, 51, 100, 0, 8, 0, 4, 0, 2, 0, 0, 0]
        );
    }
}
