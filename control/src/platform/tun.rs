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
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::config::Cidr;

const TUNSETIFF: libc::c_ulong = 0x400454ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;

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
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Run `ip` with `args`, naming the command on failure.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Tun {
    /// Create `name` with `queues` queues, give it `address`, bring it up.
    pub fn create(name: &str, queues: u32, address: Cidr) -> Result<Tun> {
        let mut fds = Vec::new();
        for q in 0..queues {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .context("opening /dev/net/tun (is the tun driver available?)")?;
            let mut req = IfReq {
                name: [0; libc::IFNAMSIZ],
                flags: IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE,
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
            // SAFETY: fcntl on an fd we own.
            unsafe {
                let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
            fds.push(OwnedFd::from(file));
        }
        let tun = Tun {
            name: name.to_string(),
            queues: fds,
        };
        let mtu = TUN_MTU.to_string();
        ip(&["link", "set", "dev", name, "mtu", &mtu])?;
        // No IPv6 link-local address: the kernel would otherwise send router
        // solicitations and MLD reports into the tunnel (counted as drops).
        ip(&["link", "set", "dev", name, "addrgenmode", "none"])?;
        let addr = address.to_string();
        let mut args = vec!["addr", "add", addr.as_str(), "dev", name];
        if address.addr.is_ipv6() {
            args.push("nodad");
        }
        ip(&args)
            .with_context(|| format!("giving {name} the address {address} (inside.address)"))?;
        ip(&["link", "set", "dev", name, "up"])?;
        Ok(tun)
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
