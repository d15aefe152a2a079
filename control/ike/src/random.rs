//! The randomness the core draws on, injected: production uses ring's
//! [`SystemRandom`]; tests a [`SeededRandom`], so that two runs of an
//! exchange send the same bytes (SPIs, nonces, IVs, DH private keys,
//! cookie secret, timer jitter).

use std::sync::Mutex;

use ring::{
    digest,
    rand::{SecureRandom, SystemRandom},
};

/// A source of random bytes for the IKE core.
pub trait Random: Send + Sync {
    /// Fill `dest` with random bytes; `Err` when the source fails.
    fn fill(&self, dest: &mut [u8]) -> Result<(), ring::error::Unspecified>;

    /// The generator for the DH groups ring implements (X25519, P-256,
    /// P-384): ring's key generation takes only its own, sealed
    /// [`SecureRandom`], so those private keys cannot come from
    /// [`Random::fill`]. ECP-521 and MODP-2048 keys do.
    fn ring(&self) -> &dyn SecureRandom;
}

impl Random for SystemRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), ring::error::Unspecified> {
        SecureRandom::fill(self, dest)
    }

    fn ring(&self) -> &dyn SecureRandom {
        self
    }
}

/// A deterministic source for tests: SHA-256 of the seed and a block
/// counter, in order. Not for production: anyone who knows the seed
/// knows every key. Keys of the DH groups ring implements still come from
/// the system ([`Random::ring`]): use ECP-521 or MODP-2048 for byte-exact
/// runs.
pub struct SeededRandom {
    seed: Vec<u8>,
    /// Blocks used so far, and the unused rest of the last one.
    state: Mutex<(u64, Vec<u8>)>,
    system: SystemRandom,
}

impl SeededRandom {
    /// A source whose output is a function of `seed` alone.
    pub fn new(seed: &[u8]) -> SeededRandom {
        SeededRandom {
            seed: seed.to_vec(),
            state: Mutex::new((0, Vec::new())),
            system: SystemRandom::new(),
        }
    }
}

impl Random for SeededRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), ring::error::Unspecified> {
        let mut st = self.state.lock().map_err(|_| ring::error::Unspecified)?;
        let (counter, rest) = &mut *st;
        for b in dest.iter_mut() {
            if rest.is_empty() {
                let mut ctx = digest::Context::new(&digest::SHA256);
                ctx.update(&self.seed);
                ctx.update(&counter.to_be_bytes());
                *counter += 1;
                *rest = ctx.finish().as_ref().to_vec();
                rest.reverse();
            }
            *b = rest.pop().unwrap_or(0);
        }
        Ok(())
    }

    fn ring(&self) -> &dyn SecureRandom {
        &self.system
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_a_function_of_the_seed_and_the_split_of_reads_does_not_matter() {
        let (a, b) = (SeededRandom::new(b"x"), SeededRandom::new(b"x"));
        let mut one = [0u8; 70];
        a.fill(&mut one).unwrap();
        let mut two = [0u8; 70];
        b.fill(&mut two[..5]).unwrap();
        b.fill(&mut two[5..40]).unwrap();
        b.fill(&mut two[40..]).unwrap();
        assert_eq!(one, two);
        // The first block is SHA-256(seed || 0u64).
        let d = digest::digest(&digest::SHA256, b"x\0\0\0\0\0\0\0\0");
        assert_eq!(&one[..32], d.as_ref());
        let mut other = [0u8; 70];
        SeededRandom::new(b"y").fill(&mut other).unwrap();
        assert_ne!(one, other);
    }
}
