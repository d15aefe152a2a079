//! The SA table: control edits it, workers read immutable snapshots.
//!
//! Publishing: control applies a batch of [`SaChange`]s to its copy and
//! swaps the new [`SaSnapshot`] into an [`ArcSwap`] ([`SharedSnapshot`]).
//! Workers load the snapshot once per batch and never lock; an SA a worker
//! is using stays alive while any snapshot (or the worker's guard) holds its
//! `Arc`. Cost of a change: see `pmap`: a snapshot copy is 8 KiB of pointers
//! plus, per touched leaf, one 1024-pointer node and the leaf's few rows;
//! with 1M SAs a single change does not copy the table.
//!
//! Hot/cold split (VPP): the snapshot holds only what the packet path needs
//! ([`InboundSa`], [`OutboundSa`]: cipher context, SPI, flags, tunnel, owner).
//! Names and raw key material ([`SaCold`]) stay in the control-side
//! [`SaTable`]. Replay windows and per-SA counters are not in the snapshot at
//! all: they are worker-local (`worker`), keyed by the stable [`SaId`].

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::crypto::{Cipher, EspCipher, KeyError, KeyMaterial};
use crate::pmap::{PMap, Row};
use crate::replay::{BadWindowSize, validate_window};
use crate::wire::ethernet::MacAddr;

mod selectors;
pub use selectors::{AddrSet, Prefix, Selectors};

/// How long a deleted inbound SPI is remembered, so its packets count as
/// `IN_V?_PKT_HIT_INVALID_SA` (1/9) instead of `SA_NOT_FOUND_SPI` (4/12).
/// Our choice (IOS does not document its hold time): two minutes, a little
/// over one invalid-SPI log interval.
pub const RECENTLY_DELETED_TTL: Duration = Duration::from_secs(120);
/// Most deleted SPIs remembered at once; the oldest are forgotten first.
pub const RECENTLY_DELETED_MAX: usize = 1 << 16;

/// Stable identity of an SA: a slot index reused after deletion, and a
/// generation that changes on every reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SaId {
    /// Dense index (worker-local state is an array indexed by it).
    pub index: u32,
    /// Generation of this use of the index (never 0).
    pub generation: u32,
}

/// A peer's outer address and UDP source port (0 for plain ESP), used to
/// qualify inbound SAs that share one SPI (SD-WAN: every peer of a TLOC
/// encrypts to the same SPI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// Peer's outer source address.
    pub addr: IpAddr,
    /// Peer's UDP source port, 0 for ESP not in UDP.
    pub port: u16,
}

/// Hot part of an inbound SA: what decap needs.
///
/// Laid out as VPP's `ipsec_sa_t` cache line 0: the scalars pass 1 reads
/// come first (32 bytes, [`InboundSa::HOT_BYTES`]; with the `Arc`'s two
/// counts in front they span at most two cache lines wherever the
/// allocator puts them), the cipher context (key schedules, read by
/// pass 2) after them. The peer qualifier is in the SPI map's row (the
/// lookup reads it there) and in the cold part, not here.
#[derive(Debug)]
#[repr(C)]
pub struct InboundSa {
    /// Identity (for worker-local state and counters).
    pub id: SaId,
    /// Traffic selectors the decrypted inner packets must match
    /// (RFC 4301 5.2); shared, so "any" costs one pointer.
    pub selectors: Arc<Selectors>,
    /// SPI the peer sends to.
    pub spi: u32,
    /// Tunnel (interface) index the decrypted packets belong to.
    pub tunnel: u32,
    /// Replay window size (0 = off).
    pub window: u32,
    /// Worker that owns the replay window; others hand packets off to it.
    pub owner: u16,
    /// Extended (64-bit) sequence numbers.
    pub esn: bool,
    /// AEAD context (key schedules); starts at [`InboundSa::HOT_BYTES`].
    pub cipher: EspCipher,
}

impl InboundSa {
    /// Bytes of per-packet scalars before the cipher context.
    pub const HOT_BYTES: usize = core::mem::offset_of!(InboundSa, cipher);

    /// Prefetch, step 3 of 3 (after the lookup): the hot scalars.
    #[inline]
    pub(crate) fn prefetch(&self) {
        // The first line only: measured, asking for the key schedule's
        // lines too was no faster with a million SAs and slower with one
        // (the hardware prefetcher follows pass 2's sequential reads).
        crate::prefetch::line(self);
    }
}

/// What the datapath keeps per inbound SA, in bytes, by part, as laid out
/// in memory (`size_of` and heap bytes; the allocator's own overhead comes
/// on top: `cargo xtask bench --memory` measures RSS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundFootprint {
    /// The `Arc`'s two counts and the scalars pass 1 reads
    /// ([`InboundSa::HOT_BYTES`]).
    pub hot: usize,
    /// The cipher context: for AES-GCM, ring's expanded AES key and GHASH
    /// key table (544 bytes; read by pass 2).
    pub key_schedule: usize,
    /// The SPI map: the row, and one leaf pointer and leaf header (one
    /// leaf per SA: the bound, reached at about a million SAs).
    pub map_entry: usize,
    /// Control's cold part (name and transform as configured, the raw key
    /// material's heap bytes, the index's generation); names' heap bytes
    /// are not counted.
    pub cold: usize,
    /// Per worker: the replay slot and its bitmap (allocated on the SA's
    /// first authentic packet).
    pub replay: usize,
    /// Per worker: the SA's counter cell.
    pub counters: usize,
}

