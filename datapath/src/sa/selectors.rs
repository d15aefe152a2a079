//! Traffic selectors: the prefixes an SA carries, and the check of a
//! packet's addresses against them.
use std::net::IpAddr;
use std::sync::Arc;

/// An IP prefix: an address and a prefix length (a traffic selector range
/// as configured, e.g. `203.0.113.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// `addr/len`, or `None` if `len` exceeds the address width. Host bits
    /// below the prefix are ignored when matching.
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Prefix { addr, len })
    }

    /// The address as given.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether the prefix covers every address of its family (`/0`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Does the prefix contain `a`? Never across address families.
    #[inline]
    pub fn contains(&self, a: IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(p), IpAddr::V4(x)) => {
                let m = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & m == u32::from(x) & m
            }
            (IpAddr::V6(p), IpAddr::V6(x)) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(p) & m == u128::from(x) & m
            }
            _ => false,
        }
    }
}

/// A set of addresses for one side of a traffic selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AddrSet {
    /// Every address (no check).
    #[default]
    Any,
    /// The union of these prefixes (an address of another family, or one
    /// outside all of them, is not in the set).
    Prefixes(Box<[Prefix]>),
}

impl AddrSet {
    /// The set of these prefixes; an empty list means [`AddrSet::Any`].
    pub fn from_prefixes(prefixes: impl IntoIterator<Item = Prefix>) -> AddrSet {
        let v: Vec<Prefix> = prefixes.into_iter().collect();
        if v.is_empty() {
            AddrSet::Any
        } else {
            AddrSet::Prefixes(v.into())
        }
    }

    /// Is `a` in the set?
    #[inline]
    pub fn contains(&self, a: IpAddr) -> bool {
        match self {
            AddrSet::Any => true,
            // Linear: a tunnel has a handful of prefixes.
            AddrSet::Prefixes(p) => p.iter().any(|p| p.contains(a)),
        }
    }
}

/// Traffic selectors of an inbound SA (RFC 4301 4.4.1, 5.2): the inner
/// source address of a decrypted packet must be in `remote`, its inner
/// destination in `local`. IKE sets them from the negotiated TS; manual
/// tunnels from `remote_subnets` / `local_subnets`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selectors {
    /// Allowed inner destinations (our side).
    pub local: AddrSet,
    /// Allowed inner sources (the peer's side).
    pub remote: AddrSet,
}

impl Selectors {
    /// Selectors that allow every packet.
    pub const ANY: Selectors = Selectors {
        local: AddrSet::Any,
        remote: AddrSet::Any,
    };

    /// Shared "allow everything" selectors.
    pub fn any() -> Arc<Selectors> {
        Arc::new(Selectors::ANY)
    }

    /// True when nothing is checked (the packet path skips the inner parse).
    #[inline]
    pub fn is_any(&self) -> bool {
        matches!((&self.local, &self.remote), (AddrSet::Any, AddrSet::Any))
    }

    /// Does a decrypted packet from `src` to `dst` match?
    #[inline]
    pub fn allows(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.remote.contains(src) && self.local.contains(dst)
    }
}
