//! Responder templates: one tunnel that answers any peer of an address
//! range (IOS XE's IKEv2 profile matching a remote range with a dynamic
//! VTI from a virtual-template; strongSwan's `remote_addrs` range).
//!
//! An IKE_SA_INIT from an address of the range, that no other tunnel has
//! as its peer, is answered with the template's settings; its half-open
//! IKE SA belongs to the template. Only when the peer authenticated in
//! IKE_AUTH does it become an instance: a tunnel of its own (its own
//! [`PeerConfig`], name `TEMPLATE/ADDR`, datapath index, and the traffic
//! selectors the peer proposed narrowed to within the template's), which
//! from then on is served like any configured responder tunnel. The
//! instance goes when its last IKE SA goes. At most `max_peers` instances
//! live at once: a new peer beyond that is refused with NO_ADDITIONAL_SAS.

#[allow(unused_imports)]
use super::*;
use crate::{InstanceChange, TemplateConfig};

/// A template's state in the core.
pub(super) struct Template {
    pub(super) cfg: TemplateConfig,
    /// Slot -> peer position of its live instance.
    slots: Vec<Option<usize>>,
    /// Live instances.
    live: usize,
}

/// `addr` is within `p`.
pub(super) fn prefix_has(p: Prefix, addr: IpAddr) -> bool {
    let host = Prefix {
        addr,
        len: if addr.is_ipv4() { 32 } else { 128 },
    };
    TsRepr::from_prefix(p).contains(&TsRepr::from_prefix(host))
}

/// The peer's proposed selectors (`offered`, its TSi: our remote side)
/// narrowed to within `allowed` (as charon narrows: a proposal inside an
/// allowed prefix is taken as proposed; an allowed prefix inside a
/// proposal is taken whole), each once.
pub(super) fn narrow(offered: &[TsRepr], allowed: &[Prefix]) -> Vec<Prefix> {
    let mut out: Vec<Prefix> = Vec::new();
    for o in offered {
        for a in allowed {
            let ta = TsRepr::from_prefix(*a);
            let got = match o.to_prefix() {
                Some(p) if ta.contains(&TsRepr::from_prefix(p)) => Some(p),
                _ if o.contains(&ta) => Some(*a),
                _ => None,
            };
            if let Some(p) = got
                && !out.contains(&p)
            {
                out.push(p);
            }
        }
    }
    out
}

/// Whether two prefixes share an address.
fn overlap(a: Prefix, b: Prefix) -> bool {
    let (ta, tb) = (TsRepr::from_prefix(a), TsRepr::from_prefix(b));
    ta.contains(&tb) || tb.contains(&ta)
}

impl Core {
    /// Make tunnel `tunnel_index` a template; false if no tunnel has it.
    pub(crate) fn set_template(&mut self, tunnel_index: u32, cfg: TemplateConfig) -> bool {
        let Some(p) = self
            .peers
            .iter()
            .position(|c| c.tunnel_index == tunnel_index)
        else {
            return false;
        };
        self.tunnels[p].matchable = false;
        self.tunnels[p].initiate_at = None;
        self.templates.insert(
            p,
            Template {
                slots: vec![None; cfg.max_peers],
                live: 0,
                cfg,
            },
        );
        true
    }

    /// The template whose range has `remote`, if any.
    pub(super) fn template_for(&self, remote: IpAddr) -> Option<usize> {
        let mut v: Vec<(&usize, &Template)> = self.templates.iter().collect();
        v.sort_by_key(|(p, _)| **p);
        v.into_iter()
            .find(|(_, t)| prefix_has(t.cfg.range, remote))
            .map(|(p, _)| *p)
    }

    /// Whether tunnel `p` (a template or one of its instances) accepts any
    /// identity that authenticates.
    pub(super) fn any_remote_id(&self, p: usize) -> bool {
        let t = self.instances.get(&p).map_or(p, |x| x.0);
        self.templates.get(&t).is_some_and(|t| t.cfg.any_remote_id)
    }

    /// Whether `p` is a template (its IKE SAs are half-open ones).
    pub(super) fn is_template(&self, p: usize) -> bool {
        self.templates.contains_key(&p)
    }

    /// The template at `p` is full: no new peer (checked at IKE_SA_INIT,
    /// before any state, and again at IKE_AUTH).
    pub(super) fn template_full(&self, p: usize) -> bool {
        self.templates
            .get(&p)
            .is_some_and(|t| t.live >= t.cfg.max_peers)
    }

