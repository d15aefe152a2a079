//! The control connection's wire format: length-prefixed frames, carried
//! inside TLS 1.3 (see [`crate::tls`]).
//!
//! A frame is a 4-byte big-endian body length (1..=[`MAX_FRAME`]) and the
//! body: one type byte, then the message's fields in order. Addresses are a
//! family byte (4 or 6) and 4 or 16 bytes; strings are a length byte and
//! UTF-8; integers are big-endian. Trailing bytes are an error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use zeroize::Zeroizing;

use crate::consts::{KEY_LEN, MAX_FRAME};
use crate::history::ErrorCode;
use crate::{KeyMaterial, Prefix};

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The body ends before a field does.
    Truncated,
    /// The length prefix is 0 or larger than [`MAX_FRAME`].
    BadLength,
    /// Unknown message type.
    UnknownType(u8),
    /// A field has a value it may not have (address family, prefix length,
    /// UTF-8, encap, role).
    BadField(&'static str),
    /// Bytes after the last field.
    TrailingBytes,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Truncated => write!(f, "truncated message"),
            WireError::BadLength => write!(f, "bad frame length"),
            WireError::UnknownType(t) => write!(f, "unknown message type {t}"),
            WireError::BadField(n) => write!(f, "bad field {n}"),
            WireError::TrailingBytes => write!(f, "trailing bytes"),
        }
    }
}

/// Which end of a control connection a Hello or Auth comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An SD-WAN edge (vEdge / cEdge).
    Edge = 1,
    /// The controller (vSmart).
    Controller = 2,
}

/// Why a connection is closed by a Goodbye.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoodbyeReason {
    /// Orderly shutdown or operator clear.
    Shutdown = 1,
    /// The peer's authentication failed (wrong PSK).
    AuthFailed = 2,
    /// Protocol error (bad frame, unexpected message, version).
    ProtocolError = 3,
    /// Replaced by a newer connection of the same system-ip and color.
    Replaced = 4,
}

impl GoodbyeReason {
    fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            1 => GoodbyeReason::Shutdown,
            2 => GoodbyeReason::AuthFailed,
            3 => GoodbyeReason::ProtocolError,
            4 => GoodbyeReason::Replaced,
            _ => return Err(WireError::BadField("goodbye reason")),
        })
    }
}

/// A TLOC route: where and how to send IPsec to one transport locator of an
/// edge, with the key material its inbound SA expects (before the pairwise
/// derivation).
#[derive(Clone, PartialEq, Eq)]
pub struct TlocRoute {
    /// Originating edge's system-ip (an identifier only).
    pub system_ip: Ipv4Addr,
    /// Originating edge's site-id.
    pub site_id: u32,
    /// TLOC color.
    pub color: String,
    /// Public (underlay) address of the TLOC.
    pub public_ip: IpAddr,
    /// UDP port of its IPsec (12346 + hop * 20 + offset).
    pub public_port: u16,
    /// Inbound SPI every sender to this TLOC uses.
    pub spi: u32,
    /// AES-256-GCM key || salt the pairwise keys to this TLOC derive from.
    pub key: KeyMaterial,
}

impl std::fmt::Debug for TlocRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlocRoute")
            .field("system_ip", &self.system_ip)
            .field("site_id", &self.site_id)
            .field("color", &self.color)
            .field("public_ip", &self.public_ip)
            .field("public_port", &self.public_port)
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("key", &self.key)
            .finish()
    }
}

/// A service route: an inside prefix reachable at an edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRoute {
    /// The prefix.
    pub prefix: Prefix,
    /// Originating edge's system-ip.
    pub system_ip: Ipv4Addr,
    /// Originating edge's site-id.
    pub site_id: u32,
}

