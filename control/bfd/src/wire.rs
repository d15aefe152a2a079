//! The BFD control packet (RFC 5880 4.1) as a smoltcp-style view: a
//! checked [`Packet`] over the caller's bytes, [`Repr::parse`] with the
//! reception checks of RFC 5880 6.8.6 that need no session state, and
//! [`Repr::emit`]. No authentication section: packets with the A bit are
//! refused, as we configure no authentication.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! |                       My Discriminator                        |
//! |                      Your Discriminator                       |
//! |                    Desired Min TX Interval                    |
//! |                   Required Min RX Interval                    |
//! |                 Required Min Echo RX Interval                 |
//! ```

use std::time::Duration;

use crate::timers::{PACKET_LEN, PACKET_LEN_AUTH_MIN, VERSION};

mod field {
    use std::ops::Range;
    pub const VERS_DIAG: usize = 0;
    pub const STA_FLAGS: usize = 1;
    pub const DETECT_MULT: usize = 2;
    pub const LENGTH: usize = 3;
    pub const MY_DISC: Range<usize> = 4..8;
    pub const YOUR_DISC: Range<usize> = 8..12;
    pub const DESIRED_MIN_TX: Range<usize> = 12..16;
    pub const REQUIRED_MIN_RX: Range<usize> = 16..20;
    pub const REQUIRED_MIN_ECHO_RX: Range<usize> = 20..24;
}

/// Flag bits of the second byte (RFC 5880 4.1).
pub mod flag {
    /// Poll.
    pub const P: u8 = 0x20;
    /// Final.
    pub const F: u8 = 0x10;
    /// Control Plane Independent.
    pub const C: u8 = 0x08;
    /// Authentication Present.
    pub const A: u8 = 0x04;
    /// Demand.
    pub const D: u8 = 0x02;
    /// Multipoint (reserved, must be zero).
    pub const M: u8 = 0x01;
}

/// Why a received packet is discarded (RFC 5880 6.8.6, in its order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// Fewer than 24 bytes: not even the mandatory section.
    Truncated,
    /// Version is not 1.
    Version,
    /// Length field below 24 (26 with the A bit) or above the bytes received.
    Length,
    /// Detect Mult is zero.
    DetectMult,
    /// The Multipoint bit is set.
    Multipoint,
    /// My Discriminator is zero.
    MyDiscriminator,
    /// Your Discriminator is zero while the State field is Init or Up.
    YourDiscriminator,
    /// The A bit is set, and we configure no authentication.
    Authentication,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated",
            Error::Version => "bad version",
            Error::Length => "bad length",
            Error::DetectMult => "zero detect multiplier",
            Error::Multipoint => "multipoint bit set",
            Error::MyDiscriminator => "zero my discriminator",
            Error::YourDiscriminator => "zero your discriminator in Init/Up",
            Error::Authentication => "authentication present but not configured",
        })
    }
}

impl std::error::Error for Error {}

/// Session state as carried in the Sta field (RFC 5880 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// 0: AdminDown.
    AdminDown,
    /// 1: Down.
    Down,
    /// 2: Init.
    Init,
    /// 3: Up.
    Up,
}

impl State {
    /// The two-bit wire value.
    pub const fn to_wire(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }

    /// From the two-bit wire value (higher bits ignored).
    pub const fn from_wire(v: u8) -> State {
        match v & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    /// Lower-case name as Cisco SD-WAN shows it (`up`, `down`, `init`,
    /// `admin-down`).
    pub const fn name(self) -> &'static str {
        match self {
            State::AdminDown => "admin-down",
            State::Down => "down",
            State::Init => "init",
            State::Up => "up",
        }
    }
}

/// Diagnostic code: the reason for the last state change (RFC 5880 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diag {
    /// 0: No Diagnostic.
    NoDiagnostic,
    /// 1: Control Detection Time Expired.
    ControlDetectionTimeExpired,
    /// 2: Echo Function Failed.
    EchoFunctionFailed,
    /// 3: Neighbor Signaled Session Down.
    NeighborSignaledSessionDown,
    /// 4: Forwarding Plane Reset.
    ForwardingPlaneReset,
    /// 5: Path Down.
    PathDown,
    /// 6: Concatenated Path Down.
    ConcatenatedPathDown,
    /// 7: Administratively Down.
    AdministrativelyDown,
    /// 8: Reverse Concatenated Path Down.
    ReverseConcatenatedPathDown,
    /// 9-31: reserved; received values are kept, not refused.
    Reserved(u8),
}

