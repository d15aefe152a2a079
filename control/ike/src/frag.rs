//! IKE fragmentation (RFC 7383): an encrypted message too long for the
//! path goes as several messages, each with one Encrypted Fragment payload
//! (SKF) that is encrypted and authenticated on its own; the receiver
//! checks each fragment's integrity before keeping it and reassembles the
//! inner payload chain once all have come.
//!
//! Used only when both sides announced IKEV2_FRAGMENTATION_SUPPORTED in
//! IKE_SA_INIT, and only for encrypted messages longer than the tunnel's
//! `fragment_size` allows ([`max_message_len`]). Reassembly is bounded:
//! at most [`MAX_FRAGMENTS`] fragments and [`MAX_BYTES`] of plaintext a
//! message, [`MAX_MESSAGES`] messages at a time per IKE SA, each given up
//! [`REASSEMBLY_TIME`] after its first fragment, and [`MAX_TOTAL_BYTES`]
//! held by all IKE SAs together (the core checks that one).

use std::time::{Duration, Instant};

use crate::{
    Encr,
    crypto::{self, CryptoError, IkeKeys, Secret},
    random::Random,
    wire::{HEADER_LEN, Header, HeaderRepr, payload_type},
};

/// The longest IKE message we send unfragmented when fragmentation is
/// negotiated: a 1280-byte IPv6 minimum MTU less the IPv6 and UDP headers
/// and the NAT-T port's 4-byte non-ESP marker (RFC 7383 2.5.1).
pub const MAX_DATAGRAM: usize = 1280 - 40 - 8 - 4;
/// The default `fragment_size`: the largest IP datagram a fragment
/// travels in (strongSwan's `charon.fragment_size` default), headers
/// included.
pub const DEFAULT_FRAGMENT_SIZE: usize = 1280;
/// The smallest `fragment_size` accepted: below it a fragment's
/// overhead leaves too little room (and [`MAX_FRAGMENTS`] too little
/// message).
pub const MIN_FRAGMENT_SIZE: usize = 256;
/// The largest `fragment_size` accepted (an IPv4 datagram's limit).
pub const MAX_FRAGMENT_SIZE: usize = 65535;
/// Plaintext bytes all IKE SAs together may hold in reassembly (a
/// peer past IKE_SA_INIT, not yet authenticated, can send fragments
/// that pass their integrity check).
pub const MAX_TOTAL_BYTES: usize = 1024 * 1024;
/// Most fragments a message may have.
pub const MAX_FRAGMENTS: u16 = 32;
/// Most plaintext bytes a reassembled message may have.
pub const MAX_BYTES: usize = 64 * 1024;
/// Messages being reassembled at a time, per IKE SA (a request of the
/// peer and the response to ours).
pub const MAX_MESSAGES: usize = 2;
/// A message whose fragments have not all come by this time after the
/// first is given up (the peer retransmits all of them).
pub const REASSEMBLY_TIME: Duration = Duration::from_secs(30);

/// The fragment header of a received message: (Fragment Number, Total
/// Fragments), if its only payload is SKF. Unauthenticated: for choosing
/// what to do before the integrity check (RFC 7383 2.6.1: only fragment 1
/// of a retransmitted request makes us resend our response).
pub fn fragment_fields(msg: &[u8]) -> Option<(u16, u16)> {
    let h = Header::new_checked(msg).ok()?;
    if h.next_payload() != payload_type::SKF {
        return None;
    }
    let f = msg.get(HEADER_LEN + 4..HEADER_LEN + 8)?;
    Some((
        u16::from_be_bytes([f[0], f[1]]),
        u16::from_be_bytes([f[2], f[3]]),
    ))
}

/// The longest IKE message that fits in one IP datagram of
/// `fragment_size` bytes to `remote`: less the IP header (20 or 40
/// bytes), UDP's 8 and, off port 500 (NAT-T), the 4-byte non-ESP marker
/// (as strongSwan reckons it, RFC 7383 2.5.1).
pub fn max_message_len(fragment_size: usize, remote: std::net::IpAddr, nat_t: bool) -> usize {
    let ip = if remote.is_ipv4() { 20 } else { 40 };
    fragment_size.saturating_sub(ip + 8 + if nat_t { 4 } else { 0 })
}