impl InboundFootprint {
    /// The footprint of an inbound SA with `cipher` and a replay window of
    /// `window` packets, on one worker.
    pub fn of(cipher: Cipher, window: u32) -> InboundFootprint {
        use core::mem::size_of;
        let word = size_of::<usize>();
        InboundFootprint {
            hot: 2 * word + InboundSa::HOT_BYTES,
            key_schedule: size_of::<InboundSa>() - InboundSa::HOT_BYTES
                + EspCipher::boxed_bytes(cipher),
            map_entry: size_of::<InboundRow>() + size_of::<Arc<[InboundRow]>>() + 2 * word,
            cold: size_of::<Option<SaCold>>() + cipher.key_material_len() + size_of::<u32>(),
            replay: crate::layout::SLOT_BYTES + crate::replay::ReplayWindow::bitmap_bytes(window),
            counters: crate::layout::COUNTER_CELL_BYTES,
        }
    }

    /// Sum of the parts.
    pub fn total(&self) -> usize {
        self.hot + self.key_schedule + self.map_entry + self.cold + self.replay + self.counters
    }
}

/// Ethernet addresses to put in front of encapsulated packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetHeader {
    /// Source MAC.
    pub src: MacAddr,
    /// Destination MAC (next hop).
    pub dst: MacAddr,
}

/// How an outbound SA's packets are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterHeader {
    /// Local tunnel address (outer source).
    pub src: IpAddr,
    /// Peer tunnel address (outer destination); same family as `src`.
    pub dst: IpAddr,
    /// `(source port, destination port)` for ESP in UDP (RFC 3948 / SD-WAN).
    pub udp: Option<(u16, u16)>,
    /// Ethernet header to prepend, if the caller sends whole frames.
    pub ethernet: Option<EthernetHeader>,
    /// Outer TTL / hop limit.
    pub ttl: u8,
}

/// Hot part of an outbound SA: what encap needs.
#[derive(Debug)]
pub struct OutboundSa {
    /// Identity (for per-SA counters).
    pub id: SaId,
    /// SPI the peer knows this SA by.
    pub spi: u32,
    /// Tunnel index.
    pub tunnel: u32,
    /// The worker that owns the sequence counter: only it encapsulates with
    /// this SA; other workers hand it their packets for this tunnel, so the
    /// counter has one writer and packets leave in sequence order.
    pub owner: u16,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Outer framing.
    pub outer: OuterHeader,
    /// AEAD context.
    pub cipher: EspCipher,
    /// Last sequence number handed out. Written only by the owner worker
    /// (a plain load and store, no read-modify-write), read by control.
    /// Lives in the `Arc`, so it survives snapshot swaps.
    seq: AtomicU64,
    /// Highest sequence number the datapath may use: the control plane's
    /// reservation (recorded on disk before it is raised here). Written
    /// only by control, only upwards.
    limit: AtomicU64,
}

/// Why [`OutboundSa`] handed out no sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqError {
    /// The sequence space is used up (2^32-1, or 2^64-1 with ESN): the
    /// counter never wraps (RFC 4303 3.3.3), the SA must be rekeyed.
    Exhausted,
    /// The control plane's reservation ran out and was not raised yet
    /// ([`OutboundSa::raise_limit`]).
    ReservationExhausted,
}

impl OutboundSa {
    /// Highest sequence number the SA's sequence space has: 2^32-1, or
    /// 2^64-1 with ESN.
    pub fn max_seq(&self) -> u64 {
        if self.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        }
    }

    /// Highest sequence number the datapath may use now (the control
    /// plane's current reservation; may exceed [`OutboundSa::max_seq`]).
    pub fn seq_limit(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }

    /// Let the datapath use sequence numbers up to `limit` (control thread,
    /// after the reservation is on disk). Only ever raises: a lower value
    /// is ignored.
    pub fn raise_limit(&self, limit: u64) {
        // Release: pairs with the owner's Acquire load in `next_seq`, so
        // whatever control did before (writing the reservation) happens
        // before the datapath uses the new numbers. fetch_max keeps it
        // monotonic even if two control threads raced; workers never write.
        self.limit.fetch_max(limit, Ordering::Release);
    }

    /// Take the next sequence number. Only the owner worker may call this
    /// (single writer: a load and a store). Refuses numbers above the
    /// sequence space (never wraps) and above the current reservation.
    pub(crate) fn next_seq(&self) -> Result<u64, SeqError> {
        let next = self
            .seq
            .load(Ordering::Relaxed)
            .checked_add(1)
            .filter(|&n| n <= self.max_seq())
            .ok_or(SeqError::Exhausted)?;
        if next > self.limit.load(Ordering::Acquire) {
            return Err(SeqError::ReservationExhausted);
        }
        self.seq.store(next, Ordering::Relaxed);
        Ok(next)
    }

    /// Last sequence number sent (0 before the first); control may read it
    /// at any time.
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }
}