impl Diag {
    /// The five-bit wire value.
    pub const fn to_wire(self) -> u8 {
        match self {
            Diag::NoDiagnostic => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledSessionDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Reserved(v) => v & 0x1f,
        }
    }

    /// From the five-bit wire value (higher bits ignored).
    pub const fn from_wire(v: u8) -> Diag {
        match v & 0x1f {
            0 => Diag::NoDiagnostic,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            v => Diag::Reserved(v),
        }
    }

    /// The RFC's name, for logs and show output.
    pub const fn name(self) -> &'static str {
        match self {
            Diag::NoDiagnostic => "No Diagnostic",
            Diag::ControlDetectionTimeExpired => "Control Detection Time Expired",
            Diag::EchoFunctionFailed => "Echo Function Failed",
            Diag::NeighborSignaledSessionDown => "Neighbor Signaled Session Down",
            Diag::ForwardingPlaneReset => "Forwarding Plane Reset",
            Diag::PathDown => "Path Down",
            Diag::ConcatenatedPathDown => "Concatenated Path Down",
            Diag::AdministrativelyDown => "Administratively Down",
            Diag::ReverseConcatenatedPathDown => "Reverse Concatenated Path Down",
            Diag::Reserved(_) => "Reserved",
        }
    }
}

/// A read/write view of a BFD control packet over `T`.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without any check; accessors may panic on short input.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer` after [`Packet::check_len`]: no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The buffer holds the mandatory section, and the Length field is at
    /// least the minimum for its A bit and at most the bytes present (RFC
    /// 5880 6.8.6).
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(b[field::LENGTH]);
        let min = if b[field::STA_FLAGS] & flag::A != 0 {
            PACKET_LEN_AUTH_MIN
        } else {
            PACKET_LEN
        };
        if len < min || len > b.len() {
            return Err(Error::Length);
        }
        Ok(())
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (3 bits).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERS_DIAG] >> 5
    }
    /// Diagnostic.
    pub fn diag(&self) -> Diag {
        Diag::from_wire(self.buffer.as_ref()[field::VERS_DIAG])
    }
    /// State field.
    pub fn state(&self) -> State {
        State::from_wire(self.buffer.as_ref()[field::STA_FLAGS] >> 6)
    }
    /// The six flag bits P F C A D M (see [`flag`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::STA_FLAGS] & 0x3f
    }
    /// Detect Mult.
    pub fn detect_mult(&self) -> u8 {
        self.buffer.as_ref()[field::DETECT_MULT]
    }
    /// Length field.
    pub fn length(&self) -> u8 {
        self.buffer.as_ref()[field::LENGTH]
    }
    /// My Discriminator.
    pub fn my_discriminator(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::MY_DISC])
    }
    /// Your Discriminator.
    pub fn your_discriminator(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::YOUR_DISC])
    }
    /// Desired Min TX Interval, microseconds.
    pub fn desired_min_tx_us(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::DESIRED_MIN_TX])
    }
    /// Required Min RX Interval, microseconds.
    pub fn required_min_rx_us(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::REQUIRED_MIN_RX])
    }
    /// Required Min Echo RX Interval, microseconds.
    pub fn required_min_echo_rx_us(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::REQUIRED_MIN_ECHO_RX])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn put32(&mut self, r: std::ops::Range<usize>, v: u32) {
        self.buffer.as_mut()[r].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets version and diagnostic.
    pub fn set_version_diag(&mut self, version: u8, diag: Diag) {
        self.buffer.as_mut()[field::VERS_DIAG] = (version << 5) | diag.to_wire();
    }
    /// Sets state and the six flag bits.
    pub fn set_state_flags(&mut self, state: State, flags: u8) {
        self.buffer.as_mut()[field::STA_FLAGS] = (state.to_wire() << 6) | (flags & 0x3f);
    }
    /// Sets Detect Mult.
    pub fn set_detect_mult(&mut self, v: u8) {
        self.buffer.as_mut()[field::DETECT_MULT] = v;
    }
    /// Sets the Length field.
    pub fn set_length(&mut self, v: u8) {
        self.buffer.as_mut()[field::LENGTH] = v;
    }
    /// Sets My Discriminator.
    pub fn set_my_discriminator(&mut self, v: u32) {
        self.put32(field::MY_DISC, v);
    }
    /// Sets Your Discriminator.
    pub fn set_your_discriminator(&mut self, v: u32) {
        self.put32(field::YOUR_DISC, v);
    }
    /// Sets Desired Min TX Interval (microseconds).
    pub fn set_desired_min_tx_us(&mut self, v: u32) {
        self.put32(field::DESIRED_MIN_TX, v);
    }
    /// Sets Required Min RX Interval (microseconds).
    pub fn set_required_min_rx_us(&mut self, v: u32) {
        self.put32(field::REQUIRED_MIN_RX, v);
    }
    /// Sets Required Min Echo RX Interval (microseconds).
    pub fn set_required_min_echo_rx_us(&mut self, v: u32) {
        self.put32(field::REQUIRED_MIN_ECHO_RX, v);
    }
}