    /// IKE SA `i` of a template authenticated its peer in IKE_AUTH `m`:
    /// make it an instance (or move it to the instance its address has
    /// already). Err: the notify to refuse the peer with (the template is
    /// full, or its selectors are not within the template's or are
    /// another instance's).
    pub(super) fn instantiate(&mut self, i: usize, m: &Message) -> Result<(), (u16, String)> {
        let p = self.sas[i].peer;
        let remote = self.sas[i].remote.ip();
        if let Some(q) = (0..self.peers.len())
            .find(|&q| self.tunnels[q].matchable && self.peers[q].remote == remote)
        {
            // Two half-open IKE SAs of one address: the first to
            // authenticate made the instance; this one joins it.
            self.sas[i].peer = q;
            return Ok(());
        }
        let Some(t) = self.templates.get(&p) else {
            return Ok(());
        };
        if t.live >= t.cfg.max_peers {
            return Err((
                notify::NO_ADDITIONAL_SAS,
                format!(
                    "{} instance(s), max_peers reached; answered NO_ADDITIONAL_SAS",
                    t.live
                ),
            ));
        }
        let cfg = self.peers[p].clone();
        let offered = m.ts_i().map(<[_]>::to_vec).unwrap_or_default();
        let ts = narrow(&offered, &cfg.remote_ts);
        if ts.is_empty() {
            return Err((
                notify::TS_UNACCEPTABLE,
                format!(
                    "its traffic selectors TSi {} are not within remote_subnets {} (TS_UNACCEPTABLE)",
                    ts_text(Some(&offered)),
                    prefixes(&cfg.remote_ts)
                ),
            ));
        }
        if let Some(other) = t.slots.iter().flatten().find(|&&q| {
            self.peers[q]
                .remote_ts
                .iter()
                .any(|a| ts.iter().any(|b| overlap(*a, *b)))
        }) {
            return Err((
                notify::TS_UNACCEPTABLE,
                format!(
                    "its traffic selectors {} overlap those of {} (TS_UNACCEPTABLE)",
                    prefixes(&ts),
                    self.peers[*other].tunnel
                ),
            ));
        }
        let slot = t
            .slots
            .iter()
            .position(Option::is_none)
            .expect("live < max");
        let first = t.cfg.first_index;
        let mut inst = (*cfg).clone();
        inst.tunnel = format!("{}/{remote}", cfg.tunnel);
        inst.tunnel_index = first + slot as u32;
        inst.remote = remote;
        inst.initiate = false;
        inst.remote_ts = ts.clone();
        let state = TunnelState {
            initiate_at: None,
            failures: 0,
            matchable: true,
        };
        let q = match self.free_peers.pop() {
            Some(q) => {
                self.peers[q] = Arc::new(inst);
                self.tunnels[q] = state;
                q
            }
            None => {
                self.peers.push(Arc::new(inst));
                self.tunnels.push(state);
                self.peers.len() - 1
            }
        };
        let t = self.templates.get_mut(&p).expect("checked above");
        t.slots[slot] = Some(q);
        t.live += 1;
        self.instances.insert(q, (p, slot));
        self.sas[i].peer = q;
        let c = &self.peers[q];
        self.instance_changes.push((
            self.out.len(),
            InstanceChange::Up {
                template: cfg.tunnel_index,
                tunnel: c.tunnel_index,
                name: c.tunnel.clone(),
                peer: remote,
                remote_ts: ts,
            },
        ));
        Ok(())
    }

    /// Tunnel `p` lost an IKE SA: an instance with none left goes (its
    /// child SAs' removal came before, from `drop_sa`).
    pub(super) fn retire_if_unused(&mut self, p: usize) {
        if !self.instances.contains_key(&p) || self.sas.iter().any(|s| s.peer == p) {
            return;
        }
        let (t, slot) = self.instances.remove(&p).expect("checked above");
        let cfg = self.peers[p].clone();
        self.tunnels[p].matchable = false;
        self.tunnels[p].initiate_at = None;
        self.free_peers.push(p);
        if let Some(t) = self.templates.get_mut(&t) {
            t.slots[slot] = None;
            t.live -= 1;
        }
        self.instance_changes.push((
            self.out.len(),
            InstanceChange::Down {
                template: self.peers[t].tunnel_index,
                tunnel: cfg.tunnel_index,
            },
        ));
    }

    /// Delete every instance of template `tunnel_index` (a DELETE to each
    /// peer, fire and forget) and its half-open IKE SAs; then the
    /// template's configuration is `new`, if given. The number of
    /// instances deleted.
    pub(crate) fn drop_template_instances(
        &mut self,
        now: Instant,
        tunnel_index: u32,
        new: Option<PeerConfig>,
    ) -> usize {
        let Some(p) = self
            .templates
            .keys()
            .copied()
            .find(|&p| self.peers[p].tunnel_index == tunnel_index)
        else {
            return 0;
        };
        let before = self.templates.get(&p).map_or(0, |t| t.live);
        let mut i = 0;
        while i < self.sas.len() {
            let q = self.sas[i].peer;
            if q != p && self.instances.get(&q).is_none_or(|x| x.0 != p) {
                i += 1;
                continue;
            }
            if matches!(self.sas[i].state, State::Ready | State::Deleting) {
                self.log(q, false, "the template changed: deleting the IKE SA");
                self.send_delete_ike(i);
            }
            self.drop_sa(i, now, None);
        }
        if let Some(cfg) = new {
            self.peers[p] = Arc::new(cfg);
        }
        before
    }

    /// What instances came and went since the last call, each with the
    /// position in the actions `handle` returned where it happened.
    pub(crate) fn take_instance_changes(&mut self) -> Vec<(usize, InstanceChange)> {
        std::mem::take(&mut self.instance_changes)
    }
}