/// One message of the control connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First message of each side after the TLS handshake: identity (the
    /// certificate already proved who the sender is; the receiver checks
    /// the Hello against it).
    Hello {
        /// Who sends it.
        role: Role,
        /// Sender's system-ip (the controller's own, or the edge's).
        system_ip: Ipv4Addr,
        /// Sender's site-id.
        site_id: u32,
        /// Color of the TLOC the connection belongs to (empty from the controller).
        color: String,
        /// Software version string.
        version: String,
    },
    /// The controller accepted the edge (certificate and Hello): the
    /// connection is up.
    AuthOk,
    /// The sender refuses the connection with Cisco's code and closes it.
    Refuse(ErrorCode),
    /// Liveness, sent every keepalive interval by both sides.
    Keepalive,
    /// Advertise (or replace) a TLOC route.
    TlocAdvertise(TlocRoute),
    /// Withdraw a TLOC route.
    TlocWithdraw {
        /// Originator.
        system_ip: Ipv4Addr,
        /// Color.
        color: String,
    },
    /// Advertise a service route.
    RouteAdvertise(ServiceRoute),
    /// Withdraw a service route.
    RouteWithdraw {
        /// The prefix.
        prefix: Prefix,
        /// Originator.
        system_ip: Ipv4Addr,
    },
    /// The sender closes the connection.
    Goodbye(GoodbyeReason),
}

const T_HELLO: u8 = 1;
const T_AUTH_OK: u8 = 3;
const T_KEEPALIVE: u8 = 4;
const T_TLOC_ADV: u8 = 5;
const T_TLOC_WDR: u8 = 6;
const T_ROUTE_ADV: u8 = 7;
const T_ROUTE_WDR: u8 = 8;
const T_GOODBYE: u8 = 9;
const T_REFUSE: u8 = 10;
/// Encap code of IPsec (the only one).
const ENCAP_IPSEC: u8 = 1;

impl Message {
    /// Encodes the message as one frame (length prefix included); the
    /// buffer is zeroized on drop (a TLOC route carries key material).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        // The body may carry key material: both buffers are zeroizing.
        let mut b = Zeroizing::new(Vec::with_capacity(128));
        match self {
            Message::Hello {
                role,
                system_ip,
                site_id,
                color,
                version,
            } => {
                b.push(T_HELLO);
                b.push(*role as u8);
                b.extend_from_slice(&system_ip.octets());
                b.extend_from_slice(&site_id.to_be_bytes());
                put_str(&mut b, color);
                put_str(&mut b, version);
            }
            Message::Refuse(c) => {
                b.push(T_REFUSE);
                b.push(*c as u8);
            }
            Message::AuthOk => b.push(T_AUTH_OK),
            Message::Keepalive => b.push(T_KEEPALIVE),
            Message::TlocAdvertise(t) => {
                b.push(T_TLOC_ADV);
                b.extend_from_slice(&t.system_ip.octets());
                b.extend_from_slice(&t.site_id.to_be_bytes());
                put_str(&mut b, &t.color);
                b.push(ENCAP_IPSEC);
                put_ip(&mut b, t.public_ip);
                b.extend_from_slice(&t.public_port.to_be_bytes());
                b.extend_from_slice(&t.spi.to_be_bytes());
                crate::zbuf::extend(&mut b, t.key.bytes());
            }
            Message::TlocWithdraw { system_ip, color } => {
                b.push(T_TLOC_WDR);
                b.extend_from_slice(&system_ip.octets());
                put_str(&mut b, color);
            }
            Message::RouteAdvertise(r) => {
                b.push(T_ROUTE_ADV);
                put_prefix(&mut b, r.prefix);
                b.extend_from_slice(&r.system_ip.octets());
                b.extend_from_slice(&r.site_id.to_be_bytes());
            }
            Message::RouteWithdraw { prefix, system_ip } => {
                b.push(T_ROUTE_WDR);
                put_prefix(&mut b, *prefix);
                b.extend_from_slice(&system_ip.octets());
            }
            Message::Goodbye(r) => {
                b.push(T_GOODBYE);
                b.push(*r as u8);
            }
        }
        let mut out = Zeroizing::new(Vec::with_capacity(4 + b.len()));
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(&b);
        out
    }

    /// Decodes one frame body (without the length prefix).
    pub fn decode(body: &[u8]) -> Result<Message, WireError> {
        let mut r = Reader { buf: body, pos: 0 };
        let t = r.u8()?;
        let m = match t {
            T_HELLO => {
                let role = match r.u8()? {
                    1 => Role::Edge,
                    2 => Role::Controller,
                    _ => return Err(WireError::BadField("role")),
                };
                Message::Hello {
                    role,
                    system_ip: r.ipv4()?,
                    site_id: r.u32()?,
                    color: r.string("color")?,
                    version: r.string("version")?,
                }
            }
            T_REFUSE => Message::Refuse(
                ErrorCode::from_u8(r.u8()?).ok_or(WireError::BadField("error code"))?,
            ),
            T_AUTH_OK => Message::AuthOk,
            T_KEEPALIVE => Message::Keepalive,
            T_TLOC_ADV => {
                let system_ip = r.ipv4()?;
                let site_id = r.u32()?;
                let color = r.string("color")?;
                if r.u8()? != ENCAP_IPSEC {
                    return Err(WireError::BadField("encap"));
                }
                let public_ip = r.ip()?;
                let public_port = r.u16()?;
                let spi = r.u32()?;
                let key = KeyMaterial::from_slice(r.take(KEY_LEN)?);
                Message::TlocAdvertise(TlocRoute {
                    system_ip,
                    site_id,
                    color,
                    public_ip,
                    public_port,
                    spi,
                    key,
                })
            }
            T_TLOC_WDR => Message::TlocWithdraw {
                system_ip: r.ipv4()?,
                color: r.string("color")?,
            },
            T_ROUTE_ADV => Message::RouteAdvertise(ServiceRoute {
                prefix: r.prefix()?,
                system_ip: r.ipv4()?,
                site_id: r.u32()?,
            }),
            T_ROUTE_WDR => Message::RouteWithdraw {
                prefix: r.prefix()?,
                system_ip: r.ipv4()?,
            },
            T_GOODBYE => Message::Goodbye(GoodbyeReason::from_u8(r.u8()?)?),
            other => return Err(WireError::UnknownType(other)),
        };
        if r.pos != body.len() {
            return Err(WireError::TrailingBytes);
        }
        Ok(m)
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    // Colors and versions are short; longer strings are cut at 255 bytes
    // on a character boundary rather than failing the encoder.
    let mut n = s.len().min(255);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    b.push(n as u8);
    b.extend_from_slice(&s.as_bytes()[..n]);
}

