//! The IKEv2 message codec (RFC 7296 3.): a checked view of the fixed
//! header and a parser of the payload chain into small `Repr`s, with `emit`.
//!
//! Every read goes through `Reader`, which returns an error instead of
//! indexing past the end: no input can make the parser panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::Prefix;

/// Exchange type IKE_SA_INIT (RFC 7296 3.1).
pub const IKE_SA_INIT: u8 = 34;
/// Exchange type IKE_AUTH.
pub const IKE_AUTH: u8 = 35;
/// Exchange type CREATE_CHILD_SA.
pub const CREATE_CHILD_SA: u8 = 36;
/// Exchange type INFORMATIONAL.
pub const INFORMATIONAL: u8 = 37;

/// Header flag: sent by the original initiator of the IKE SA.
pub const FLAG_INITIATOR: u8 = 0x08;
/// Header flag: this message is a response.
pub const FLAG_RESPONSE: u8 = 0x20;

/// Payload type numbers (RFC 7296 3.2).
pub mod payload_type {
    /// No next payload.
    pub const NONE: u8 = 0;
    /// Security Association.
    pub const SA: u8 = 33;
    /// Key Exchange.
    pub const KE: u8 = 34;
    /// Identification - Initiator.
    pub const IDI: u8 = 35;
    /// Identification - Responder.
    pub const IDR: u8 = 36;
    /// Certificate.
    pub const CERT: u8 = 37;
    /// Certificate Request.
    pub const CERTREQ: u8 = 38;
    /// Authentication.
    pub const AUTH: u8 = 39;
    /// Nonce.
    pub const NONCE: u8 = 40;
    /// Notify.
    pub const NOTIFY: u8 = 41;
    /// Delete.
    pub const DELETE: u8 = 42;
    /// Vendor ID.
    pub const VENDOR: u8 = 43;
    /// Traffic Selector - Initiator.
    pub const TSI: u8 = 44;
    /// Traffic Selector - Responder.
    pub const TSR: u8 = 45;
    /// Encrypted and Authenticated.
    pub const SK: u8 = 46;
    /// Encrypted and Authenticated Fragment (RFC 7383 2.5).
    pub const SKF: u8 = 53;
}

/// Notify message types (RFC 7296 3.10.1) this core sends or reads.
pub mod notify {
    /// Error: a critical payload we do not know.
    pub const UNSUPPORTED_CRITICAL_PAYLOAD: u16 = 1;
    /// Error: an ESP SPI we do not know.
    pub const INVALID_SPI: u16 = 11;
    /// Error: no proposal acceptable.
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    /// Error: wrong DH group; data = the group wanted.
    pub const INVALID_KE_PAYLOAD: u16 = 17;
    /// Error: AUTH failed.
    pub const AUTHENTICATION_FAILED: u16 = 24;
    /// Error: no more child SAs on this IKE SA.
    pub const NO_ADDITIONAL_SAS: u16 = 35;
    /// Error: TS not acceptable.
    pub const TS_UNACCEPTABLE: u16 = 38;
    /// Error: temporary failure (rekey collision).
    pub const TEMPORARY_FAILURE: u16 = 43;
    /// Error: the child SA is not found.
    pub const CHILD_SA_NOT_FOUND: u16 = 44;
    /// Status: the initial contact.
    pub const INITIAL_CONTACT: u16 = 16384;
    /// Status: NAT detection, source.
    pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
    /// Status: NAT detection, destination.
    pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
    /// Status: responder cookie (RFC 7296 2.6).
    pub const COOKIE: u16 = 16390;
    /// Status: transport mode asked for (we refuse it by ignoring it: tunnel mode).
    pub const USE_TRANSPORT_MODE: u16 = 16391;
    /// Status: the child SA being rekeyed.
    pub const REKEY_SA: u16 = 16393;
    /// Status: IKE fragmentation supported (RFC 7383 2.3).
    pub const IKEV2_FRAGMENTATION_SUPPORTED: u16 = 16430;
    /// Status: the hash algorithms the sender verifies digital signatures
    /// with (RFC 7427 4); data: 2-byte hash numbers.
    pub const SIGNATURE_HASH_ALGORITHMS: u16 = 16431;
}

/// Why a message could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than a length field says, or than the header.
    Truncated,
    /// A length field is inconsistent.
    BadLength,
    /// Not IKEv2 (major version != 2).
    BadVersion,
    /// A malformed field.
    Malformed,
    /// A critical payload of this type we do not support (RFC 7296 2.5).
    UnsupportedCritical(u8),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Truncated => write!(f, "truncated message"),
            WireError::BadLength => write!(f, "inconsistent length field"),
            WireError::BadVersion => write!(f, "not IKEv2"),
            WireError::Malformed => write!(f, "malformed payload"),
            WireError::UnsupportedCritical(t) => write!(f, "unsupported critical payload {t}"),
        }
    }
}

