//! The inside interface: a multi-queue TUN device, one queue per worker.
//!
//! Decrypted inner packets are written to it, so the local kernel, ping and
//! sockets see them; the kernel routes packets for a tunnel's
//! `remote_subnets` into it, and the worker encrypts what it reads. The
//! device is not persistent: it (and its routes) vanish when the daemon's
//! queue fds close.
use std::{
    fs::OpenOptions,
    os::fd::{AsRawFd, OwnedFd, RawFd},
};

use anyhow::{Context, Result, bail};

use crate::config::Cidr;

const TUNSETIFF: libc::c_ulong = 0x400454ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x400454d0;
/// `_IOW('T', 216, int)`.
const TUNSETVNETHDRSZ: libc::c_ulong = 0x400454d8;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;

/// Inner MTU: leaves room on a 1500-byte underlay for the largest ESP
/// overhead of any transform here: outer IPv6 (40) + UDP (8) + ESP header
/// (8) + a CBC IV (16) + up to 15 pad and 2 trailer bytes + a 32-byte
/// HMAC-SHA-512-256 ICV = 121 bytes, so 1379, rounded down to 1376 (a
/// multiple of 16). strongSwan's kernel-libipsec uses 1400, which only the
/// AEADs and the shorter ICVs fit.
pub const TUN_MTU: u32 = 1376;

/// An open multi-queue TUN device.
pub struct Tun {
    /// Device name.
    pub name: String,
    queues: Vec<OwnedFd>,
    /// Every packet on the queues carries a virtio-net header (`IFF_VNET_HDR`).
    pub vnet_hdr: bool,
}

/// The offload sets asked for, best first: the first the kernel accepts
/// is kept (USO needs Linux 6.2).
const OFFLOAD_SETS: [(libc::c_uint, &str); 3] = [
    (
        TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
        "checksum, TSO4, TSO6, USO4, USO6",
    ),
    (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6, "checksum, TSO4, TSO6"),
    (TUN_F_CSUM, "checksum"),
];

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tun {
    /// Create `name` with `queues` queues, give it `address`, bring it up.
    /// With `offloads` (`[inside] offloads`), the queues carry virtio-net
    /// headers and the kernel may hand over GSO super-packets (see
    /// [`Tun::open`]).
    pub fn create(name: &str, queues: u32, address: Cidr, offloads: bool) -> Result<Tun> {
        let tun = if offloads {
            match Tun::open(name, queues, true) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(
                        "TUN {name}: virtio-net headers refused ({e:#}); offloads off, one packet per read"
                    );
                    Tun::open(name, queues, false)?
                }
            }
        } else {
            Tun::open(name, queues, false)?
        };
        if tun.vnet_hdr {
            tun.set_offloads();
        }
        // `ip link set mtu`, `addrgenmode none`, `ip addr add`, `ip link set
        // up`, as rtnetlink requests on one socket (no `ip` process).
        let mut link = crate::platform::link::DeviceLink::open(name)?;
        link.set_mtu(TUN_MTU)?;
        // No IPv6 link-local address: the kernel would otherwise send router
        // solicitations and MLD reports into the tunnel (counted as drops).
        link.set_addrgenmode_none()?;
        link.add_address(address)
            .with_context(|| format!("giving {name} the address {address} (inside.address)"))?;
        link.set_up()?;
        Ok(tun)
    }

    /// Ask for segmentation offloads (`TUNSETOFFLOAD`), the largest set
    /// the kernel accepts, and say in the log which one that was; with
    /// none, packets still carry the header but are never super-packets.
    fn set_offloads(&self) {
        let Some(fd) = self.queues.first().map(|q| q.as_raw_fd()) else {
            return;
        };
        for (i, (set, what)) in OFFLOAD_SETS.iter().enumerate() {
            // SAFETY: TUNSETOFFLOAD takes its flags as the argument.
            if unsafe { libc::ioctl(fd, TUNSETOFFLOAD, *set as libc::c_ulong) } == 0 {
                if i == 0 {
                    tracing::info!("TUN {}: offloads on ({what})", self.name);
                } else {
                    tracing::warn!(
                        "TUN {}: the kernel refused the larger offload sets; offloads on ({what})",
                        self.name
                    );
                }
                return;
            }
            tracing::debug!(
                "TUN {}: offloads {what} refused: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        tracing::warn!(
            "TUN {}: the kernel refused every offload (TUNSETOFFLOAD); one packet per read",
            self.name
        );
    }

    /// Open `queues` queues of the TUN device `name` (with virtio-net
    /// headers when `vnet_hdr`), non-blocking.
    fn open(name: &str, queues: u32, vnet_hdr: bool) -> Result<Tun> {
        let mut fds = Vec::new();
        for q in 0..queues {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .context("opening /dev/net/tun (is the tun driver available?)")?;
            let vnet = if vnet_hdr { IFF_VNET_HDR } else { 0 };
            let mut req = IfReq {
                name: [0; libc::IFNAMSIZ],
                flags: IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | vnet,
                _pad: [0; 22],
            };
            req.name[..name.len()].copy_from_slice(name.as_bytes());
            // SAFETY: TUNSETIFF reads and writes an ifreq-sized struct.
            if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
                bail!(
                    "creating TUN device {name} (inside.name), queue {q}: {}",
                    std::io::Error::last_os_error()
                );
            }
            if vnet_hdr {
                let size = xdpsec_worker::offload::VNET_HDR_LEN as libc::c_int;
                // SAFETY: TUNSETVNETHDRSZ reads an int.
                if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETVNETHDRSZ, &size) } < 0 {
                    bail!(
                        "setting the virtio-net header size on {name}, queue {q}: {}",
                        std::io::Error::last_os_error()
                    );
                }
            }
            // SAFETY: fcntl on an fd we own.
            unsafe {
                let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
            fds.push(OwnedFd::from(file));
        }
        Ok(Tun {
            name: name.to_string(),
            queues: fds,
            vnet_hdr,
        })
    }

    /// Route every one of `subnets` into the device over rtnetlink (one
    /// socket, one request each: start-up stays linear and quick with
    /// thousands of tunnels, and no `ip` process).
    pub fn add_routes(&self, subnets: &[Cidr]) -> Result<()> {
        if subnets.is_empty() {
            return Ok(());
        }
        crate::platform::route::DeviceRoutes::open(&self.name)?.replace_all(subnets)
    }

    /// The fd of queue `q`.
    pub fn queue_fd(&self, q: usize) -> RawFd {
        self.queues[q].as_raw_fd()
    }
}