/// The length of the whole message (SK payload) that
/// [`IkeKeys::seal`] makes of `inner_len` bytes of payloads.
pub fn sealed_len(keys: &IkeKeys, inner_len: usize) -> usize {
    match keys.prop.encr {
        Encr::AesGcm16_128 | Encr::AesGcm16_256 => HEADER_LEN + 4 + 8 + inner_len + 1 + 16,
        _ => {
            let icv = keys.prop.integ.map_or(0, |i| i.icv_len());
            HEADER_LEN + 4 + 16 + (inner_len + 1).div_ceil(16) * 16 + icv
        }
    }
}

/// Seal an inner payload chain (starting with type `first_inner`) as
/// Encrypted Fragment messages of at most `max_len` bytes each, with
/// header `h` (RFC 7383 2.5). `from_initiator` picks the keys.
pub fn seal_fragments(
    keys: &IkeKeys,
    from_initiator: bool,
    h: &HeaderRepr,
    first_inner: u8,
    inner: &[u8],
    max_len: usize,
    rng: &dyn Random,
) -> Result<Vec<Vec<u8>>, CryptoError> {
    let (ek, ak) = if from_initiator {
        (&keys.sk_ei, &keys.sk_ai)
    } else {
        (&keys.sk_er, &keys.sk_ar)
    };
    let fixed = HEADER_LEN + 8;
    let chunk = match keys.prop.encr {
        Encr::AesGcm16_128 | Encr::AesGcm16_256 => max_len.saturating_sub(fixed + 8 + 16 + 1),
        _ => {
            let icv = keys.prop.integ.map_or(0, |i| i.icv_len());
            // Whole blocks, the last holding at least the Pad Length byte.
            (max_len.saturating_sub(fixed + 16 + icv) / 16 * 16).saturating_sub(1)
        }
    };
    if chunk < 64 {
        return Err(CryptoError::Integrity);
    }
    let pieces: Vec<&[u8]> = if inner.is_empty() {
        vec![&[][..]]
    } else {
        inner.chunks(chunk).collect()
    };
    let total = u16::try_from(pieces.len())
        .ok()
        .filter(|t| *t <= MAX_FRAGMENTS)
        .ok_or(CryptoError::Integrity)?;
    let mut out = Vec::with_capacity(pieces.len());
    for (n, piece) in pieces.iter().enumerate() {
        let num = n as u16 + 1;
        // RFC 7383 2.5: Next Payload is the first inner payload's type in
        // fragment 1, zero in the others.
        let next = if num == 1 { first_inner } else { 0 };
        out.push(crypto::seal_payload(
            keys.prop.encr,
            keys.prop.integ,
            ek,
            ak,
            h,
            next,
            piece,
            Some((num, total)),
            rng,
        )?);
    }
    Ok(out)
}

/// Why a fragment was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragError {
    /// Not a well-formed Encrypted Fragment message.
    Malformed,
    /// It failed its integrity check.
    Integrity,
    /// More fragments or bytes than the bounds allow.
    TooBig,
    /// Fewer total fragments than the message being reassembled (RFC
    /// 7383 2.6.1: such fragments are dropped), or a duplicate.
    Ignored,
}

impl std::fmt::Display for FragError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FragError::Malformed => "malformed IKE fragment",
            FragError::Integrity => "IKE fragment failed its integrity check",
            FragError::TooBig => "IKE fragments beyond the reassembly bounds",
            FragError::Ignored => "duplicate or superseded IKE fragment",
        })
    }
}

/// What a fragment completed.
#[derive(Debug)]
pub enum FragOutcome {
    /// Kept; more are to come.
    Incomplete,
    /// The message is whole: its inner payload chain.
    Complete {
        /// The first inner payload's type.
        first_inner: u8,
        /// The payload chain.
        plain: Secret,
    },
}

struct Partial {
    response: bool,
    msg_id: u32,
    total: u16,
    first_inner: Option<u8>,
    parts: Vec<Option<Secret>>,
    bytes: usize,
    started: Instant,
}

/// The messages of one IKE SA being reassembled.
#[derive(Default)]
pub struct Reassembler {
    partial: Vec<Partial>,
}

impl Reassembler {
    /// Messages in reassembly (for footprints).
    pub fn len(&self) -> usize {
        self.partial.len()
    }

    /// Plaintext bytes held.
    pub fn bytes(&self) -> usize {
        self.partial.iter().map(|p| p.bytes).sum()
    }

    /// Whether nothing is being reassembled.
    pub fn is_empty(&self) -> bool {
        self.partial.is_empty()
    }