/// A bounds-checked cursor: every read can fail, none can panic.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        s
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

mod field {
    use std::ops::Range;
    pub const SPI_I: Range<usize> = 0..8;
    pub const SPI_R: Range<usize> = 8..16;
    pub const NEXT: usize = 16;
    pub const VERSION: usize = 17;
    pub const EXCHANGE: usize = 18;
    pub const FLAGS: usize = 19;
    pub const MSG_ID: Range<usize> = 20..24;
    pub const LENGTH: Range<usize> = 24..28;
}

/// Length of the IKE header.
pub const HEADER_LEN: usize = 28;

/// A checked view of an IKE header (smoltcp style).
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wrap a buffer after checking it holds a header and that the Length
    /// field matches the buffer and the version is 2.x.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let h = Header { buffer };
        if h.version() >> 4 != 2 {
            return Err(WireError::BadVersion);
        }
        if h.length() as usize != h.buffer.as_ref().len() {
            return Err(WireError::BadLength);
        }
        Ok(h)
    }
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// Initiator's SPI.
    pub fn spi_i(&self) -> u64 {
        u64::from_be_bytes(self.b()[field::SPI_I].try_into().unwrap_or([0; 8]))
    }
    /// Responder's SPI.
    pub fn spi_r(&self) -> u64 {
        u64::from_be_bytes(self.b()[field::SPI_R].try_into().unwrap_or([0; 8]))
    }
    /// First payload's type.
    pub fn next_payload(&self) -> u8 {
        self.b()[field::NEXT]
    }
    /// Version byte (0x20).
    pub fn version(&self) -> u8 {
        self.b()[field::VERSION]
    }
    /// Exchange type.
    pub fn exchange(&self) -> u8 {
        self.b()[field::EXCHANGE]
    }
    /// Flags.
    pub fn flags(&self) -> u8 {
        self.b()[field::FLAGS]
    }
    /// Message ID.
    pub fn msg_id(&self) -> u32 {
        u32::from_be_bytes(self.b()[field::MSG_ID].try_into().unwrap_or([0; 4]))
    }
    /// Length of the whole message.
    pub fn length(&self) -> u32 {
        u32::from_be_bytes(self.b()[field::LENGTH].try_into().unwrap_or([0; 4]))
    }
}

/// The IKE header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    /// Initiator's SPI.
    pub spi_i: u64,
    /// Responder's SPI.
    pub spi_r: u64,
    /// Exchange type.
    pub exchange: u8,
    /// Flags (FLAG_INITIATOR, FLAG_RESPONSE).
    pub flags: u8,
    /// Message ID.
    pub msg_id: u32,
}

impl HeaderRepr {
    /// Whether the R flag is set.
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }
    /// Write the header with this next payload and total length.
    pub fn emit(&self, next: u8, length: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i.to_be_bytes());
        out.extend_from_slice(&self.spi_r.to_be_bytes());
        out.push(next);
        out.push(0x20);
        out.push(self.exchange);
        out.push(self.flags);
        out.extend_from_slice(&self.msg_id.to_be_bytes());
        out.extend_from_slice(&(length as u32).to_be_bytes());
    }
}

/// One transform of a proposal (RFC 7296 3.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformRepr {
    /// Transform type (1 ENCR, 2 PRF, 3 INTEG, 4 DH, 5 ESN).
    pub ty: u8,
    /// Transform ID.
    pub id: u16,
    /// Key Length attribute (type 14), if present.
    pub key_len: Option<u16>,
}

/// One proposal of an SA payload (RFC 7296 3.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalRepr {
    /// Proposal number (1, 2, ...).
    pub num: u8,
    /// Protocol ID: 1 IKE, 3 ESP.
    pub protocol: u8,
    /// SPI (empty, 8 bytes for IKE rekeys, 4 for ESP).
    pub spi: Vec<u8>,
    /// Transforms.
    pub transforms: Vec<TransformRepr>,
}

/// Protocol ID IKE.
pub const PROTO_IKE: u8 = 1;
/// Protocol ID ESP.
pub const PROTO_ESP: u8 = 3;