/// What a tunnel has for sending.
#[derive(Debug, Clone)]
pub enum OutboundEntry {
    /// A usable SA.
    Active(Arc<OutboundSa>),
    /// The SA was deleted and not replaced (e.g. `clear crypto sa` on an
    /// SD-WAN tunnel): sending counts `OUT_V?_PKT_HIT_INVALID_SA`.
    Invalid,
}

/// A local address (and UDP port) that terminates tunnels, so a packet with
/// an unknown SPI can still be attributed to a tunnel interface in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// Local outer address.
    pub addr: IpAddr,
    /// Local UDP port, or `None` for plain ESP.
    pub udp_port: Option<u16>,
    /// Tunnel index.
    pub tunnel: u32,
}

/// A remembered deleted inbound SPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletedSpi {
    /// When it was deleted.
    pub at: Duration,
    /// Its tunnel.
    pub tunnel: u32,
}

/// The SPI map's row of an inbound SA: 32 bytes (the SPI sits beside the
/// 20-byte peer qualifier, where a `(spi, row)` pair would pad to 40).
#[derive(Debug, Clone)]
struct InboundRow {
    spi: u32,
    peer: Option<PeerKey>,
    sa: Arc<InboundSa>,
}

impl Row for InboundRow {
    #[inline]
    fn key(&self) -> u32 {
        self.spi
    }
}

/// An immutable view of all SAs, as workers see it.
#[derive(Clone)]
pub struct SaSnapshot {
    version: u64,
    index_capacity: u32,
    inbound: PMap<InboundRow>,
    outbound: PMap<(u32, OutboundEntry)>,
    deleted: PMap<(u32, DeletedSpi)>,
    udp_ports: Arc<[RangeInclusive<u16>]>,
    endpoints: Arc<[LocalEndpoint]>,
}

impl core::fmt::Debug for SaSnapshot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SaSnapshot")
            .field("version", &self.version)
            .field("inbound", &self.inbound.len())
            .field("outbound", &self.outbound.len())
            .field("deleted", &self.deleted.len())
            .finish()
    }
}

impl SaSnapshot {
    /// An empty snapshot (version 0).
    pub fn empty() -> SaSnapshot {
        SaSnapshot {
            version: 0,
            index_capacity: 0,
            inbound: PMap::new(),
            outbound: PMap::new(),
            deleted: PMap::new(),
            udp_ports: Arc::from(Vec::new()),
            endpoints: Arc::from(Vec::new()),
        }
    }

    /// Publish counter: each published snapshot has a larger version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// One more than the largest [`SaId::index`] in use (worker arrays size).
    pub fn index_capacity(&self) -> u32 {
        self.index_capacity
    }

    /// Number of inbound SAs.
    pub fn inbound_len(&self) -> usize {
        self.inbound.len()
    }

    /// Find the inbound SA for `spi`, preferring one qualified by the
    /// packet's source address and UDP source port (0 for plain ESP), then
    /// an unqualified one. O(1): one hash, two pointer hops, a short scan.
    #[inline]
    pub fn lookup_inbound(&self, spi: u32, src: IpAddr, src_port: u16) -> Option<&Arc<InboundSa>> {
        let mut fallback = None;
        for row in self.inbound.bucket(spi) {
            if row.spi != spi {
                continue;
            }
            match row.peer {
                Some(p) if p.addr == src && p.port == src_port => return Some(&row.sa),
                Some(_) => {}
                None => fallback = Some(&row.sa),
            }
        }
        fallback
    }

    /// Prefetch, step 1 of 3 before [`SaSnapshot::lookup_inbound`]: the
    /// SPI map slot of `spi`.
    #[inline]
    pub(crate) fn prefetch_inbound_slot(&self, spi: u32) {
        self.inbound.prefetch_slot(spi);
    }

    /// Prefetch, step 2 of 3: the SPI map rows of `spi` (reads the slot).
    #[inline]
    pub(crate) fn prefetch_inbound_rows(&self, spi: u32) {
        self.inbound.prefetch_rows(spi);
    }

    /// If `spi` belonged to an inbound SA deleted less than
    /// [`RECENTLY_DELETED_TTL`] before `now`, when and on which tunnel.
    pub fn recently_deleted(&self, spi: u32, now: Duration) -> Option<DeletedSpi> {
        self.deleted
            .bucket(spi)
            .iter()
            .find(|(k, _)| *k == spi)
            .map(|(_, d)| *d)
            .filter(|d| now.saturating_sub(d.at) < RECENTLY_DELETED_TTL)
    }

    /// The tunnel's outbound state.
    pub fn outbound(&self, tunnel: u32) -> Option<&OutboundEntry> {
        self.outbound
            .bucket(tunnel)
            .iter()
            .find(|(k, _)| *k == tunnel)
            .map(|(_, e)| e)
    }

