//! Link settings over rtnetlink, the requests `ip link set` and `ip addr
//! add` send, without the subprocess: the TUN device's MTU, IPv6 address
//! generation mode, address and up flag.
use std::net::IpAddr;

use anyhow::{Context, Result};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope},
    link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute, LinkFlags, LinkMessage},
};

use xdpsec_worker::routes::Cidr;

use crate::neighbor::netlink::Rtnl;

/// `ip link set dev DEV mtu MTU`.
pub fn mtu_message(ifindex: u32, mtu: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    m.attributes.push(LinkAttribute::Mtu(mtu));
    m
}

/// `ip link set dev DEV addrgenmode none`: no IPv6 link-local address.
pub fn addrgenmode_none_message(ifindex: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    m.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    m
}

/// `ip link set dev DEV up`.
pub fn up_message(ifindex: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m
}

/// `ip addr add ADDR/LEN dev DEV` (with `nodad` for IPv6 when `nodad`):
/// IFA_LOCAL and IFA_ADDRESS both the address, scope global.
pub fn address_message(ifindex: u32, address: Cidr, nodad: bool) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = match address.addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.prefix_len = address.len;
    m.header.scope = AddressScope::Universe;
    m.header.index = ifindex;
    if nodad {
        m.header.flags = AddressHeaderFlags::Nodad;
    }
    m.attributes.push(AddressAttribute::Local(address.addr));
    m.attributes.push(AddressAttribute::Address(address.addr));
    m
}

/// An rtnetlink socket that configures one device.
pub struct DeviceLink {
    rtnl: Rtnl,
    dev: String,
    ifindex: u32,
}

impl DeviceLink {
    /// Configure `dev` (which must exist).
    pub fn open(dev: &str) -> Result<DeviceLink> {
        let ifindex = crate::ifindex(dev).with_context(|| format!("device {dev}"))?;
        let rtnl = Rtnl::open().context("opening rtnetlink")?;
        Ok(DeviceLink {
            rtnl,
            dev: dev.to_string(),
            ifindex,
        })
    }

    fn link(&mut self, m: LinkMessage, what: &str) -> Result<()> {
        self.rtnl
            .exec(RouteNetlinkMessage::NewLink(m), 0)
            .with_context(|| format!("`ip link set dev {} {what}` (rtnetlink)", self.dev))
    }

    /// `ip link set dev DEV mtu MTU`.
    pub fn set_mtu(&mut self, mtu: u32) -> Result<()> {
        self.link(mtu_message(self.ifindex, mtu), &format!("mtu {mtu}"))
    }

    /// `ip link set dev DEV addrgenmode none`.
    pub fn set_addrgenmode_none(&mut self) -> Result<()> {
        self.link(addrgenmode_none_message(self.ifindex), "addrgenmode none")
    }

    /// `ip link set dev DEV up`.
    pub fn set_up(&mut self) -> Result<()> {
        self.link(up_message(self.ifindex), "up")
    }

    /// `ip addr add ADDR dev DEV` (`nodad` for IPv6); an address already
    /// on the device is refused (File exists), as `ip` refuses it.
    pub fn add_address(&mut self, address: Cidr) -> Result<()> {
        let nodad = address.addr.is_ipv6();
        self.rtnl
            .exec(
                RouteNetlinkMessage::NewAddress(address_message(self.ifindex, address, nodad)),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .with_context(|| {
                format!(
                    "`ip addr add {address} dev {}{}` (rtnetlink)",
                    self.dev,
                    if nodad { " nodad" } else { "" }
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};

    /// The request as `Rtnl` sends it (sequence number 0).
    fn bytes(m: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
        let mut b = Vec::new();
        crate::neighbor::netlink::serialize_into(&mut b, m, flags, 0);
        b
    }

    const LINK: u16 = NLM_F_REQUEST | NLM_F_ACK;
    const ADDR: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;

    /// The requests are the ones iproute2 6.x sends, as captured with
    /// `strace -e trace=sendmsg -X raw -xx ip link set dev t0 mtu 1376`
    /// (and `addrgenmode none`, `up`, `ip addr add 198.51.100.1/24 dev t0`,
    /// `ip addr add 2001:db8::1/64 dev t0 nodad`) in a namespace whose TUN
    /// device t0 had ifindex 2. Bytes 8..16 (sequence number, port id) are
    /// not compared.
    #[test]
    fn link_requests_match_iproute2() {
        // RTM_NEWLINK (0x10), flags 0x5; ifinfomsg family 0, type 0,
        // index 2, flags 0, change 0; IFLA_MTU 1376.
        let b = bytes(RouteNetlinkMessage::NewLink(mtu_message(2, 1376)), LINK);
        assert_eq!(b.len(), 40);
        assert_eq!(&b[..8], &[40, 0, 0, 0, 0x10, 0, 0x05, 0]);
        assert_eq!(
            &b[16..40],
            &[
                0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 4, 0, 0x60, 5, 0, 0
            ]
        );
        // IFLA_AF_SPEC (0x1a) { AF_INET6 (0xa) { IFLA_INET6_ADDR_GEN_MODE (8) = 1 } }.
        let b = bytes(
            RouteNetlinkMessage::NewLink(addrgenmode_none_message(2)),
            LINK,
        );
        assert_eq!(b.len(), 48);
        assert_eq!(&b[..8], &[48, 0, 0, 0, 0x10, 0, 0x05, 0]);
        assert_eq!(
            &b[16..48],
            &[
                0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0x1a, 0, 12, 0, 0x0a, 0, 5,
                0, 8, 0, 1, 0, 0, 0
            ]
        );
        // ifi_flags = ifi_change = IFF_UP, no attributes.
        let b = bytes(RouteNetlinkMessage::NewLink(up_message(2)), LINK);
        assert_eq!(b.len(), 32);
        assert_eq!(&b[..8], &[32, 0, 0, 0, 0x10, 0, 0x05, 0]);
        assert_eq!(
            &b[16..32],
            &[0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
        );
    }

    #[test]
    fn address_requests_match_iproute2() {
        // RTM_NEWADDR (0x14), flags 0x605; ifaddrmsg AF_INET, /24, flags 0,
        // scope 0, index 2; IFA_LOCAL, IFA_ADDRESS.
        let v4 = "198.51.100.1/24".parse().unwrap();
        let b = bytes(
            RouteNetlinkMessage::NewAddress(address_message(2, v4, false)),
            ADDR,
        );
        assert_eq!(b.len(), 40);
        assert_eq!(&b[..8], &[40, 0, 0, 0, 0x14, 0, 0x05, 0x06]);
        assert_eq!(
            &b[16..40],
            &[
                2, 24, 0, 0, 2, 0, 0, 0, 8, 0, 2, 0, 198, 51, 100, 1, 8, 0, 1, 0, 198, 51, 100, 1
            ]
        );
        // AF_INET6, /64, ifa_flags IFA_F_NODAD (2).
        let v6 = "2001:db8::1/64".parse().unwrap();
        let b = bytes(
            RouteNetlinkMessage::NewAddress(address_message(2, v6, true)),
            ADDR,
        );
        assert_eq!(b.len(), 64);
        assert_eq!(&b[..8], &[64, 0, 0, 0, 0x14, 0, 0x05, 0x06]);
        assert_eq!(&b[16..24], &[0x0a, 64, 2, 0, 2, 0, 0, 0]);
        let a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(&b[24..28], &[20, 0, 2, 0]);
        assert_eq!(&b[28..44], &a);
        assert_eq!(&b[44..48], &[20, 0, 1, 0]);
        assert_eq!(&b[48..64], &a);
    }
}