/// ID types (RFC 7296 3.5).
pub mod id_type {
    /// ID_IPV4_ADDR.
    pub const IPV4: u8 = 1;
    /// ID_FQDN.
    pub const FQDN: u8 = 2;
    /// ID_RFC822_ADDR.
    pub const RFC822: u8 = 3;
    /// ID_IPV6_ADDR.
    pub const IPV6: u8 = 5;
    /// ID_DER_ASN1_DN.
    pub const DER_ASN1_DN: u8 = 9;
    /// ID_KEY_ID.
    pub const KEY_ID: u8 = 11;
}

/// A Notify payload (RFC 7296 3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyRepr {
    /// Protocol ID (0 when not about an SA).
    pub protocol: u8,
    /// SPI (empty or 4 bytes).
    pub spi: Vec<u8>,
    /// Notify message type.
    pub ty: u16,
    /// Notification data.
    pub data: Vec<u8>,
}

/// TS_IPV4_ADDR_RANGE.
pub const TS_IPV4: u8 = 7;
/// TS_IPV6_ADDR_RANGE.
pub const TS_IPV6: u8 = 8;

/// One traffic selector (RFC 7296 3.13.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsRepr {
    /// IP protocol (0 = any).
    pub ip_proto: u8,
    /// First port.
    pub start_port: u16,
    /// Last port.
    pub end_port: u16,
    /// First address.
    pub start: IpAddr,
    /// Last address (same family as `start`).
    pub end: IpAddr,
}

impl TsRepr {
    /// All ports and protocols of a prefix.
    pub fn from_prefix(p: Prefix) -> TsRepr {
        let (start, end) = match p.addr {
            IpAddr::V4(a) => {
                let len = u32::from(p.len.min(32));
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                let s = u32::from(a) & mask;
                (IpAddr::V4(s.into()), IpAddr::V4((s | !mask).into()))
            }
            IpAddr::V6(a) => {
                let len = u32::from(p.len.min(128));
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                let s = u128::from(a) & mask;
                (IpAddr::V6(s.into()), IpAddr::V6((s | !mask).into()))
            }
        };
        TsRepr {
            ip_proto: 0,
            start_port: 0,
            end_port: 0xffff,
            start,
            end,
        }
    }

    /// The prefix this range is, if it is exactly one.
    pub fn to_prefix(&self) -> Option<Prefix> {
        match (self.start, self.end) {
            (IpAddr::V4(s), IpAddr::V4(e)) => {
                let (s, e) = (u32::from(s), u32::from(e));
                let span = s ^ e;
                // The range is a prefix when the differing bits are a run of
                // trailing ones, set in `e` and clear in `s`.
                if span.checked_add(1).is_some_and(|x| x & span != 0)
                    || s & span != 0
                    || e & span != span
                {
                    return None;
                }
                Some(Prefix {
                    addr: IpAddr::V4(s.into()),
                    len: (span.leading_zeros()) as u8,
                })
            }
            (IpAddr::V6(s), IpAddr::V6(e)) => {
                let (s, e) = (u128::from(s), u128::from(e));
                let span = s ^ e;
                if span.checked_add(1).is_some_and(|x| x & span != 0)
                    || s & span != 0
                    || e & span != span
                {
                    return None;
                }
                Some(Prefix {
                    addr: IpAddr::V6(s.into()),
                    len: (span.leading_zeros()) as u8,
                })
            }
            _ => None,
        }
    }

    /// Whether `other` lies within this selector.
    pub fn contains(&self, other: &TsRepr) -> bool {
        fn key(a: IpAddr) -> (u8, u128) {
            match a {
                IpAddr::V4(a) => (4, u128::from(u32::from(a))),
                IpAddr::V6(a) => (6, u128::from(a)),
            }
        }
        let (fs, s) = key(self.start);
        let (fe, e) = key(self.end);
        let (fos, os) = key(other.start);
        let (foe, oe) = key(other.end);
        fs == fe
            && fs == fos
            && fos == foe
            && s <= os
            && oe <= e
            && (self.ip_proto == 0 || self.ip_proto == other.ip_proto)
            && self.start_port <= other.start_port
            && other.end_port <= self.end_port
    }
}

/// A Delete payload (RFC 7296 3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteRepr {
    /// Delete the IKE SA this message travels in.
    Ike,
    /// Delete these ESP SAs (the sender's inbound SPIs).
    Esp(Vec<u32>),
    /// Another protocol (AH); ignored.
    Other(u8),
}