/// A parsed, checked BFD control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Diagnostic.
    pub diag: Diag,
    /// Sender's session state.
    pub state: State,
    /// Poll bit.
    pub poll: bool,
    /// Final bit.
    pub final_: bool,
    /// Control Plane Independent bit.
    pub cpi: bool,
    /// Demand bit.
    pub demand: bool,
    /// Detect Mult (never zero after parse).
    pub detect_mult: u8,
    /// My Discriminator (never zero after parse).
    pub my_discriminator: u32,
    /// Your Discriminator (zero only with state Down or AdminDown).
    pub your_discriminator: u32,
    /// Desired Min TX Interval.
    pub desired_min_tx: Duration,
    /// Required Min RX Interval.
    pub required_min_rx: Duration,
    /// Required Min Echo RX Interval (we run no echo function).
    pub required_min_echo_rx: Duration,
}

impl Repr {
    /// Parses with every reception check of RFC 5880 6.8.6 that needs no
    /// session: version, length, A bit, detect mult, M bit, my
    /// discriminator, your discriminator against the state.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr, Error> {
        p.check_len()?;
        if p.version() != VERSION {
            return Err(Error::Version);
        }
        let flags = p.flags();
        // RFC 5880 6.8.6 checks the A bit after the discriminators; the
        // order only decides which counter a bad packet lands in, and an
        // authenticated packet is a configuration mismatch worth its own.
        if flags & flag::A != 0 {
            return Err(Error::Authentication);
        }
        if p.detect_mult() == 0 {
            return Err(Error::DetectMult);
        }
        if flags & flag::M != 0 {
            return Err(Error::Multipoint);
        }
        if p.my_discriminator() == 0 {
            return Err(Error::MyDiscriminator);
        }
        let state = p.state();
        if p.your_discriminator() == 0 && !matches!(state, State::Down | State::AdminDown) {
            return Err(Error::YourDiscriminator);
        }
        Ok(Repr {
            diag: p.diag(),
            state,
            poll: flags & flag::P != 0,
            final_: flags & flag::F != 0,
            cpi: flags & flag::C != 0,
            demand: flags & flag::D != 0,
            detect_mult: p.detect_mult(),
            my_discriminator: p.my_discriminator(),
            your_discriminator: p.your_discriminator(),
            desired_min_tx: Duration::from_micros(p.desired_min_tx_us().into()),
            required_min_rx: Duration::from_micros(p.required_min_rx_us().into()),
            required_min_echo_rx: Duration::from_micros(p.required_min_echo_rx_us().into()),
        })
    }

    /// Bytes [`Repr::emit`] writes: always 24 (no authentication section).
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the packet into `p`, whose buffer is [`Repr::buffer_len`]
    /// bytes long. Intervals above the 32-bit microsecond range saturate.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        let mut flags = 0;
        for (on, bit) in [
            (self.poll, flag::P),
            (self.final_, flag::F),
            (self.cpi, flag::C),
            (self.demand, flag::D),
        ] {
            if on {
                flags |= bit;
            }
        }
        p.set_version_diag(VERSION, self.diag);
        p.set_state_flags(self.state, flags);
        p.set_detect_mult(self.detect_mult);
        p.set_length(PACKET_LEN as u8);
        p.set_my_discriminator(self.my_discriminator);
        p.set_your_discriminator(self.your_discriminator);
        p.set_desired_min_tx_us(micros(self.desired_min_tx));
        p.set_required_min_rx_us(micros(self.required_min_rx));
        p.set_required_min_echo_rx_us(micros(self.required_min_echo_rx));
    }

    /// The packet as a new 24-byte vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut v[..]));
        v
    }
}

