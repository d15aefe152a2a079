//! One tunnel registry: every tunnel of the node, whatever its kind
//! (manual, IKE, SD-WAN peer), with one SA bookkeeping.
//!
//! An entry holds what all kinds have: the datapath tunnel index, the
//! interface name, the peer, the worker that owns its SAs, its inbound SAs
//! (two or more during a rekey), its outbound SA, the key its outbound
//! sequence numbers are reserved under, and (kept here by SA id) each SA's
//! counter baseline and negotiated lifetime. What only one kind has stays
//! with its protocol: a configured tunnel's settings in the config
//! (`config.tunnels[index]`), the IKE exchanges in the IKE core, an SD-WAN
//! peer's OMP parameters and BFD state in [`crate::sdwan::Sdwan::peers`]
//! under the same key. Commands that touch SAs walk this one list.
//!
//! Entries are walked in key order: the configured tunnels by index, then
//! the SD-WAN peers by (local color, remote TLOC), so the peers under one
//! local TLOC are listed together.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use xdpsec_datapath::{
    sa::SaId,
    worker::{SaCounters, WorkerShared, sa_counters},
};
use xdpsec_omp::TlocId;

use crate::seqstore::KeyId;

/// What kind of tunnel an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A `kind = "manual"` tunnel: keys from the config.
    Manual,
    /// A `kind = "ike"` tunnel: child SAs negotiated by IKEv2.
    Ike,
    /// An SD-WAN peer: a remote TLOC under a local TLOC, keys from OMP.
    Sdwan {
        /// The local TLOC's color.
        local_color: String,
        /// The remote TLOC.
        remote: TlocId,
    },
}

/// An entry's key in the registry (its walk order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// A configured tunnel, by datapath index.
    Configured(u32),
    /// An SD-WAN peer: (local color, remote TLOC).
    Sdwan(String, TlocId),
}

/// One SA of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaSlot {
    /// Its SPI.
    pub spi: u32,
    /// Its id in the SA table.
    pub id: SaId,
}

/// One tunnel, whatever its kind.
#[derive(Debug, Clone)]
pub struct TunnelEntry {
    /// Datapath tunnel index.
    pub index: u32,
    /// Its kind.
    pub kind: Kind,
    /// Interface name (an SD-WAN peer: its local TLOC's `TunnelNNNNN`).
    pub name: String,
    /// The local address of its SAs.
    pub local: IpAddr,
    /// The peer's address.
    pub peer: IpAddr,
    /// An SD-WAN peer's UDP port (its SAs are found by address and port).
    pub peer_port: Option<u16>,
    /// The worker that owns its SAs.
    pub worker: u16,
    /// Inbound SAs (a manual tunnel has one; IKE none before negotiation,
    /// two during a rekey; an SD-WAN peer newest first, as OMP lists them).
    pub inbound: Vec<SaSlot>,
    /// Its outbound SA, if any.
    pub outbound: Option<SaSlot>,
    /// Manual and SD-WAN: the fingerprint its outbound key's sequence
    /// reservations are filed under (negotiated keys are rekeyed instead).
    pub out_key: Option<KeyId>,
    /// An instance of a responder template (`peer_range`): its template
    /// and its routes.
    pub instance: Option<InstanceOf>,
}

/// What an instance of a template (`peer_range`) has of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceOf {
    /// The template's index (`config.tunnels[template]`).
    pub template: u32,
    /// Its remote traffic selectors (the peer's, narrowed to the
    /// template's `remote_subnets`): the inner destinations routed to it.
    pub remote: Vec<crate::config::Cidr>,
}

impl TunnelEntry {
    /// Its key in the registry.
    pub fn key(&self) -> Key {
        match &self.kind {
            Kind::Manual | Kind::Ike => Key::Configured(self.index),
            Kind::Sdwan {
                local_color,
                remote,
            } => Key::Sdwan(local_color.clone(), remote.clone()),
        }
    }

    /// Its SAs' ids, inbound first.
    pub fn sa_ids(&self) -> impl Iterator<Item = SaId> + '_ {
        self.inbound
            .iter()
            .chain(self.outbound.as_ref())
            .map(|s| s.id)
    }

    /// Whether it is a tunnel with `peer` (every tunnel without one).
    pub fn matches(&self, peer: Option<IpAddr>) -> bool {
        peer.is_none_or(|p| p == self.peer)
    }

    /// The peer as logs and metrics name it: the address, with `:port`
    /// for an SD-WAN peer.
    pub fn peer_label(&self) -> String {
        match self.peer_port {
            Some(port) => format!("{}:{port}", self.peer),
            None => self.peer.to_string(),
        }
    }

    /// A configured tunnel (manual or IKE, or an instance of a template),
    /// not an SD-WAN peer.
    pub fn is_configured(&self) -> bool {
        matches!(self.kind, Kind::Manual | Kind::Ike)
    }

    /// The index of its configuration (`config.tunnels[i]`): its own, or
    /// an instance's template's.
    pub fn config_index(&self) -> usize {
        self.instance.as_ref().map_or(self.index, |i| i.template) as usize
    }
}