    /// The worker that must encapsulate for `tunnel` (its outbound SA's
    /// sequencing owner), or `None` when the tunnel has no usable SA (any
    /// worker may then call `encap`, which only counts the drop).
    #[inline]
    pub fn outbound_owner(&self, tunnel: u32) -> Option<u16> {
        match self.outbound(tunnel)? {
            OutboundEntry::Active(sa) => Some(sa.owner),
            OutboundEntry::Invalid => None,
        }
    }

    /// Is `port` a UDP destination port that carries ESP (RFC 3948)?
    #[inline]
    pub fn is_esp_udp_port(&self, port: u16) -> bool {
        self.udp_ports.iter().any(|r| r.contains(&port))
    }

    /// Tunnel terminated at this local address / UDP port, if configured.
    pub fn endpoint_tunnel(&self, dst: IpAddr, udp_port: Option<u16>) -> Option<u32> {
        self.endpoints
            .iter()
            .find(|e| e.addr == dst && e.udp_port == udp_port)
            .map(|e| e.tunnel)
    }

    /// All inbound SAs (control-plane use; walks the whole table).
    pub fn inbound_sas(&self) -> impl Iterator<Item = &Arc<InboundSa>> {
        self.inbound.iter().map(|r| &r.sa)
    }

    /// What the packet path makes of `spi` at `now`, whatever the peer: an
    /// SPI some inbound SA has (for any peer) is live.
    pub fn spi_state(&self, spi: u32, now: Duration) -> SpiState {
        if self.inbound.bucket(spi).iter().any(|r| r.spi == spi) {
            return SpiState::Live;
        }
        match self.recently_deleted(spi, now) {
            Some(d) => SpiState::Deleted {
                until: d.at + RECENTLY_DELETED_TTL,
            },
            None => SpiState::Unknown,
        }
    }

    /// Every SPI of an inbound SA or remembered as deleted (may repeat;
    /// control-plane use, walks the whole table).
    pub fn known_spis(&self) -> impl Iterator<Item = u32> + '_ {
        self.inbound
            .iter()
            .map(|r| r.spi)
            .chain(self.deleted.iter().map(|(k, _)| *k))
    }
}

/// An inbound SPI as [`SaSnapshot::spi_state`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpiState {
    /// Some inbound SA has it.
    Live,
    /// Deleted; counts as recently deleted (1/9) until `until` (table clock).
    Deleted {
        /// End of [`RECENTLY_DELETED_TTL`].
        until: Duration,
    },
    /// Never had, forgotten (`ForgetInbound`) or deleted too long ago (4/12).
    Unknown,
}

/// Told which inbound SPIs may have changed state in a batch, before the
/// snapshot with the batch is published (so the XDP early-drop map knows a
/// new SPI before any worker can see its SA). Call
/// [`SaSnapshot::spi_state`] on `next` for their new state.
pub trait SpiObserver: Send {
    /// `spis` (may repeat) may have changed in `next`; `now` is the table's clock.
    fn spis_changed(&mut self, next: &SaSnapshot, spis: &[u32], now: Duration);
}

/// Configuration of an inbound SA.
#[derive(Debug, Clone)]
pub struct InboundSaConfig {
    /// SPI (not 0).
    pub spi: u32,
    /// Only accept from this peer (SD-WAN shared SPI); `None` = any source.
    pub peer: Option<PeerKey>,
    /// Tunnel index.
    pub tunnel: u32,
    /// Owning worker.
    pub owner: u16,
    /// Transform.
    pub cipher: Cipher,
    /// key || salt.
    pub key: KeyMaterial,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Replay window (0 or a power of two in 64..=8192).
    pub window: u32,
    /// Traffic selectors decrypted packets must match ([`Selectors::any`]
    /// for no check).
    pub selectors: Arc<Selectors>,
    /// Name for show commands (e.g. the crypto map tag).
    pub name: String,
}

/// Configuration of a tunnel's outbound SA.
#[derive(Debug, Clone)]
pub struct OutboundSaConfig {
    /// SPI (not 0).
    pub spi: u32,
    /// Tunnel index.
    pub tunnel: u32,
    /// The worker that owns the sequence counter (the tunnel's `worker`).
    pub owner: u16,
    /// Transform.
    pub cipher: Cipher,
    /// key || salt.
    pub key: KeyMaterial,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Outer framing.
    pub outer: OuterHeader,
    /// Last sequence number already used (0 for a new SA: the first packet
    /// carries 1).
    pub last_seq: u64,
    /// Highest sequence number the datapath may use until control raises it
    /// ([`OutboundSa::raise_limit`]): the control plane's current on-disk
    /// reservation. `u64::MAX` for no reservation.
    pub seq_limit: u64,
    /// Name for show commands.
    pub name: String,
}