/// A duration in wire microseconds, saturating at `u32::MAX`.
pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Diag 3, state Up, P, detect mult 3, length 24, my 0x11111111, your
    // 0x22222222, tx 1 s, rx 300 ms, echo 0.
    const BYTES: [u8; 24] = [
        0x23, 0xe0, 0x03, 0x18, 0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22, 0x00, 0x0f, 0x42,
        0x40, 0x00, 0x04, 0x93, 0xe0, 0x00, 0x00, 0x00, 0x00,
    ];

    fn repr() -> Repr {
        Repr {
            diag: Diag::NeighborSignaledSessionDown,
            state: State::Up,
            poll: true,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: 0x1111_1111,
            your_discriminator: 0x2222_2222,
            desired_min_tx: Duration::from_secs(1),
            required_min_rx: Duration::from_millis(300),
            required_min_echo_rx: Duration::ZERO,
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&BYTES[..]).unwrap();
        assert_eq!(p.version(), 1);
        assert_eq!(p.diag(), Diag::NeighborSignaledSessionDown);
        assert_eq!(p.state(), State::Up);
        assert_eq!(p.flags(), flag::P);
        assert_eq!(p.detect_mult(), 3);
        assert_eq!(p.length(), 24);
        assert_eq!(p.my_discriminator(), 0x1111_1111);
        assert_eq!(p.your_discriminator(), 0x2222_2222);
        assert_eq!(p.desired_min_tx_us(), 1_000_000);
        assert_eq!(p.required_min_rx_us(), 300_000);
        assert_eq!(p.required_min_echo_rx_us(), 0);
    }

    #[test]
    fn parse_and_emit() {
        let p = Packet::new_checked(&BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), repr());
        assert_eq!(repr().to_bytes(), BYTES);
    }

    fn with(f: impl FnOnce(&mut [u8])) -> Result<Repr, Error> {
        let mut b = BYTES;
        f(&mut b);
        Repr::parse(&Packet::new_unchecked(&b[..]))
    }

    #[test]
    fn reception_checks() {
        assert_eq!(
            Packet::new_checked(&BYTES[..23]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(with(|b| b[0] = 0x43), Err(Error::Version));
        assert_eq!(with(|b| b[3] = 23), Err(Error::Length));
        assert_eq!(with(|b| b[3] = 25), Err(Error::Length));
        // A bit with a length that would fit an auth section: still refused.
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(
                &[&BYTES[..], &[0, 0, 0]].concat()[..]
            )),
            Ok(repr()),
            "trailing bytes beyond Length are ignored"
        );
        let mut long = [&BYTES[..], &[1, 2, 0, 0]].concat();
        long[1] |= flag::A;
        long[3] = 28;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&long[..])),
            Err(Error::Authentication)
        );
        assert_eq!(with(|b| b[1] |= flag::A), Err(Error::Length));
        assert_eq!(with(|b| b[2] = 0), Err(Error::DetectMult));
        assert_eq!(with(|b| b[1] |= flag::M), Err(Error::Multipoint));
        assert_eq!(with(|b| b[4..8].fill(0)), Err(Error::MyDiscriminator));
        assert_eq!(with(|b| b[8..12].fill(0)), Err(Error::YourDiscriminator));
        // Init with zero your discriminator: refused; Down and AdminDown: fine.
        assert_eq!(
            with(|b| {
                b[1] = 0x80;
                b[8..12].fill(0)
            }),
            Err(Error::YourDiscriminator)
        );
        for sta in [0x00, 0x40] {
            let r = with(|b| {
                b[1] = sta;
                b[8..12].fill(0)
            })
            .unwrap();
            assert_eq!(r.your_discriminator, 0);
        }
    }
}