/// A payload, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// SA: proposals.
    Sa(Vec<ProposalRepr>),
    /// KE: group and key exchange data.
    Ke {
        /// DH group number.
        group: u16,
        /// Public value.
        data: Vec<u8>,
    },
    /// IDi: type and data.
    IdI(u8, Vec<u8>),
    /// IDr: type and data.
    IdR(u8, Vec<u8>),
    /// AUTH: method (2 = shared key MIC) and data.
    Auth(u8, Vec<u8>),
    /// Ni/Nr.
    Nonce(Vec<u8>),
    /// Notify.
    Notify(NotifyRepr),
    /// Delete.
    Delete(DeleteRepr),
    /// Vendor ID (ignored).
    Vendor(Vec<u8>),
    /// TSi.
    TsI(Vec<TsRepr>),
    /// TSr.
    TsR(Vec<TsRepr>),
    /// CERT: encoding and data (RFC 7296 3.6).
    Cert(u8, Vec<u8>),
    /// CERTREQ: encoding and data (RFC 7296 3.7).
    CertReq(u8, Vec<u8>),
    /// Other non-critical payloads we skip (type kept).
    Skipped(u8),
}

impl Payload {
    /// This payload's type number.
    pub fn ty(&self) -> u8 {
        use payload_type::*;
        match self {
            Payload::Sa(_) => SA,
            Payload::Ke { .. } => KE,
            Payload::IdI(..) => IDI,
            Payload::IdR(..) => IDR,
            Payload::Auth(..) => AUTH,
            Payload::Nonce(_) => NONCE,
            Payload::Notify(_) => NOTIFY,
            Payload::Delete(_) => DELETE,
            Payload::Vendor(_) => VENDOR,
            Payload::TsI(_) => TSI,
            Payload::TsR(_) => TSR,
            Payload::Cert(..) => CERT,
            Payload::CertReq(..) => CERTREQ,
            Payload::Skipped(t) => *t,
        }
    }