/// One SA of the node, as [`Registry::sas`] lists them.
pub struct SaRef<'a> {
    /// Its tunnel's name (an SD-WAN peer's: its local TLOC's interface).
    pub tunnel: &'a str,
    /// Its peer: the address, or `address:port` for an SD-WAN peer.
    pub peer: String,
    /// True for an inbound SA.
    pub inbound: bool,
    /// Its id in the table.
    pub id: SaId,
    /// Its SPI.
    pub spi: u32,
}

/// Every tunnel of the node and its SAs' bookkeeping.
#[derive(Default)]
pub struct Registry {
    entries: BTreeMap<Key, TunnelEntry>,
    /// Datapath tunnel index -> key.
    by_index: HashMap<u32, Key>,
    /// Per-SA counters at the last `clear crypto sa counters` (or the
    /// last `clear crypto sa` of its tunnel).
    baseline: HashMap<SaId, SaCounters>,
    /// Negotiated SAs: when they were installed and their lifetime.
    lifetimes: HashMap<SaId, (Instant, Duration)>,
}

impl Registry {
    /// Add (or replace) an entry.
    pub fn insert(&mut self, e: TunnelEntry) {
        let key = e.key();
        self.by_index.insert(e.index, key.clone());
        if let Some(old) = self.entries.insert(key, e) {
            self.forget_all(&old);
        }
    }

    /// Remove an entry; its SAs' bookkeeping goes with it.
    pub fn remove(&mut self, key: &Key) -> Option<TunnelEntry> {
        let e = self.entries.remove(key)?;
        self.by_index.remove(&e.index);
        self.forget_all(&e);
        Some(e)
    }

    fn forget_all(&mut self, e: &TunnelEntry) {
        for id in e.sa_ids() {
            self.forget(id);
        }
    }

    /// An SA left the table: its baseline and lifetime go.
    pub fn forget(&mut self, id: SaId) {
        self.baseline.remove(&id);
        self.lifetimes.remove(&id);
    }