/// One edit of the SA table; a batch is published at once.
#[derive(Debug, Clone)]
pub enum SaChange {
    /// Install an inbound SA.
    AddInbound(InboundSaConfig),
    /// Delete an inbound SA; its SPI is remembered for a while.
    RemoveInbound(SaId),
    /// Fault injection (`forget-sa`): take an inbound SA out of the
    /// datapath only. Control keeps it (cold part, name, counters); its SPI
    /// is not remembered as deleted, so its packets count as
    /// SA_NOT_FOUND_SPI (4/12), as when a router's forwarding plane lost an
    /// SA its control plane still has.
    ForgetInbound(SaId),
    /// Put a forgotten inbound SA back, the same SA (its replay window and
    /// counters carry on).
    RestoreInbound(SaId),
    /// Install or replace a tunnel's outbound SA.
    SetOutbound(OutboundSaConfig),
    /// Delete a tunnel's outbound SA; `keep_invalid` leaves an invalid
    /// marker (sends count 32/37) instead of nothing (111/112).
    RemoveOutbound {
        /// Tunnel index.
        tunnel: u32,
        /// Leave an [`OutboundEntry::Invalid`] marker.
        keep_invalid: bool,
    },
    /// Replace the UDP destination port ranges that carry ESP.
    SetUdpPorts(Vec<RangeInclusive<u16>>),
    /// Replace the local endpoints used to name tunnels in logs.
    SetEndpoints(Vec<LocalEndpoint>),
}

/// Why a batch was refused (nothing of it was applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaError {
    /// SPI 0 is reserved (RFC 4303 2.1).
    ZeroSpi,
    /// Bad key material.
    Key(KeyError),
    /// Bad replay window.
    Window(BadWindowSize),
    /// An inbound SA with this SPI and peer qualifier already exists.
    DuplicateInbound {
        /// The SPI.
        spi: u32,
    },
    /// No such SA.
    UnknownSa(SaId),
    /// Outer source and destination of different address families.
    MixedFamilies,
}

impl core::fmt::Display for SaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SaError::ZeroSpi => f.write_str("SPI 0 is reserved"),
            SaError::Key(e) => write!(f, "{e}"),
            SaError::Window(e) => write!(f, "{e}"),
            SaError::DuplicateInbound { spi } => {
                write!(f, "inbound SA with SPI 0x{spi:08X} already exists")
            }
            SaError::UnknownSa(id) => write!(f, "no SA {}/{}", id.index, id.generation),
            SaError::MixedFamilies => {
                f.write_str("outer source and destination differ in address family")
            }
        }
    }
}

impl std::error::Error for SaError {}

/// Direction of an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Decrypting.
    Inbound,
    /// Encrypting.
    Outbound,
}

/// Cold part of an SA, kept by control only.
#[derive(Debug, Clone)]
pub struct SaCold {
    /// Name.
    pub name: String,
    /// Direction.
    pub direction: Direction,
    /// SPI.
    pub spi: u32,
    /// Peer qualifier (inbound SD-WAN SAs).
    pub peer: Option<PeerKey>,
    /// Tunnel.
    pub tunnel: u32,
    /// Transform.
    pub cipher: Cipher,
    /// Raw key material (zeroized on drop, redacted in Debug).
    pub key: KeyMaterial,
    /// When it was installed.
    pub installed_at: Duration,
}

/// Workers' handle on the published snapshot.
pub type SharedSnapshot = Arc<ArcSwap<SaSnapshot>>;

#[derive(Debug, Default)]
struct IndexAllocator {
    generations: Vec<u32>,
    free: Vec<u32>,
}

impl IndexAllocator {
    fn alloc(&mut self) -> SaId {
        if let Some(index) = self.free.pop() {
            SaId {
                index,
                generation: self.generations[index as usize],
            }
        } else {
            self.generations.push(1);
            SaId {
                index: (self.generations.len() - 1) as u32,
                generation: 1,
            }
        }
    }

    /// Whether `id` is the current use of its index.
    fn is_current(&self, id: SaId) -> bool {
        self.generations.get(id.index as usize) == Some(&id.generation)
    }

    fn release(&mut self, id: SaId) {
        let g = &mut self.generations[id.index as usize];
        *g = g.wrapping_add(1).max(1);
        self.free.push(id.index);
    }
}

/// Cold parts by SA index: `parts[i]` is the cold part of the SA whose
/// index is `i` and whose generation is the allocator's current one for
/// `i` (an index is emptied when released, before it can be reused).
#[derive(Debug, Default)]
struct ColdParts {
    parts: Vec<Option<SaCold>>,
    len: usize,
}

impl ColdParts {
    fn get(&self, alloc: &IndexAllocator, id: SaId) -> Option<&SaCold> {
        if !alloc.is_current(id) {
            return None;
        }
        self.parts.get(id.index as usize)?.as_ref()
    }

    fn insert(&mut self, id: SaId, c: SaCold) {
        let i = id.index as usize;
        if self.parts.len() <= i {
            self.parts.resize_with(i + 1, || None);
        }
        if self.parts[i].replace(c).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, alloc: &IndexAllocator, id: SaId) -> Option<SaCold> {
        if !alloc.is_current(id) {
            return None;
        }
        let c = self.parts.get_mut(id.index as usize)?.take()?;
        self.len -= 1;
        Some(c)
    }