    /// Give up messages older than [`REASSEMBLY_TIME`].
    pub fn expire(&mut self, now: Instant) {
        self.partial
            .retain(|p| now.saturating_duration_since(p.started) < REASSEMBLY_TIME);
    }

    /// Take one received Encrypted Fragment message of this SA (whose
    /// header the caller has matched to the SA and its message ids),
    /// sent by the initiator or not.
    pub fn accept(
        &mut self,
        now: Instant,
        keys: &IkeKeys,
        from_initiator: bool,
        msg: &[u8],
    ) -> Result<FragOutcome, FragError> {
        self.expire(now);
        let h = Header::new_checked(msg).map_err(|_| FragError::Malformed)?;
        if h.next_payload() != payload_type::SKF {
            return Err(FragError::Malformed);
        }
        let g = msg
            .get(HEADER_LEN..HEADER_LEN + 8)
            .ok_or(FragError::Malformed)?;
        let next = g[0];
        let plen = usize::from(u16::from_be_bytes([g[2], g[3]]));
        let num = u16::from_be_bytes([g[4], g[5]]);
        let total = u16::from_be_bytes([g[6], g[7]]);
        // SKF is the only payload (RFC 7383 2.5).
        if plen != msg.len() - HEADER_LEN || num == 0 || num > total {
            return Err(FragError::Malformed);
        }
        if total > MAX_FRAGMENTS {
            return Err(FragError::TooBig);
        }
        let response = h.flags() & crate::wire::FLAG_RESPONSE != 0;
        let msg_id = h.msg_id();
        // Before any state: the integrity check.
        let (ek, ak) = if from_initiator {
            (&keys.sk_ei, &keys.sk_ai)
        } else {
            (&keys.sk_er, &keys.sk_ar)
        };
        let plain = crypto::open_at(keys.prop.encr, keys.prop.integ, ek, ak, msg, HEADER_LEN + 8)
            .map_err(|_| FragError::Integrity)?;
        let slot = self
            .partial
            .iter()
            .position(|p| p.response == response && p.msg_id == msg_id);
        let k = match slot {
            Some(k) if total < self.partial[k].total => return Err(FragError::Ignored),
            Some(k) if total == self.partial[k].total => k,
            other => {
                // New, or more fragments than before (the sender went to
                // a smaller size): start over.
                if let Some(k) = other {
                    self.partial.remove(k);
                }
                // A newer message of the same direction replaces an older one.
                self.partial.retain(|p| p.response != response);
                if self.partial.len() >= MAX_MESSAGES {
                    self.partial.remove(0);
                }
                self.partial.push(Partial {
                    response,
                    msg_id,
                    total,
                    first_inner: None,
                    parts: vec![None; usize::from(total)],
                    bytes: 0,
                    started: now,
                });
                self.partial.len() - 1
            }
        };
        let p = &mut self.partial[k];
        let at = usize::from(num - 1);
        if p.parts[at].is_some() {
            return Err(FragError::Ignored);
        }
        if p.bytes + plain.len() > MAX_BYTES {
            self.partial.remove(k);
            return Err(FragError::TooBig);
        }
        p.bytes += plain.len();
        if num == 1 {
            p.first_inner = Some(next);
        }
        p.parts[at] = Some(plain);
        if p.parts.iter().any(Option::is_none) {
            return Ok(FragOutcome::Incomplete);
        }
        let p = self.partial.remove(k);
        let mut whole = zeroize::Zeroizing::new(Vec::with_capacity(p.bytes));
        for part in p.parts.into_iter().flatten() {
            whole.extend_from_slice(&part);
        }
        Ok(FragOutcome::Complete {
            first_inner: p.first_inner.unwrap_or(0),
            plain: whole,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        IkeProposal, Integ, Prf,
        wire::{self, FLAG_INITIATOR, Message, Payload},
    };
    use ring::rand::SystemRandom;

    fn keys(encr: Encr, integ: Option<Integ>) -> IkeKeys {
        let prop = IkeProposal {
            encr,
            integ,
            prf: Prf::HmacSha256,
            dh: crate::DhGroup::Curve25519,
        };
        IkeKeys::derive(&prop, &[7; 32], &[1; 32], &[2; 32], 11, 22)
    }

    fn header() -> HeaderRepr {
        HeaderRepr {
            spi_i: 11,
            spi_r: 22,
            exchange: wire::IKE_AUTH,
            flags: FLAG_INITIATOR,
            msg_id: 1,
        }
    }

    /// A payload chain of about `n` bytes (a CERT, as in IKE_AUTH).
    fn inner(n: usize) -> (u8, Vec<u8>) {
        let p = vec![
            Payload::IdI(wire::id_type::FQDN, b"moon.example".to_vec()),
            Payload::Cert(4, (0..n).map(|i| i as u8).collect()),
            Payload::Auth(14, vec![0x55; 80]),
        ];
        let mut out = Vec::new();
        let first = wire::emit_payloads(&p, &mut out);
        (first, out)
    }

    /// One Encrypted Fragment message with these fields, from the initiator.
    fn skf(k: &IkeKeys, first: u8, data: &[u8], num: u16, total: u16) -> Vec<u8> {
        crypto::seal_payload(
            k.prop.encr,
            k.prop.integ,
            &k.sk_ei,
            &k.sk_ai,
            &header(),
            first,
            data,
            Some((num, total)),
            &SystemRandom::new(),
        )
        .unwrap()
    }

    fn reassemble(
        r: &mut Reassembler,
        k: &IkeKeys,
        frags: &[Vec<u8>],
        order: &[usize],
    ) -> Option<(u8, Vec<u8>)> {
        let now = Instant::now();
        let mut done = None;
        for &i in order {
            match r.accept(now, k, true, &frags[i]) {
                Ok(FragOutcome::Complete { first_inner, plain }) => {
                    assert!(done.is_none(), "completed twice");
                    done = Some((first_inner, plain.to_vec()));
                }
                Ok(FragOutcome::Incomplete) | Err(FragError::Ignored) => {}
                Err(e) => panic!("fragment {i}: {e}"),
            }
        }
        done
    }

    #[test]
    fn round_trip_gcm_and_cbc_in_and_out_of_order() {
        let rng = SystemRandom::new();
        for k in [
            keys(Encr::AesGcm16_256, None),
            keys(Encr::AesCbc256, Some(Integ::HmacSha256_128)),
            keys(Encr::AesCbc128, Some(Integ::HmacSha1_96)),
        ] {
            let (first, plain) = inner(3000);
            let frags =
                seal_fragments(&k, true, &header(), first, &plain, MAX_DATAGRAM, &rng).unwrap();
            assert_eq!(frags.len(), 3, "{:?}", k.prop);
            for (n, f) in frags.iter().enumerate() {
                assert!(f.len() <= MAX_DATAGRAM, "{} > {MAX_DATAGRAM}", f.len());
                assert_eq!(fragment_fields(f), Some((n as u16 + 1, 3)));
                // Each is a well-formed IKE message with one unknown-to-
                // the-parser payload (SKF), as a peer without RFC 7383 sees it.
                let m = Message::parse(f).unwrap();
                assert_eq!(m.payloads, vec![Payload::Skipped(payload_type::SKF)]);
            }
            for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0]] {
                let mut r = Reassembler::default();
                let (f, p) = reassemble(&mut r, &k, &frags, &order).unwrap();
                assert_eq!((f, p), (first, plain.clone()));
                assert!(r.is_empty());
            }
            // Duplicates are ignored and do not complete twice.
            let mut r = Reassembler::default();
            let got = reassemble(&mut r, &k, &frags, &[0, 0, 2, 2, 1, 1]).unwrap();
            assert_eq!(got.1, plain);
        }
    }