    /// Every entry, in walk order.
    pub fn iter(&self) -> impl Iterator<Item = &TunnelEntry> + '_ {
        self.entries.values()
    }

    /// The entries with `peer` (all without one), in walk order.
    pub fn matching(&self, peer: Option<IpAddr>) -> impl Iterator<Item = &TunnelEntry> + '_ {
        self.iter().filter(move |e| e.matches(peer))
    }

    /// The entry under `key`.
    pub fn get(&self, key: &Key) -> Option<&TunnelEntry> {
        self.entries.get(key)
    }

    /// The entry of datapath tunnel `index`.
    pub fn by_index(&self, index: u32) -> Option<&TunnelEntry> {
        self.entries.get(self.by_index.get(&index)?)
    }

    /// The entry of datapath tunnel `index`, to change.
    pub fn by_index_mut(&mut self, index: u32) -> Option<&mut TunnelEntry> {
        self.entries.get_mut(self.by_index.get(&index)?)
    }

    /// Take an entry's SAs out of its bookkeeping (they are being deleted):
    /// (inbound, outbound). Its outbound key goes with its outbound SA.
    pub fn drain_sas(&mut self, key: &Key) -> (Vec<SaSlot>, Option<SaSlot>) {
        let Some(e) = self.entries.get_mut(key) else {
            return (Vec::new(), None);
        };
        let inbound = std::mem::take(&mut e.inbound);
        let outbound = e.outbound.take();
        e.out_key = None;
        for s in inbound.iter().chain(outbound.as_ref()) {
            self.baseline.remove(&s.id);
            self.lifetimes.remove(&s.id);
        }
        (inbound, outbound)
    }

    /// Every SA of the node, in walk order (each entry's inbound first).
    pub fn sas(&self) -> impl Iterator<Item = SaRef<'_>> + '_ {
        self.iter().flat_map(|e| {
            let peer = e.peer_label();
            let sa = move |inbound, s: &SaSlot| SaRef {
                tunnel: &e.name,
                peer: peer.clone(),
                inbound,
                id: s.id,
                spi: s.spi,
            };
            let out = sa.clone();
            e.inbound
                .iter()
                .map(move |s| sa(true, s))
                .chain(e.outbound.iter().map(move |s| out(false, s)))
        })
    }

    /// An SA's counters summed over workers, less its baseline.
    pub fn counters_since_clear(&self, workers: &[Arc<WorkerShared>], id: SaId) -> SaCounters {
        let now = sa_counters(workers, id);
        match self.baseline.get(&id) {
            Some(base) => now.saturating_sub(base),
            None => now,
        }
    }

    /// An entry's counters since the last clear: (inbound, summed over its
    /// inbound SAs; outbound).
    pub fn counters(
        &self,
        workers: &[Arc<WorkerShared>],
        e: &TunnelEntry,
    ) -> (SaCounters, SaCounters) {
        let inb = e.inbound.iter().fold(SaCounters::default(), |a, s| {
            a.plus(&self.counters_since_clear(workers, s.id))
        });
        let outb = e
            .outbound
            .map(|s| self.counters_since_clear(workers, s.id))
            .unwrap_or_default();
        (inb, outb)
    }

    /// Counters of `ids` read as zero from now on.
    pub fn rebase(&mut self, workers: &[Arc<WorkerShared>], ids: impl IntoIterator<Item = SaId>) {
        for id in ids {
            self.baseline.insert(id, sa_counters(workers, id));
        }
    }

    /// `clear crypto sa counters`: every SA's counters read as zero from now on.
    pub fn clear_counters(&mut self, workers: &[Arc<WorkerShared>]) {
        let ids: Vec<SaId> = self.iter().flat_map(|e| e.sa_ids()).collect();
        self.baseline.clear();
        self.rebase(workers, ids);
    }

    /// Whether SA `id` has a counter baseline.
    #[cfg(test)]
    pub fn has_baseline(&self, id: SaId) -> bool {
        self.baseline.contains_key(&id)
    }

    /// A negotiated SA's install time and lifetime.
    pub fn lifetime(&self, id: SaId) -> Option<(Instant, Duration)> {
        self.lifetimes.get(&id).copied()
    }

    /// Record a negotiated SA's install time and lifetime.
    pub fn set_lifetime(&mut self, id: SaId, at: Instant, life: Duration) {
        self.lifetimes.insert(id, (at, life));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u32) -> SaId {
        SaId {
            index,
            generation: 1,
        }
    }

    fn entry(index: u32, kind: Kind, peer: &str) -> TunnelEntry {
        TunnelEntry {
            index,
            kind,
            name: format!("Tunnel{index}"),
            local: "198.51.100.1".parse().unwrap(),
            peer: peer.parse().unwrap(),
            peer_port: None,
            worker: 0,
            inbound: vec![SaSlot {
                spi: 0x100 + index,
                id: id(2 * index),
            }],
            outbound: Some(SaSlot {
                spi: 0x200 + index,
                id: id(2 * index + 1),
            }),
            out_key: None,
            instance: None,
        }
    }

    fn sdwan(color: &str) -> Kind {
        Kind::Sdwan {
            local_color: color.into(),
            remote: TlocId {
                system_ip: "192.0.2.2".parse().unwrap(),
                color: "mpls".into(),
            },
        }
    }

    #[test]
    fn walk_order_is_configured_by_index_then_sdwan_peers_by_local_color() {
        let mut r = Registry::default();
        // Indices as SD-WAN allocates them: not in color order.
        r.insert(entry(7, sdwan("public-internet"), "198.51.100.3"));
        r.insert(entry(1, Kind::Ike, "198.51.100.2"));
        r.insert(entry(8, sdwan("biz-internet"), "198.51.100.3"));
        r.insert(entry(0, Kind::Manual, "198.51.100.5"));
        let order: Vec<u32> = r.iter().map(|e| e.index).collect();
        assert_eq!(order, vec![0, 1, 8, 7]);
        assert_eq!(r.by_index(8).unwrap().index, 8);
        let peers: Vec<u32> = r
            .matching(Some("198.51.100.3".parse().unwrap()))
            .map(|e| e.index)
            .collect();
        assert_eq!(peers, vec![8, 7]);
        let sas: Vec<(u32, bool)> = r.sas().map(|s| (s.spi, s.inbound)).collect();
        assert_eq!(sas[..2], [(0x100, true), (0x200, false)]);
        assert_eq!(sas.len(), 8);
    }

    #[test]
    fn an_sa_leaving_takes_its_baseline_and_lifetime_with_it() {
        let mut r = Registry::default();
        let k = sdwan("biz-internet");
        r.insert(entry(4, k, "198.51.100.3"));
        r.insert(entry(0, Kind::Manual, "198.51.100.5"));
        r.clear_counters(&[]);
        let now = Instant::now();
        r.set_lifetime(id(8), now, Duration::from_secs(60));
        assert!(r.has_baseline(id(8)) && r.has_baseline(id(9)) && r.has_baseline(id(0)));
        let key = r.by_index(4).unwrap().key();
        let (inb, out) = r.drain_sas(&key);
        assert_eq!(inb.len(), 1);
        assert!(out.is_some());
        assert!(!r.has_baseline(id(8)) && !r.has_baseline(id(9)));
        assert_eq!(r.lifetime(id(8)), None);
        assert!(r.has_baseline(id(0)), "other entries keep theirs");
        assert_eq!(r.by_index(4).unwrap().sa_ids().count(), 0);
        r.remove(&Key::Configured(0));
        assert!(!r.has_baseline(id(0)));
        assert!(r.by_index(0).is_none());
    }
}