    fn iter<'a>(&'a self, alloc: &'a IndexAllocator) -> impl Iterator<Item = (SaId, &'a SaCold)> {
        self.parts.iter().enumerate().filter_map(|(i, e)| {
            let id = SaId {
                index: i as u32,
                generation: alloc.generations[i],
            };
            e.as_ref().map(|c| (id, c))
        })
    }
}

/// Control's SA table: the master copy, the cold parts, and the publisher.
pub struct SaTable {
    shared: SharedSnapshot,
    current: SaSnapshot,
    alloc: IndexAllocator,
    /// Cold parts indexed by [`SaId::index`] (dense, like the workers'
    /// arrays: no hash table's key copy and spare buckets per SA).
    cold: ColdParts,
    deleted_order: VecDeque<(Duration, u32)>,
    /// Inbound SAs taken out of the snapshot by `ForgetInbound`.
    forgotten: HashMap<SaId, Arc<InboundSa>>,
    /// Told about SPI changes before each publish.
    spi_observer: Option<Box<dyn SpiObserver>>,
    /// SPIs touched by the batch being applied (reused).
    touched: Vec<u32>,
    /// Publishing is held ([`SaTable::hold`]): batches collect in `current`.
    held: bool,
    /// `current` has changes not published yet.
    dirty: bool,
    /// Snapshots published so far.
    publishes: u64,
    /// Batches applied so far (each one copies the snapshot).
    batches: u64,
}

impl core::fmt::Debug for SaTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SaTable")
            .field("current", &self.current)
            .field("cold", &self.cold.len)
            .finish()
    }
}

impl Default for SaTable {
    fn default() -> Self {
        Self::new()
    }
}

impl SaTable {
    /// An empty table with an empty published snapshot.
    pub fn new() -> SaTable {
        SaTable {
            shared: Arc::new(ArcSwap::from_pointee(SaSnapshot::empty())),
            current: SaSnapshot::empty(),
            alloc: IndexAllocator::default(),
            cold: ColdParts::default(),
            deleted_order: VecDeque::new(),
            forgotten: HashMap::new(),
            spi_observer: None,
            touched: Vec::new(),
            held: false,
            dirty: false,
            publishes: 0,
            batches: 0,
        }
    }

    /// Hold publishing: the batches applied until [`SaTable::release`]
    /// change the master copy at once (ids, cold parts, [`SaTable::snapshot`])
    /// and reach the workers as one snapshot when released.
    pub fn hold(&mut self) {
        self.held = true;
    }

    /// Publish what the batches applied since [`SaTable::hold`] changed (one
    /// snapshot; none when nothing changed) and publish each batch again.
    pub fn release(&mut self, now: Duration) {
        self.held = false;
        if self.dirty {
            self.publish(now);
        }
    }

    /// How many snapshots have been published.
    pub fn publishes(&self) -> u64 {
        self.publishes
    }

    /// How many batches have been applied (a held input's batches are
    /// published as one snapshot, but each one copies the snapshot).
    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// Tell the SPI observer, then hand `current` to the workers.
    fn publish(&mut self, now: Duration) {
        if let Some(o) = self.spi_observer.as_mut()
            && !self.touched.is_empty()
        {
            o.spis_changed(&self.current, &self.touched, now);
        }
        self.touched.clear();
        self.dirty = false;
        self.publishes += 1;
        self.shared.store(Arc::new(self.current.clone()));
    }

    /// Install `o`: it is told every SPI known now at once, then the SPIs
    /// of every batch before the batch is published. Replaces (and
    /// returns) any earlier observer.
    pub fn set_spi_observer(
        &mut self,
        mut o: Box<dyn SpiObserver>,
        now: Duration,
    ) -> Option<Box<dyn SpiObserver>> {
        let all: Vec<u32> = self.current.known_spis().collect();
        o.spis_changed(&self.current, &all, now);
        self.spi_observer.replace(o)
    }

    /// The handle workers load snapshots from (`shared.load()` per batch).
    pub fn shared(&self) -> SharedSnapshot {
        self.shared.clone()
    }

    /// The latest snapshot: the published one, or while publishing is
    /// held and batches were applied, the master copy as it stands.
    pub fn snapshot(&self) -> Arc<SaSnapshot> {
        if self.dirty {
            return Arc::new(self.current.clone());
        }
        self.shared.load_full()
    }

    /// Cold part of an SA.
    pub fn cold(&self, id: SaId) -> Option<&SaCold> {
        self.cold.get(&self.alloc, id)
    }

    /// Whether an inbound SA was taken out of the datapath by `ForgetInbound`.
    pub fn is_forgotten(&self, id: SaId) -> bool {
        self.forgotten.contains_key(&id)
    }

    /// All SAs' cold parts.
    pub fn cold_all(&self) -> impl Iterator<Item = (SaId, &SaCold)> {
        self.cold.iter(&self.alloc)
    }