    #[test]
    fn sealed_len_is_the_length_seal_makes() {
        let rng = SystemRandom::new();
        for k in [
            keys(Encr::AesGcm16_256, None),
            keys(Encr::AesCbc256, Some(Integ::HmacSha256_128)),
            keys(Encr::AesCbc128, Some(Integ::HmacSha1_96)),
        ] {
            for n in [0, 1, 14, 15, 16, 17, 100, 1500] {
                let whole = k.seal(true, &header(), 0, &vec![7; n], &rng).unwrap();
                assert_eq!(sealed_len(&k, n), whole.len(), "{:?} {n}", k.prop);
            }
        }
        let v4: std::net::IpAddr = "198.51.100.1".parse().unwrap();
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(max_message_len(1280, v4, false), 1252);
        assert_eq!(max_message_len(1280, v6, true), MAX_DATAGRAM);
    }

    #[test]
    fn each_fragment_is_authenticated() {
        let rng = SystemRandom::new();
        let k = keys(Encr::AesGcm16_128, None);
        let (first, plain) = inner(2500);
        let mut frags =
            seal_fragments(&k, true, &header(), first, &plain, MAX_DATAGRAM, &rng).unwrap();
        let mut r = Reassembler::default();
        let now = Instant::now();
        // The fragment number is authenticated: moving fragment 2 to 3 fails.
        let mut moved = frags[1].clone();
        moved[HEADER_LEN + 5] = 3;
        assert_eq!(
            r.accept(now, &k, true, &moved).err(),
            Some(FragError::Integrity)
        );
        // A flipped byte of the ciphertext fails; nothing is kept.
        let last = frags[2].len() - 20;
        frags[2][last] ^= 1;
        assert_eq!(
            r.accept(now, &k, true, &frags[2]).err(),
            Some(FragError::Integrity)
        );
        assert!(r.is_empty());
        // The wrong direction's keys fail.
        assert_eq!(
            r.accept(now, &k, false, &frags[0]).err(),
            Some(FragError::Integrity)
        );
        // A non-fragment is malformed here.
        let whole = k.seal(true, &header(), first, &plain, &rng).unwrap();
        assert_eq!(
            r.accept(now, &k, true, &whole).err(),
            Some(FragError::Malformed)
        );
        assert_eq!(fragment_fields(&whole), None);
    }

