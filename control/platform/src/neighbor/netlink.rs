//! A small synchronous rtnetlink client: the next-hop refresh's route and
//! neighbour dumps, and acknowledged requests (routes into the TUN device).
//!
//! Every receive is bounded: the socket has a receive timeout and each
//! exchange a deadline, so a refresh never hangs on the kernel.
use std::{
    io,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::{RouteNetlinkMessage, neighbour::NeighbourMessage, route::RouteMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// How long one request/answer exchange with the kernel may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);
/// Receive buffer: larger than any datagram the kernel sends in a dump
/// (it caps dump skbs at 32 KiB); `MSG_TRUNC` catches anything larger.
const RECV_BUF: usize = 64 * 1024;

/// A NETLINK_ROUTE socket with its own sequence numbers.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// What a dump returned.
#[derive(Debug, Default)]
pub struct Dump {
    /// The messages that parsed.
    pub messages: Vec<RouteNetlinkMessage>,
    /// Messages skipped because they did not parse (kinds this crate does not know).
    pub unparsed: usize,
}

impl Rtnl {
    /// Open and connect a NETLINK_ROUTE socket in the caller's network namespace.
    pub fn open() -> io::Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 500_000,
        };
        // SAFETY: SO_RCVTIMEO takes a timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Rtnl {
            sock,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Serialize `msgs` into one datagram with consecutive sequence numbers
    /// starting at the returned one, and send it.
    fn send(&mut self, msgs: Vec<RouteNetlinkMessage>, flags: u16) -> io::Result<u32> {
        let first = self.seq.wrapping_add(1);
        let mut out = Vec::new();
        for m in msgs {
            let seq = self.next_seq();
            serialize_into(&mut out, m, flags, seq);
        }
        self.sock.send(&out, 0)?;
        Ok(first)
    }

    /// Receive one datagram and hand each netlink message in it to `f`
    /// (its header flags, sequence number and parsed payload, or None when
    /// it did not parse). Stops early when `f` returns false.
    fn recv_each(
        &mut self,
        deadline: Instant,
        mut f: impl FnMut(u32, Option<NetlinkPayload<RouteNetlinkMessage>>) -> bool,
    ) -> io::Result<()> {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "rtnetlink: no complete answer in time",
            ));
        }
        let n = match self.sock.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        };
        if n > self.buf.len() {
            return Err(io::Error::other(format!(
                "rtnetlink: datagram of {n} bytes truncated to {}",
                self.buf.len()
            )));
        }
        for (seq, payload) in split_messages(&self.buf[..n]) {
            if !f(seq, payload) {
                break;
            }
        }
        Ok(())
    }

    /// Receive the answers to request `seq` (late answers to earlier
    /// requests skipped) until `f` ends the exchange with its result.
    fn answers(
        &mut self,
        seq: u32,
        mut f: impl FnMut(Option<NetlinkPayload<RouteNetlinkMessage>>) -> Option<io::Result<()>>,
    ) -> io::Result<()> {
        let deadline = Instant::now() + EXCHANGE_TIMEOUT;
        let mut result: Option<io::Result<()>> = None;
        while result.is_none() {
            self.recv_each(deadline, |s, payload| {
                if s == seq {
                    result = f(payload);
                }
                result.is_none()
            })?;
        }
        result.unwrap_or(Ok(()))
    }

    /// Dump a table: send `req` with NLM_F_DUMP and collect every answer until NLMSG_DONE.
    pub fn dump(&mut self, req: RouteNetlinkMessage) -> io::Result<Dump> {
        let seq = self.send(vec![req], NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut dump = Dump::default();
        self.answers(seq, |payload| match payload {
            Some(NetlinkPayload::InnerMessage(m)) => {
                dump.messages.push(m);
                None
            }
            Some(NetlinkPayload::Done(_)) => Some(Ok(())),
            Some(NetlinkPayload::Error(e)) if e.code.is_some() => Some(Err(e.to_io())),
            Some(_) => None,
            None => {
                dump.unparsed += 1;
                None
            }
        })?;
        Ok(dump)
    }

    /// Send one request with `NLM_F_REQUEST | NLM_F_ACK | extra` and wait
    /// for the kernel's acknowledgement (its error, if it refused).
    pub fn exec(&mut self, req: RouteNetlinkMessage, extra: u16) -> io::Result<()> {
        let seq = self.send(vec![req], NLM_F_REQUEST | NLM_F_ACK | extra)?;
        self.answers(seq, |payload| match payload {
            Some(NetlinkPayload::Error(e)) => Some(match e.code {
                Some(_) => Err(e.to_io()),
                None => Ok(()),
            }),
            Some(NetlinkPayload::Done(_)) => Some(Ok(())),
            _ => None,
        })
    }

    /// Every route of every table and family (one dump).
    pub fn dump_routes(&mut self) -> io::Result<Dump> {
        self.dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()))
    }

    /// Every neighbour entry of every interface and family (one dump).
    pub fn dump_neighbours(&mut self) -> io::Result<Dump> {
        self.dump(RouteNetlinkMessage::GetNeighbour(
            NeighbourMessage::default(),
        ))
    }
}

/// Append request `m` with header `flags` and sequence number `seq` to
/// `out`, as it goes on the socket.
pub fn serialize_into(out: &mut Vec<u8>, m: RouteNetlinkMessage, flags: u16, seq: u32) {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = flags;
    hdr.sequence_number = seq;
    let mut packet = NetlinkMessage::new(hdr, NetlinkPayload::from(m));
    packet.finalize();
    let at = out.len();
    out.resize(at + packet.buffer_len(), 0);
    packet.serialize(&mut out[at..]);
}

/// Split one datagram into its netlink messages: (sequence number, payload
/// or None if it did not parse). A malformed length ends the walk.
pub fn split_messages(
    mut data: &[u8],
) -> impl Iterator<Item = (u32, Option<NetlinkPayload<RouteNetlinkMessage>>)> + '_ {
    std::iter::from_fn(move || {
        let nl = NetlinkBuffer::new_checked(data).ok()?;
        let len = nl.length() as usize;
        let seq = nl.sequence_number();
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[..len])
            .ok()
            .map(|m| m.payload);
        // Messages are 4-byte aligned (NLMSG_ALIGN).
        let next = (len + 3) & !3;
        data = data.get(next..).unwrap_or(&[]);
        Some((seq, msg))
    })
}

/// Regenerates the captured dumps of the neighbour module's tests: run the
/// ignored test inside a namespace set up as those tests describe.
#[cfg(test)]
mod capture {
    use super::*;

    #[test]
    #[ignore]
    fn print_dumps() {
        let mut r = Rtnl::open().unwrap();
        for req in [
            RouteNetlinkMessage::GetRoute(RouteMessage::default()),
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
        ] {
            let seq = r.send(vec![req], NLM_F_REQUEST | NLM_F_DUMP).unwrap();
            let mut all = Vec::new();
            loop {
                let n = r.sock.recv(&mut &mut r.buf[..], 0).unwrap();
                let d = &r.buf[..n];
                all.extend_from_slice(d);
                if split_messages(d)
                    .any(|(s, p)| s == seq && matches!(p, Some(NetlinkPayload::Done(_))))
                {
                    break;
                }
            }
            let hex: String = all.iter().map(|b| format!("{b:02x}")).collect();
            println!("{hex}");
        }
    }
}