    /// The body (after the 4-byte generic header).
    fn emit_body(&self, out: &mut Vec<u8>) {
        match self {
            Payload::Sa(props) => {
                for (i, p) in props.iter().enumerate() {
                    let start = out.len();
                    out.push(if i + 1 == props.len() { 0 } else { 2 });
                    out.push(0);
                    out.extend_from_slice(&[0, 0]); // length, set below
                    out.push(p.num);
                    out.push(p.protocol);
                    out.push(p.spi.len() as u8);
                    out.push(p.transforms.len() as u8);
                    out.extend_from_slice(&p.spi);
                    for (j, t) in p.transforms.iter().enumerate() {
                        out.push(if j + 1 == p.transforms.len() { 0 } else { 3 });
                        out.push(0);
                        let tlen: u16 = if t.key_len.is_some() { 12 } else { 8 };
                        out.extend_from_slice(&tlen.to_be_bytes());
                        out.push(t.ty);
                        out.push(0);
                        out.extend_from_slice(&t.id.to_be_bytes());
                        if let Some(k) = t.key_len {
                            // Attribute 14 (Key Length) in TV form (AF bit set).
                            out.extend_from_slice(&(0x8000u16 | 14).to_be_bytes());
                            out.extend_from_slice(&k.to_be_bytes());
                        }
                    }
                    let len = (out.len() - start) as u16;
                    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
                }
            }
            Payload::Ke { group, data } => {
                out.extend_from_slice(&group.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(data);
            }
            Payload::IdI(t, d) | Payload::IdR(t, d) => {
                out.extend_from_slice(&[*t, 0, 0, 0]);
                out.extend_from_slice(d);
            }
            Payload::Auth(m, d) => {
                out.extend_from_slice(&[*m, 0, 0, 0]);
                out.extend_from_slice(d);
            }
            Payload::Cert(e, d) | Payload::CertReq(e, d) => {
                out.push(*e);
                out.extend_from_slice(d);
            }
            Payload::Nonce(n) | Payload::Vendor(n) => out.extend_from_slice(n),
            Payload::Notify(n) => {
                out.push(n.protocol);
                out.push(n.spi.len() as u8);
                out.extend_from_slice(&n.ty.to_be_bytes());
                out.extend_from_slice(&n.spi);
                out.extend_from_slice(&n.data);
            }
            Payload::Delete(d) => match d {
                DeleteRepr::Ike => out.extend_from_slice(&[PROTO_IKE, 0, 0, 0]),
                DeleteRepr::Esp(spis) => {
                    out.extend_from_slice(&[PROTO_ESP, 4]);
                    out.extend_from_slice(&(spis.len() as u16).to_be_bytes());
                    for s in spis {
                        out.extend_from_slice(&s.to_be_bytes());
                    }
                }
                DeleteRepr::Other(p) => out.extend_from_slice(&[*p, 0, 0, 0]),
            },
            Payload::TsI(ts) | Payload::TsR(ts) => {
                out.push(ts.len() as u8);
                out.extend_from_slice(&[0, 0, 0]);
                for t in ts {
                    let v4 = t.start.is_ipv4();
                    out.push(if v4 { TS_IPV4 } else { TS_IPV6 });
                    out.push(t.ip_proto);
                    out.extend_from_slice(&(if v4 { 16u16 } else { 40 }).to_be_bytes());
                    out.extend_from_slice(&t.start_port.to_be_bytes());
                    out.extend_from_slice(&t.end_port.to_be_bytes());
                    for a in [t.start, t.end] {
                        match a {
                            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
                        }
                    }
                }
            }
            Payload::Skipped(_) => {}
        }
    }
}

/// Emit a payload chain; returns the first payload's type and appends the
/// bytes. `last_next` is the Next Payload of the last one (0, or SK's
/// chain never needs it).
pub fn emit_payloads(payloads: &[Payload], out: &mut Vec<u8>) -> u8 {
    for (i, p) in payloads.iter().enumerate() {
        let next = payloads.get(i + 1).map_or(payload_type::NONE, Payload::ty);
        let start = out.len();
        out.extend_from_slice(&[next, 0, 0, 0]);
        p.emit_body(out);
        let len = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }
    payloads.first().map_or(payload_type::NONE, Payload::ty)
}

/// A whole unencrypted message: header and payloads.
pub fn emit_message(h: &HeaderRepr, payloads: &[Payload]) -> Vec<u8> {
    let mut body = Vec::new();
    let first = emit_payloads(payloads, &mut body);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    h.emit(first, HEADER_LEN + body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// Where the SK payload sits in a message (RFC 7296 3.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkRef {
    /// The first inner payload's type (SK's Next Payload).
    pub first_inner: u8,
    /// Offset of SK's generic header in the message.
    pub offset: usize,
}

/// A parsed message: header, plaintext payloads and the SK payload's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header.
    pub header: HeaderRepr,
    /// Payloads outside SK (or, after decryption, inside).
    pub payloads: Vec<Payload>,
    /// The SK payload, if any (always the last one).
    pub sk: Option<SkRef>,
}

impl Message {
    /// Parse a whole message (the SK payload is located, not decrypted).
    pub fn parse(data: &[u8]) -> Result<Message, WireError> {
        let h = Header::new_checked(data)?;
        let header = HeaderRepr {
            spi_i: h.spi_i(),
            spi_r: h.spi_r(),
            exchange: h.exchange(),
            flags: h.flags(),
            msg_id: h.msg_id(),
        };
        let (payloads, sk) = parse_chain(h.next_payload(), data, HEADER_LEN)?;
        Ok(Message {
            header,
            payloads,
            sk,
        })
    }

    /// The SA payload's proposals.
    pub fn sa(&self) -> Option<&[ProposalRepr]> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Sa(x) => Some(x.as_slice()),
            _ => None,
        })
    }

    /// The KE payload: DH group number and public value.
    pub fn ke(&self) -> Option<(u16, &[u8])> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Ke { group, data } => Some((*group, data.as_slice())),
            _ => None,
        })
    }

    /// The Nonce payload.
    pub fn nonce(&self) -> Option<&[u8]> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.as_slice()),
            _ => None,
        })
    }

    /// The IDi payload: type and data.
    pub fn id_i(&self) -> Option<(u8, &[u8])> {
        self.payloads.iter().find_map(|p| match p {
            Payload::IdI(t, d) => Some((*t, d.as_slice())),
            _ => None,
        })
    }

    /// The IDr payload: type and data.
    pub fn id_r(&self) -> Option<(u8, &[u8])> {
        self.payloads.iter().find_map(|p| match p {
            Payload::IdR(t, d) => Some((*t, d.as_slice())),
            _ => None,
        })
    }

    /// The AUTH payload: method and data.
    pub fn auth(&self) -> Option<(u8, &[u8])> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Auth(t, d) => Some((*t, d.as_slice())),
            _ => None,
        })
    }

    /// The TSi payload's selectors.
    pub fn ts_i(&self) -> Option<&[TsRepr]> {
        self.payloads.iter().find_map(|p| match p {
            Payload::TsI(x) => Some(x.as_slice()),
            _ => None,
        })
    }

    /// The TSr payload's selectors.
    pub fn ts_r(&self) -> Option<&[TsRepr]> {
        self.payloads.iter().find_map(|p| match p {
            Payload::TsR(x) => Some(x.as_slice()),
            _ => None,
        })
    }

    /// Every Delete payload, in order.
    pub fn deletes(&self) -> impl Iterator<Item = &DeleteRepr> {
        self.payloads.iter().filter_map(|p| match p {
            Payload::Delete(d) => Some(d),
            _ => None,
        })
    }

    /// The first Notify of this type.
    pub fn notify(&self, ty: u16) -> Option<&NotifyRepr> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.ty == ty => Some(n),
            _ => None,
        })
    }

    /// Every Notify of this type.
    pub fn notifies(&self, ty: u16) -> impl Iterator<Item = &NotifyRepr> {
        self.payloads.iter().filter_map(move |p| match p {
            Payload::Notify(n) if n.ty == ty => Some(n),
            _ => None,
        })
    }

    /// The first error Notify (type < 16384), if any.
    pub fn error_notify(&self) -> Option<&NotifyRepr> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.ty < 16384 => Some(n),
            _ => None,
        })
    }
}

