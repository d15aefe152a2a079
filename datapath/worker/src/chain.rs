//! Gateway mode: reassembly of frames the inside AF_XDP socket receives
//! in several UMEM frames (bound with `XDP_USE_SG`, each descriptor but
//! the last of a packet marked `XDP_PKT_CONTD`). On veth with the inside
//! program in generic mode, a host's TCP GSO super-packet (up to 64 KB)
//! arrives whole this way; the worker copies its pieces into one buffer
//! and cuts it into segments (`offload::segment`).
//!
//! Bounds: a chain longer than [`MAX_CHAIN`] is discarded (its remaining
//! pieces skipped up to its end) and reported once, as
//! [`Step::TooLong`]; a chain whose end never comes (the receive ring
//! found empty while one is open: the kernel publishes a packet's
//! descriptors together, so this is never a batch boundary) is
//! discarded by [`Chain::abandon`].

/// Longest frame reassembled: an Ethernet header and the largest IP
/// packet (a 64 KB GSO super-packet).
pub const MAX_CHAIN: usize = 14 + 65535;

/// What one piece did to the chain.
#[derive(Debug)]
pub enum Step<'a> {
    /// More pieces follow; nothing to do yet.
    More,
    /// The chain ended: the whole frame (writable in place).
    Whole(&'a mut [u8]),
    /// The chain ended and was longer than [`MAX_CHAIN`]: discarded.
    TooLong,
}

/// One frame being put together from its pieces.
pub struct Chain {
    buf: Box<[u8]>,
    len: usize,
    /// A piece with `continues` came and its chain has not ended.
    open: bool,
    /// The open chain went past [`MAX_CHAIN`]; its pieces are skipped.
    overflow: bool,
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl Chain {
    /// An empty chain with room for [`MAX_CHAIN`] bytes (allocated once).
    pub fn new() -> Self {
        Chain {
            buf: vec![0u8; MAX_CHAIN].into_boxed_slice(),
            len: 0,
            open: false,
            overflow: false,
        }
    }

    /// Whether a chain is open (its last piece not yet seen).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Add the piece `piece`; `continues` says whether more pieces of the
    /// same frame follow (`XDP_PKT_CONTD`). A piece without it ends the
    /// chain (a single piece is a chain of one, copied like the others).
    pub fn push(&mut self, piece: &[u8], continues: bool) -> Step<'_> {
        if !self.overflow {
            match self.buf.get_mut(self.len..self.len + piece.len()) {
                Some(dst) => {
                    dst.copy_from_slice(piece);
                    self.len += piece.len();
                }
                None => self.overflow = true,
            }
        }
        if continues {
            self.open = true;
            return Step::More;
        }
        let (len, overflow) = (self.len, self.overflow);
        self.reset();
        if overflow {
            Step::TooLong
        } else {
            Step::Whole(&mut self.buf[..len])
        }
    }

    /// The receive ring is empty while a chain is open: its end will not
    /// come. Discards it; true when there was one (one drop to count).
    pub fn abandon(&mut self) -> bool {
        let was = self.open;
        self.reset();
        was
    }

    fn reset(&mut self) {
        self.len = 0;
        self.open = false;
        self.overflow = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a step gave: `Ok(None)` for More, the frame, or `Err` for TooLong.
    fn out(step: Step<'_>) -> Result<Option<Vec<u8>>, ()> {
        match step {
            Step::More => Ok(None),
            Step::Whole(f) => Ok(Some(f.to_vec())),
            Step::TooLong => Err(()),
        }
    }

    fn pieces(total: usize, piece: usize) -> Vec<Vec<u8>> {
        let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
        data.chunks(piece).map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn pieces_become_the_frame_in_order() {
        let mut c = Chain::new();
        let p = pieces(65_000, 3840);
        let want: Vec<u8> = p.concat();
        for (i, piece) in p.iter().enumerate() {
            let last = i + 1 == p.len();
            match c.push(piece, !last) {
                Step::More => assert!(!last, "piece {i}"),
                Step::Whole(f) => {
                    assert!(last);
                    assert_eq!(f, &want[..]);
                }
                Step::TooLong => panic!("65000 bytes fit"),
            }
        }
        assert!(!c.is_open());
        // The next chain starts empty.
        assert_eq!(out(c.push(b"abc", false)), Ok(Some(b"abc".to_vec())));
    }

    #[test]
    fn exactly_the_limit_fits_one_byte_more_is_too_long_once() {
        let mut c = Chain::new();
        let p = pieces(MAX_CHAIN, 3840);
        let n = p.len();
        for (i, piece) in p.iter().enumerate() {
            let r = c.push(piece, i + 1 < n);
            if i + 1 == n {
                assert!(matches!(r, Step::Whole(f) if f.len() == MAX_CHAIN));
            }
        }
        let p = pieces(MAX_CHAIN + 1, 3840);
        let n = p.len();
        let mut too_long = 0;
        for (i, piece) in p.iter().enumerate() {
            match c.push(piece, i + 1 < n) {
                Step::More => {}
                Step::TooLong => too_long += 1,
                Step::Whole(_) => panic!("a chain over the limit came out whole"),
            }
        }
        assert_eq!(too_long, 1, "counted once, at the chain's end");
        // A much longer chain (pieces keep coming) is still one drop, and
        // what follows is intact.
        let mut too_long = 0;
        for i in 0..100 {
            if out(c.push(&[0u8; 3840], i < 99)).is_err() {
                too_long += 1;
            }
        }
        assert_eq!(too_long, 1);
        assert_eq!(out(c.push(b"next", false)), Ok(Some(b"next".to_vec())));
    }

    #[test]
    fn a_chain_without_its_end_is_abandoned_once() {
        let mut c = Chain::new();
        assert!(!c.abandon(), "nothing open: nothing to count");
        assert_eq!(out(c.push(&[1u8; 100], true)), Ok(None));
        assert!(c.is_open());
        assert!(c.abandon());
        assert!(!c.is_open());
        assert!(!c.abandon());
        // Its pieces do not leak into the next frame.
        assert_eq!(out(c.push(b"xy", true)), Ok(None));
        assert_eq!(out(c.push(b"z", false)), Ok(Some(b"xyz".to_vec())));
    }
}