    #[test]
    fn bounds_on_count_bytes_and_time() {
        let rng = SystemRandom::new();
        let k = keys(Encr::AesGcm16_256, None);
        // Too many fragments are refused when sealing and when receiving.
        let (first, big) = inner(MAX_BYTES);
        assert!(seal_fragments(&k, true, &header(), first, &big, 600, &rng).is_err());
        let h = header();
        let f = skf(&k, first, b"x", 1, MAX_FRAGMENTS + 1);
        let mut r = Reassembler::default();
        let now = Instant::now();
        assert_eq!(r.accept(now, &k, true, &f).err(), Some(FragError::TooBig));
        // Fragment number 0 or above the total: malformed.
        for (n, t) in [(0u16, 2u16), (3, 2)] {
            let f = skf(&k, first, b"x", n, t);
            assert_eq!(
                r.accept(now, &k, true, &f).err(),
                Some(FragError::Malformed)
            );
        }
        // More bytes than MAX_BYTES in total: given up, state dropped.
        let chunk = vec![0u8; 60_000];
        let mk = |n| skf(&k, first, &chunk, n, 3);
        assert!(matches!(
            r.accept(now, &k, true, &mk(1)),
            Ok(FragOutcome::Incomplete)
        ));
        assert_eq!(
            r.accept(now, &k, true, &mk(2)).err(),
            Some(FragError::TooBig)
        );
        assert!(r.is_empty());
        // An incomplete message is given up after REASSEMBLY_TIME.
        let (first, plain) = inner(3000);
        let frags = seal_fragments(&k, true, &h, first, &plain, MAX_DATAGRAM, &rng).unwrap();
        assert!(matches!(
            r.accept(now, &k, true, &frags[0]),
            Ok(FragOutcome::Incomplete)
        ));
        assert_eq!(r.len(), 1);
        r.expire(now + REASSEMBLY_TIME);
        assert!(r.is_empty());
        // ...so the rest alone does not complete it.
        let later = now + REASSEMBLY_TIME;
        for f in &frags[1..] {
            assert!(matches!(
                r.accept(later, &k, true, f),
                Ok(FragOutcome::Incomplete)
            ));
        }
    }

    #[test]
    fn resent_with_more_fragments_starts_over() {
        let rng = SystemRandom::new();
        let k = keys(Encr::AesGcm16_256, None);
        let h = header();
        let (first, plain) = inner(3000);
        let big = seal_fragments(&k, true, &h, first, &plain, MAX_DATAGRAM, &rng).unwrap();
        let small = seal_fragments(&k, true, &h, first, &plain, 700, &rng).unwrap();
        assert!(small.len() > big.len());
        let mut r = Reassembler::default();
        let now = Instant::now();
        assert!(matches!(
            r.accept(now, &k, true, &big[0]),
            Ok(FragOutcome::Incomplete)
        ));
        // Fragments of the smaller size supersede; the larger ones are then ignored.
        let order: Vec<usize> = (0..small.len()).collect();
        let mut done = None;
        for &i in &order {
            if i == 1 {
                assert_eq!(
                    r.accept(now, &k, true, &big[1]).err(),
                    Some(FragError::Ignored)
                );
            }
            if let Ok(FragOutcome::Complete { plain, .. }) = r.accept(now, &k, true, &small[i]) {
                done = Some(plain.to_vec());
            }
        }
        assert_eq!(done.unwrap(), plain);
    }
}