/// Parse a payload chain starting with type `next` at `data[pos..]`. An SK
/// payload ends the chain (its contents are returned by reference).
pub fn parse_chain(
    mut next: u8,
    data: &[u8],
    pos: usize,
) -> Result<(Vec<Payload>, Option<SkRef>), WireError> {
    let mut r = Reader::new(data.get(pos..).ok_or(WireError::Truncated)?);
    let mut payloads = Vec::new();
    while next != payload_type::NONE {
        let offset = pos + r.pos;
        let this = next;
        next = r.u8()?;
        let critical = r.u8()? & 0x80 != 0;
        let len = usize::from(r.u16()?);
        if len < 4 {
            return Err(WireError::BadLength);
        }
        let body = r.take(len - 4)?;
        if this == payload_type::SK {
            // RFC 7296 3.14: SK is the last payload; what follows inside is
            // its Next Payload's chain.
            if !r.is_empty() {
                return Err(WireError::BadLength);
            }
            return Ok((
                payloads,
                Some(SkRef {
                    first_inner: next,
                    offset,
                }),
            ));
        }
        if this == payload_type::SKF {
            // RFC 7383 2.5: an Encrypted Fragment payload is the last (its
            // Next Payload names the first inner payload); the fragment
            // module reads it.
            if !r.is_empty() {
                return Err(WireError::BadLength);
            }
            payloads.push(Payload::Skipped(this));
            return Ok((payloads, None));
        }
        match parse_body(this, body)? {
            Some(p) => payloads.push(p),
            None if critical => return Err(WireError::UnsupportedCritical(this)),
            None => payloads.push(Payload::Skipped(this)),
        }
        if payloads.len() > 64 {
            return Err(WireError::Malformed);
        }
    }
    if !r.is_empty() {
        return Err(WireError::BadLength);
    }
    Ok((payloads, None))
}

fn parse_addr(r: &mut Reader<'_>, v4: bool) -> Result<IpAddr, WireError> {
    Ok(if v4 {
        let b: [u8; 4] = r.take(4)?.try_into().map_err(|_| WireError::Truncated)?;
        IpAddr::V4(Ipv4Addr::from(b))
    } else {
        let b: [u8; 16] = r.take(16)?.try_into().map_err(|_| WireError::Truncated)?;
        IpAddr::V6(Ipv6Addr::from(b))
    })
}