    fn validate(&self, changes: &[SaChange]) -> Result<Vec<Option<EspCipher>>, SaError> {
        let mut ciphers = Vec::with_capacity(changes.len());
        let mut removed = std::collections::HashSet::new();
        let mut keys_removed = std::collections::HashSet::new();
        let mut keys_added = std::collections::HashSet::new();
        for c in changes {
            let cipher = match c {
                SaChange::AddInbound(cfg) => {
                    if cfg.spi == 0 {
                        return Err(SaError::ZeroSpi);
                    }
                    validate_window(cfg.window).map_err(SaError::Window)?;
                    let key = (cfg.spi, cfg.peer);
                    let exists = self.current.inbound.bucket(cfg.spi).iter().any(|r| {
                        r.spi == cfg.spi && r.peer == cfg.peer && !keys_removed.contains(&key)
                    });
                    if exists || !keys_added.insert(key) {
                        return Err(SaError::DuplicateInbound { spi: cfg.spi });
                    }
                    Some(EspCipher::new(cfg.cipher, cfg.key.as_bytes()).map_err(SaError::Key)?)
                }
                SaChange::SetOutbound(cfg) => {
                    if cfg.spi == 0 {
                        return Err(SaError::ZeroSpi);
                    }
                    if cfg.outer.src.is_ipv4() != cfg.outer.dst.is_ipv4() {
                        return Err(SaError::MixedFamilies);
                    }
                    Some(EspCipher::new(cfg.cipher, cfg.key.as_bytes()).map_err(SaError::Key)?)
                }
                SaChange::RemoveInbound(id) => {
                    match self.cold.get(&self.alloc, *id) {
                        Some(c) if c.direction == Direction::Inbound && removed.insert(*id) => {
                            keys_removed.insert((c.spi, c.peer));
                        }
                        _ => return Err(SaError::UnknownSa(*id)),
                    }
                    None
                }
                SaChange::ForgetInbound(id) => {
                    match self.cold.get(&self.alloc, *id) {
                        Some(c)
                            if c.direction == Direction::Inbound
                                && !self.forgotten.contains_key(id)
                                && removed.insert(*id) =>
                        {
                            keys_removed.insert((c.spi, c.peer));
                        }
                        _ => return Err(SaError::UnknownSa(*id)),
                    }
                    None
                }
                SaChange::RestoreInbound(id) => {
                    let Some(sa) = self.forgotten.get(id) else {
                        return Err(SaError::UnknownSa(*id));
                    };
                    let peer = self.cold(*id).and_then(|c| c.peer);
                    let key = (sa.spi, peer);
                    let exists =
                        self.current.inbound.bucket(sa.spi).iter().any(|r| {
                            r.spi == sa.spi && r.peer == peer && !keys_removed.contains(&key)
                        });
                    if exists || !keys_added.insert(key) {
                        return Err(SaError::DuplicateInbound { spi: sa.spi });
                    }
                    None
                }
                _ => None,
            };
            ciphers.push(cipher);
        }
        Ok(ciphers)
    }