fn put_ip(b: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            b.push(4);
            b.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            b.push(6);
            b.extend_from_slice(&a.octets());
        }
    }
}

fn put_prefix(b: &mut Vec<u8>, p: Prefix) {
    put_ip(b, p.addr);
    b.push(p.len);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn ipv4(&mut self) -> Result<Ipv4Addr, WireError> {
        Ok(Ipv4Addr::from(self.array::<4>()?))
    }
    fn ip(&mut self) -> Result<IpAddr, WireError> {
        match self.u8()? {
            4 => Ok(IpAddr::V4(self.ipv4()?)),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            _ => Err(WireError::BadField("address family")),
        }
    }
    fn prefix(&mut self) -> Result<Prefix, WireError> {
        let addr = self.ip()?;
        let len = self.u8()?;
        Prefix::new(addr, len).ok_or(WireError::BadField("prefix length"))
    }
    fn string(&mut self, name: &'static str) -> Result<String, WireError> {
        let n = self.u8()? as usize;
        let s = self.take(n)?;
        std::str::from_utf8(s)
            .map(str::to_owned)
            .map_err(|_| WireError::BadField(name))
    }
}

/// Reassembles frames from a TCP byte stream.
#[derive(Default)]
pub struct FrameReader {
    buf: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FrameReader {{ {} bytes buffered }}", self.buf.len())
    }
}

impl FrameReader {
    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        crate::zbuf::extend(&mut self.buf, data);
    }

    /// The next whole message, `Ok(None)` when more bytes are needed, or an
    /// error (after which the connection must be closed: framing is lost).
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        let Some(len) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(WireError::BadLength);
        }
        let Some(body) = self.buf.get(4..4 + len) else {
            return Ok(None);
        };
        let m = Message::decode(body);
        self.buf.drain(..4 + len);
        m.map(Some)
    }
}