/// Parse one payload's body; `None` for a type we do not know.
fn parse_body(ty: u8, body: &[u8]) -> Result<Option<Payload>, WireError> {
    use payload_type::*;
    let mut r = Reader::new(body);
    Ok(Some(match ty {
        SA => {
            let mut props = Vec::new();
            loop {
                let last = r.u8()?;
                r.u8()?;
                let plen = usize::from(r.u16()?);
                let mut pr = Reader::new(r.take(plen.checked_sub(4).ok_or(WireError::BadLength)?)?);
                let num = pr.u8()?;
                let protocol = pr.u8()?;
                let spi_len = usize::from(pr.u8()?);
                let ntrans = pr.u8()?;
                let spi = pr.take(spi_len)?.to_vec();
                let mut transforms = Vec::new();
                for i in 0..ntrans {
                    let tlast = pr.u8()?;
                    pr.u8()?;
                    let tlen = usize::from(pr.u16()?);
                    let mut tr =
                        Reader::new(pr.take(tlen.checked_sub(4).ok_or(WireError::BadLength)?)?);
                    let tty = tr.u8()?;
                    tr.u8()?;
                    let id = tr.u16()?;
                    let mut key_len = None;
                    while !tr.is_empty() {
                        let at = tr.u16()?;
                        let val = if at & 0x8000 != 0 {
                            tr.u16()?
                        } else {
                            let l = usize::from(tr.u16()?);
                            tr.take(l)?;
                            continue;
                        };
                        if at & 0x7fff == 14 {
                            key_len = Some(val);
                        }
                    }
                    transforms.push(TransformRepr {
                        ty: tty,
                        id,
                        key_len,
                    });
                    if (tlast == 0) != (i + 1 == ntrans) {
                        return Err(WireError::Malformed);
                    }
                }
                if !pr.is_empty() {
                    return Err(WireError::BadLength);
                }
                props.push(ProposalRepr {
                    num,
                    protocol,
                    spi,
                    transforms,
                });
                if last == 0 {
                    break;
                }
                if last != 2 || props.len() > 64 {
                    return Err(WireError::Malformed);
                }
            }
            if !r.is_empty() {
                return Err(WireError::BadLength);
            }
            Payload::Sa(props)
        }
        KE => {
            let group = r.u16()?;
            r.u16()?;
            Payload::Ke {
                group,
                data: r.rest().to_vec(),
            }
        }
        IDI | IDR | AUTH => {
            let t = r.u8()?;
            r.take(3)?;
            let d = r.rest().to_vec();
            match ty {
                IDI => Payload::IdI(t, d),
                IDR => Payload::IdR(t, d),
                _ => Payload::Auth(t, d),
            }
        }
        NONCE => Payload::Nonce(r.rest().to_vec()),
        NOTIFY => {
            let protocol = r.u8()?;
            let spi_len = usize::from(r.u8()?);
            let nty = r.u16()?;
            let spi = r.take(spi_len)?.to_vec();
            Payload::Notify(NotifyRepr {
                protocol,
                spi,
                ty: nty,
                data: r.rest().to_vec(),
            })
        }
        DELETE => {
            let protocol = r.u8()?;
            let spi_len = r.u8()?;
            let n = usize::from(r.u16()?);
            Payload::Delete(match (protocol, spi_len) {
                (PROTO_IKE, 0) => DeleteRepr::Ike,
                (PROTO_ESP, 4) => {
                    let mut spis = Vec::with_capacity(n.min(256));
                    for _ in 0..n {
                        spis.push(r.u32()?);
                    }
                    DeleteRepr::Esp(spis)
                }
                (PROTO_IKE | PROTO_ESP, _) => return Err(WireError::Malformed),
                (p, _) => DeleteRepr::Other(p),
            })
        }
        VENDOR => Payload::Vendor(r.rest().to_vec()),
        TSI | TSR => {
            let n = r.u8()?;
            r.take(3)?;
            let mut ts = Vec::new();
            for _ in 0..n {
                let t = r.u8()?;
                let ip_proto = r.u8()?;
                let len = r.u16()?;
                let v4 = match (t, len) {
                    (TS_IPV4, 16) => true,
                    (TS_IPV6, 40) => false,
                    _ => return Err(WireError::Malformed),
                };
                let start_port = r.u16()?;
                let end_port = r.u16()?;
                let start = parse_addr(&mut r, v4)?;
                let end = parse_addr(&mut r, v4)?;
                ts.push(TsRepr {
                    ip_proto,
                    start_port,
                    end_port,
                    start,
                    end,
                });
            }
            if ty == TSI {
                Payload::TsI(ts)
            } else {
                Payload::TsR(ts)
            }
        }
        CERT | CERTREQ => {
            let e = r.u8()?;
            let d = r.rest().to_vec();
            if ty == CERT {
                Payload::Cert(e, d)
            } else {
                Payload::CertReq(e, d)
            }
        }
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (HeaderRepr, Vec<Payload>) {
        let h = HeaderRepr {
            spi_i: 0x0102030405060708,
            spi_r: 0,
            exchange: IKE_SA_INIT,
            flags: FLAG_INITIATOR,
            msg_id: 0,
        };
        let p = vec![
            Payload::Sa(vec![ProposalRepr {
                num: 1,
                protocol: PROTO_IKE,
                spi: vec![],
                transforms: vec![
                    TransformRepr {
                        ty: 1,
                        id: 20,
                        key_len: Some(256),
                    },
                    TransformRepr {
                        ty: 2,
                        id: 5,
                        key_len: None,
                    },
                    TransformRepr {
                        ty: 4,
                        id: 31,
                        key_len: None,
                    },
                ],
            }]),
            Payload::Ke {
                group: 31,
                data: vec![9; 32],
            },
            Payload::Nonce(vec![7; 32]),
            Payload::Notify(NotifyRepr {
                protocol: 0,
                spi: vec![],
                ty: notify::NAT_DETECTION_SOURCE_IP,
                data: vec![1; 20],
            }),
            Payload::TsI(vec![TsRepr::from_prefix(Prefix {
                addr: "203.0.113.0".parse().unwrap(),
                len: 24,
            })]),
            Payload::Delete(DeleteRepr::Esp(vec![0x1234, 0x5678])),
        ];
        (h, p)
    }

    #[test]
    fn round_trip() {
        let (h, p) = sample();
        let bytes = emit_message(&h, &p);
        assert_eq!(
            &bytes[16..20],
            &[payload_type::SA, 0x20, IKE_SA_INIT, FLAG_INITIATOR]
        );
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.header, h);
        assert_eq!(m.payloads, p);
        assert_eq!(m.sk, None);
    }

    #[test]
    fn ts_prefixes() {
        let p = Prefix {
            addr: "203.0.113.7".parse().unwrap(),
            len: 24,
        };
        let t = TsRepr::from_prefix(p);
        assert_eq!(t.start, "203.0.113.0".parse::<IpAddr>().unwrap());
        assert_eq!(t.end, "203.0.113.255".parse::<IpAddr>().unwrap());
        assert_eq!(
            t.to_prefix(),
            Some(Prefix {
                addr: "203.0.113.0".parse().unwrap(),
                len: 24
            })
        );
        let h = TsRepr::from_prefix(Prefix {
            addr: "203.0.113.1".parse().unwrap(),
            len: 32,
        });
        assert_eq!(h.to_prefix().unwrap().len, 32);
        let any = TsRepr::from_prefix(Prefix {
            addr: "0.0.0.0".parse().unwrap(),
            len: 0,
        });
        assert_eq!(any.to_prefix().unwrap().len, 0);
        let v6 = TsRepr::from_prefix(Prefix {
            addr: "2001:db8::".parse().unwrap(),
            len: 64,
        });
        assert_eq!(v6.to_prefix().unwrap().len, 64);
        assert!(any.contains(&h) && t.contains(&h) && !h.contains(&t));
        let odd = TsRepr {
            end: "203.0.113.5".parse().unwrap(),
            ..t
        };
        assert_eq!(odd.to_prefix(), None);
    }

    #[test]
    fn unknown_payloads() {
        let (h, _) = sample();
        // Chain: unknown 200 (non-critical) -> Vendor ID -> unknown 201 (critical).
        let mut body = vec![payload_type::VENDOR, 0, 0, 4];
        body.extend_from_slice(&[201, 0, 0, 5, b'x']);
        body.extend_from_slice(&[0, 0x80, 0, 4]);
        let mut m = Vec::new();
        h.emit(200, HEADER_LEN + body.len(), &mut m);
        m.extend_from_slice(&body);
        assert_eq!(Message::parse(&m), Err(WireError::UnsupportedCritical(201)));
        let crit = m.len() - 3;
        m[crit] = 0; // clear the critical bit: skipped
        let parsed = Message::parse(&m).unwrap();
        assert_eq!(
            parsed.payloads,
            vec![
                Payload::Skipped(200),
                Payload::Vendor(vec![b'x']),
                Payload::Skipped(201)
            ]
        );
    }

    #[test]
    fn bad_lengths() {
        let (h, p) = sample();
        let bytes = emit_message(&h, &p);
        for cut in 0..bytes.len() {
            assert!(Message::parse(&bytes[..cut]).is_err());
        }
        let mut b = bytes.clone();
        b[HEADER_LEN + 3] = 3; // payload length < 4
        assert!(Message::parse(&b).is_err());
        b[17] = 0x10;
        assert_eq!(Message::parse(&b), Err(WireError::BadVersion));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_random(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = Message::parse(&data);
        }

        #[test]
        fn never_panics_mutated(pos in 0usize..400, val in proptest::prelude::any::<u8>(), cut in 0usize..400) {
            let (h, p) = sample();
            let mut b = emit_message(&h, &p);
            let n = b.len();
            b[pos % n] = val;
            // Keep the header length consistent half the time so the chain is reached.
            if cut % 2 == 0 {
                let l = (n as u32).to_be_bytes();
                b[24..28].copy_from_slice(&l);
            }
            let _ = Message::parse(&b);
            let _ = Message::parse(&b[..cut % (n + 1)]);
        }
    }
}