    /// Apply a batch of changes and publish one new snapshot. Either the
    /// whole batch applies or none of it (validated first). Returns the ids
    /// of SAs added, in order.
    pub fn apply(&mut self, changes: Vec<SaChange>, now: Duration) -> Result<Vec<SaId>, SaError> {
        let ciphers = self.validate(&changes)?;
        if !self.dirty {
            self.touched.clear();
        }
        let mut next = self.current.clone();
        let mut added = Vec::new();
        for (change, cipher) in changes.into_iter().zip(ciphers) {
            match change {
                SaChange::AddInbound(cfg) => {
                    let id = self.alloc.alloc();
                    let sa = Arc::new(InboundSa {
                        id,
                        spi: cfg.spi,
                        tunnel: cfg.tunnel,
                        owner: cfg.owner,
                        esn: cfg.esn,
                        window: cfg.window,
                        selectors: cfg.selectors,
                        cipher: cipher.expect("validated"),
                    });
                    self.touched.push(cfg.spi);
                    next.inbound.update(cfg.spi, |rows| {
                        rows.push(InboundRow {
                            spi: cfg.spi,
                            peer: cfg.peer,
                            sa,
                        })
                    });
                    // The SPI is valid again.
                    next.deleted
                        .update(cfg.spi, |rows| rows.retain(|(k, _)| *k != cfg.spi));
                    next.index_capacity = next.index_capacity.max(id.index + 1);
                    self.cold.insert(
                        id,
                        SaCold {
                            name: cfg.name,
                            direction: Direction::Inbound,
                            spi: cfg.spi,
                            peer: cfg.peer,
                            tunnel: cfg.tunnel,
                            cipher: cfg.cipher,
                            key: cfg.key,
                            installed_at: now,
                        },
                    );
                    added.push(id);
                }
                SaChange::ForgetInbound(id) => {
                    let spi = self.cold.get(&self.alloc, id).expect("validated").spi;
                    self.touched.push(spi);
                    let mut taken = None;
                    next.inbound.update(spi, |rows| {
                        if let Some(pos) = rows.iter().position(|r| r.spi == spi && r.sa.id == id) {
                            taken = Some(rows.remove(pos).sa);
                        }
                    });
                    // Deliberately not in `deleted`: a forgotten SPI is unknown.
                    if let Some(sa) = taken {
                        self.forgotten.insert(id, sa);
                    }
                }
                SaChange::RestoreInbound(id) => {
                    let sa = self.forgotten.remove(&id).expect("validated");
                    let spi = sa.spi;
                    let peer = self.cold(id).expect("validated").peer;
                    self.touched.push(spi);
                    next.inbound
                        .update(spi, |rows| rows.push(InboundRow { spi, peer, sa }));
                    next.deleted
                        .update(spi, |rows| rows.retain(|(k, _)| *k != spi));
                }
                SaChange::RemoveInbound(id) => {
                    self.forgotten.remove(&id);
                    let cold = self.cold.remove(&self.alloc, id).expect("validated");
                    let spi = cold.spi;
                    self.touched.push(spi);
                    next.inbound.update(spi, |rows| {
                        rows.retain(|r| !(r.spi == spi && r.sa.id == id))
                    });
                    let still_there = next.inbound.bucket(spi).iter().any(|r| r.spi == spi);
                    if !still_there {
                        let d = DeletedSpi {
                            at: now,
                            tunnel: cold.tunnel,
                        };
                        next.deleted.update(spi, |rows| {
                            rows.retain(|(k, _)| *k != spi);
                            rows.push((spi, d));
                        });
                        self.deleted_order.push_back((now, spi));
                    }
                    self.alloc.release(id);
                }
                SaChange::SetOutbound(cfg) => {
                    let id = self.alloc.alloc();
                    let sa = Arc::new(OutboundSa {
                        id,
                        spi: cfg.spi,
                        tunnel: cfg.tunnel,
                        owner: cfg.owner,
                        esn: cfg.esn,
                        outer: cfg.outer,
                        cipher: cipher.expect("validated"),
                        seq: AtomicU64::new(cfg.last_seq),
                        limit: AtomicU64::new(cfg.seq_limit),
                    });
                    let tunnel = cfg.tunnel;
                    let mut old = None;
                    next.outbound.update(tunnel, |rows| {
                        if let Some(pos) = rows.iter().position(|(k, _)| *k == tunnel)
                            && let OutboundEntry::Active(o) = &rows.remove(pos).1
                        {
                            old = Some(o.id);
                        }
                        rows.push((tunnel, OutboundEntry::Active(sa)));
                    });
                    if let Some(old) = old {
                        self.cold.remove(&self.alloc, old);
                        self.alloc.release(old);
                    }
                    next.index_capacity = next.index_capacity.max(id.index + 1);
                    self.cold.insert(
                        id,
                        SaCold {
                            name: cfg.name,
                            direction: Direction::Outbound,
                            spi: cfg.spi,
                            peer: None,
                            tunnel,
                            cipher: cfg.cipher,
                            key: cfg.key,
                            installed_at: now,
                        },
                    );
                    added.push(id);
                }
                SaChange::RemoveOutbound {
                    tunnel,
                    keep_invalid,
                } => {
                    let mut old = None;
                    next.outbound.update(tunnel, |rows| {
                        if let Some(pos) = rows.iter().position(|(k, _)| *k == tunnel)
                            && let OutboundEntry::Active(o) = &rows.remove(pos).1
                        {
                            old = Some(o.id);
                        }
                        if keep_invalid {
                            rows.push((tunnel, OutboundEntry::Invalid));
                        }
                    });
                    if let Some(old) = old {
                        self.cold.remove(&self.alloc, old);
                        self.alloc.release(old);
                    }
                }
                SaChange::SetUdpPorts(ports) => next.udp_ports = Arc::from(ports),
                SaChange::SetEndpoints(eps) => next.endpoints = Arc::from(eps),
            }
        }
        self.expire_deleted(&mut next, now);
        next.version = self.current.version + 1;
        self.current = next;
        self.dirty = true;
        self.batches += 1;
        if !self.held {
            self.publish(now);
        }
        Ok(added)
    }

    /// Forget deleted SPIs older than the TTL or beyond the cap. Called by
    /// [`SaTable::apply`]; call it periodically too (an empty batch does).
    fn expire_deleted(&mut self, next: &mut SaSnapshot, now: Duration) {
        while let Some(&(at, spi)) = self.deleted_order.front() {
            let expired = now.saturating_sub(at) >= RECENTLY_DELETED_TTL;
            if !expired && self.deleted_order.len() <= RECENTLY_DELETED_MAX {
                break;
            }
            self.deleted_order.pop_front();
            self.touched.push(spi);
            // Only remove the entry this record made (the SPI may have been
            // deleted again later, or reinstalled).
            next.deleted
                .update(spi, |rows| rows.retain(|(k, d)| !(*k == spi && d.at == at)));
        }
    }
}

#[cfg(test)]
mod tests;
