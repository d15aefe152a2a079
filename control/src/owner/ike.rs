//! The owner and the IKEv2 core: the core's actions carried out (SAs into
//! the table, datagrams as effects), rekeys on request or before the
//! sequence numbers run out, and the core's configuration from the tunnels.
use super::*;

impl Owner {
    /// Negotiated SAs rekey long before their 32-bit sequence numbers run
    /// out (RFC 4303 3.3.3: they never wrap), whatever their lifetime: at
    /// half the space, a new child SA is negotiated at once.
    pub(super) fn rekey_before_sequence_runs_out(&mut self) {
        const REKEY_AT: u64 = 1 << 31;
        if self.ike.is_none() {
            return;
        }
        let snap = self.table.snapshot();
        let mut due = Vec::new();
        // Manual and SD-WAN keys: reservations instead.
        let negotiated = || self.registry.iter().filter(|e| e.kind == Kind::Ike);
        for e in negotiated() {
            let Some(OutboundEntry::Active(sa)) = snap.outbound(e.index) else {
                continue;
            };
            if sa.last_seq() >= REKEY_AT && self.seq_rekeyed.insert(sa.id) {
                due.push(e.peer);
            }
        }
        let live: std::collections::HashSet<SaId> =
            negotiated().filter_map(|e| Some(e.outbound?.id)).collect();
        self.seq_rekeyed.retain(|id| live.contains(id));
        for peer in due {
            info!("{peer}: child SA used half its sequence numbers: rekeying now");
            let actions = self
                .ike
                .as_mut()
                .expect("checked above")
                .rekey_now(self.now, peer, false);
            self.ike_actions(actions);
        }
    }

    /// The tunnel of a negotiated child SA (its owner worker and crypto
    /// map tag) and the datapath's cipher for its transform (None, logged,
    /// when either is missing).
    fn ike_child(
        &self,
        tunnel: u32,
        keys: &xdpsec_ike::ChildKeys,
    ) -> Option<(u16, String, Cipher)> {
        let e = self
            .registry
            .by_index(tunnel)
            .filter(|e| e.kind == Kind::Ike)?;
        let t = self.config.tunnels.get(e.config_index())?;
        let Some(cipher) = esp_cipher(keys.encr, keys.integ) else {
            error!(
                "{}: negotiated ESP transform {:?}/{:?} is not in the datapath",
                e.name, keys.encr, keys.integ
            );
            return None;
        };
        let tag = match e.instance {
            Some(_) => format!("{}-head-0", e.name),
            None => crate::state::crypto_map_tag(t),
        };
        Some((e.worker, tag, cipher))
    }

    /// `request platform software xdpsec rekey child-sa|ike-sa peer ADDR`:
    /// start the CREATE_CHILD_SA rekey that the lifetime would start, now.
    pub(super) fn rekey_now(
        &mut self,
        peer: IpAddr,
        ike_sa: bool,
    ) -> Result<(String, serde_json::Value)> {
        let what = if ike_sa { "IKE SA" } else { "child SAs" };
        let Some(core) = self.ike.as_mut() else {
            return Err(anyhow!("no IKE tunnel"));
        };
        if !self
            .registry
            .matching(Some(peer))
            .any(|e| e.kind == Kind::Ike)
        {
            return Err(anyhow!("no IKE tunnel has peer {peer}"));
        }
        let actions = core.rekey_now(self.now, peer, ike_sa);
        let sent = actions
            .iter()
            .filter(|a| matches!(a, Action::Send { .. }))
            .count();
        self.ike_actions(actions);
        info!("{peer}: rekeying the {what} on request");
        Ok((
            format!("Rekeying the {what} of peer {peer}: {sent} CREATE_CHILD_SA request(s) sent\n"),
            serde_json::json!({"peer": peer.to_string(), "ike_sa": ike_sa, "requests": sent}),
        ))
    }

    /// Feed the IKE core one input and carry out what it returns.
    pub(super) fn ike_input(&mut self, input: IkeInput<'_>) {
        let Some(ike) = self.ike.as_mut() else {
            return;
        };
        let actions = ike.handle(self.now, input);
        self.ike_actions(actions);
    }

    /// Carry out the IKE core's actions in order, with the templates'
    /// instances that came (before the actions installing their SAs) and
    /// went (after those removing them) among them.
    pub(super) fn ike_actions(&mut self, actions: Vec<Action>) {
        let mut changes = self
            .ike
            .as_mut()
            .map(|i| i.take_instance_changes())
            .unwrap_or_default()
            .into_iter()
            .peekable();
        let mut routes = false;
        for (k, a) in actions.into_iter().enumerate() {
            while let Some((_, c)) = changes.next_if(|(at, _)| *at <= k) {
                routes |= self.instance_change(c);
            }
            self.ike_action(a);
        }
        for (_, c) in changes {
            routes |= self.instance_change(c);
        }
        if routes {
            self.sdwan_publish_routes();
        }
    }

    /// An instance of a template came (a registry entry, its name for the
    /// datapath's logs, its next hop) or went (its entry, whose SAs the
    /// core's actions removed before). True: its routes changed.
    fn instance_change(&mut self, c: InstanceChange) -> bool {
        match c {
            InstanceChange::Up {
                template,
                tunnel,
                name,
                peer,
                remote_ts,
            } => {
                let Some(t) = self.config.tunnels.get(template as usize) else {
                    return false;
                };
                let remote: Vec<Cidr> = remote_ts.iter().map(cidr_of).collect();
                info!(
                    "{name}: instance of template {} up (routes {})",
                    t.name,
                    remote
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.events.set_name(tunnel, name.clone());
                self.next_hops.set_peer(tunnel as usize, Some(peer));
                self.registry.insert(TunnelEntry {
                    index: tunnel,
                    kind: Kind::Ike,
                    name,
                    local: self.local,
                    peer,
                    peer_port: None,
                    worker: t.worker as u16,
                    inbound: Vec::new(),
                    outbound: None,
                    out_key: None,
                    instance: Some(registry::InstanceOf { template, remote }),
                });
                true
            }
            InstanceChange::Down { tunnel, .. } => {
                let Some(e) = self.registry.remove(&Key::Configured(tunnel)) else {
                    return false;
                };
                // The core removed its child SAs before; anything left
                // (none expected) goes now, in this input's snapshot.
                let mut left: Vec<SaChange> = e
                    .inbound
                    .iter()
                    .map(|s| SaChange::RemoveInbound(s.id))
                    .collect();
                if e.outbound.is_some() {
                    left.push(SaChange::RemoveOutbound {
                        tunnel,
                        keep_invalid: false,
                    });
                }
                if !left.is_empty()
                    && let Err(err) = self.table.apply(left, self.now.duration_since(self.epoch))
                {
                    error!("{}: removing the instance's SAs: {err}", e.name);
                }
                self.next_hops.set_peer(tunnel as usize, None);
                info!("{}: instance down", e.name);
                true
            }
        }
    }

    /// The datapath routes of the templates' instances: each one's
    /// remote selectors into it.
    pub(super) fn instance_routes(&self) -> Vec<(Cidr, Vec<u32>)> {
        self.registry
            .iter()
            .filter_map(|e| Some((e.index, e.instance.as_ref()?)))
            .flat_map(|(i, inst)| inst.remote.iter().map(move |c| (*c, vec![i])))
            .collect()
    }

    /// Carry out one IKE action: a datagram to send, an SA change, a log line.
    fn ike_action(&mut self, a: Action) {
        let now = self.now.duration_since(self.epoch);
        match a {
            Action::Send {
                local,
                remote,
                data,
            } => self.fx.sends.push(Send::Ike(IkeDatagram {
                local,
                remote,
                data,
            })),
            Action::Log { ios, line } => {
                info!(target: "ike", "{line}");
                if ios {
                    self.log.push(format!(
                        "{}{line}",
                        crate::state::ios_timestamp(std::time::SystemTime::now())
                    ));
                }
            }
            // The typed twin of a log line already logged above: the
            // daemon acts on the SA changes, not on these.
            Action::Event { .. } => {}
            Action::AddInbound {
                tunnel,
                encap: _,
                keys,
                replay_window,
                local_ts,
                remote_ts,
                lifetime,
                ..
            } => {
                let Some((owner, tag, cipher)) = self.ike_child(tunnel, &keys) else {
                    return;
                };
                let change = SaChange::AddInbound(InboundSaConfig {
                    spi: keys.spi,
                    peer: None,
                    tunnel,
                    owner,
                    cipher,
                    key: KeyMaterial::new(keys.key.to_vec()),
                    esn: false,
                    window: replay_window,
                    selectors: ts_selectors(&local_ts, &remote_ts),
                    name: tag,
                });
                match self.table.apply(vec![change], now) {
                    Ok(ids) => {
                        for &id in &ids {
                            self.registry.set_lifetime(id, self.now, lifetime);
                        }
                        let e = self.registry.by_index_mut(tunnel).expect("checked above");
                        e.inbound
                            .extend(ids.into_iter().map(|id| SaSlot { spi: keys.spi, id }));
                    }
                    Err(e) => error!("installing an IKE inbound SA: {e}"),
                }
            }
            Action::SetOutbound {
                tunnel,
                peer,
                encap,
                keys,
                lifetime,
            } => {
                let Some((owner, tag, cipher)) = self.ike_child(tunnel, &keys) else {
                    return;
                };
                let change = SaChange::SetOutbound(OutboundSaConfig {
                    spi: keys.spi,
                    tunnel,
                    owner,
                    cipher,
                    key: KeyMaterial::new(keys.key.to_vec()),
                    esn: false,
                    outer: OuterHeader {
                        src: self.local,
                        dst: peer,
                        udp: match encap {
                            EspEncap::Esp => None,
                            EspEncap::Udp(l, p) => Some((l, p)),
                        },
                        ethernet: None,
                        ttl: 64,
                    },
                    // A fresh key per negotiated SA: its numbers start at 1.
                    // The IKE core rekeys long before they run out.
                    last_seq: 0,
                    seq_limit: u64::MAX,
                    name: tag,
                });
                match self.table.apply(vec![change], now) {
                    Ok(ids) => {
                        let e = self.registry.by_index_mut(tunnel).expect("checked above");
                        let old = e.outbound.take();
                        e.outbound = ids.first().map(|&id| SaSlot { spi: keys.spi, id });
                        if let Some(old) = old {
                            self.registry.forget(old.id);
                        }
                        for &id in &ids {
                            self.registry.set_lifetime(id, self.now, lifetime);
                        }
                    }
                    Err(e) => error!("installing an IKE outbound SA: {e}"),
                }
            }
            Action::RemoveInbound { tunnel, spi } => {
                let Some(e) = self.registry.by_index_mut(tunnel) else {
                    return;
                };
                let Some(pos) = e.inbound.iter().position(|s| s.spi == spi) else {
                    return;
                };
                let id = e.inbound.remove(pos).id;
                self.registry.forget(id);
                if let Err(e) = self.table.apply(vec![SaChange::RemoveInbound(id)], now) {
                    error!("removing an IKE inbound SA: {e}");
                }
            }
            Action::RemoveOutbound { tunnel } => {
                if let Some(s) = self
                    .registry
                    .by_index_mut(tunnel)
                    .and_then(|e| e.outbound.take())
                {
                    self.registry.forget(s.id);
                }
                let change = SaChange::RemoveOutbound {
                    tunnel,
                    keep_invalid: false,
                };
                if let Err(e) = self.table.apply(vec![change], now) {
                    error!("removing an IKE outbound SA: {e}");
                }
            }
        }
    }
}

/// The datapath cipher for a negotiated ESP transform, if it has one.
pub(crate) fn esp_cipher(encr: Encr, integ: Option<Integ>) -> Option<Cipher> {
    use xdpsec_datapath::crypto::{AesKeySize, Integrity};
    let integrity = |i: Integ| match i {
        Integ::HmacSha1_96 => Integrity::HmacSha1_96,
        Integ::HmacSha256_128 => Integrity::HmacSha256_128,
        Integ::HmacSha384_192 => Integrity::HmacSha384_192,
        Integ::HmacSha512_256 => Integrity::HmacSha512_256,
    };
    match (encr, integ) {
        (Encr::AesGcm16_128, None) => Some(Cipher::Aes128Gcm),
        (Encr::AesGcm16_256, None) => Some(Cipher::Aes256Gcm),
        (Encr::ChaCha20Poly1305, None) => Some(Cipher::ChaCha20Poly1305),
        (Encr::AesCbc128, Some(i)) => Some(Cipher::AesCbc(AesKeySize::Aes128, integrity(i))),
        (Encr::AesCbc256, Some(i)) => Some(Cipher::AesCbc(AesKeySize::Aes256, integrity(i))),
        _ => None,
    }
}

/// The inbound policy for negotiated traffic selectors.
/// A config prefix as the IKE core's (the same two fields).
fn prefix_of(c: &Cidr) -> xdpsec_ike::Prefix {
    xdpsec_ike::Prefix {
        addr: c.addr,
        len: c.len,
    }
}

/// An IKE core prefix as the config's.
fn cidr_of(p: &xdpsec_ike::Prefix) -> Cidr {
    Cidr {
        addr: p.addr,
        len: p.len,
    }
}

fn ts_selectors(local: &[xdpsec_ike::Prefix], remote: &[xdpsec_ike::Prefix]) -> Arc<Selectors> {
    let set = |l: &[xdpsec_ike::Prefix]| {
        AddrSet::from_prefixes(l.iter().filter_map(|p| DpPrefix::new(p.addr, p.len)))
    };
    Arc::new(Selectors {
        local: set(local),
        remote: set(remote),
    })
}

/// The inbound SPIs of the manual tunnels (IKE must not pick them).
pub(super) fn tunnels_manual_spis(cfg: &Config) -> Vec<u32> {
    cfg.tunnels
        .iter()
        .filter_map(|t| match &t.kind {
            TunnelKind::Manual(m) => Some(m.inbound.spi),
            TunnelKind::Ike(_) => None,
        })
        .collect()
}

/// The first datapath index of the templates' instances: after the
/// configured tunnels, the SD-WAN TLOCs and their peers.
fn instance_index_base(cfg: &Config) -> u32 {
    let n = cfg.tunnels.len() as u32;
    match &cfg.sdwan {
        Some(s) => n + s.tlocs.len() as u32 + crate::sdwan::MAX_PEERS,
        None => n,
    }
}

/// Each template of `cfg` (tunnel index, the core's template): their
/// instances' indices follow one another from [`instance_index_base`].
pub fn ike_templates(cfg: &Config) -> Vec<(u32, TemplateConfig)> {
    let mut next = instance_index_base(cfg);
    let mut out = Vec::new();
    for (i, t) in cfg.tunnels.iter().enumerate() {
        let TunnelKind::Ike(k) = &t.kind else {
            continue;
        };
        let Some(tpl) = &k.template else {
            continue;
        };
        out.push((
            i as u32,
            TemplateConfig {
                range: prefix_of(&tpl.range),
                max_peers: tpl.max_peers as usize,
                first_index: next,
                any_remote_id: k.remote_id.is_none(),
            },
        ));
        next += tpl.max_peers;
    }
    out
}

/// One past the last datapath index of `cfg`: the configured tunnels, the
/// SD-WAN TLOCs and peers, the templates' instances (the size of the
/// next-hop table).
pub fn index_end(cfg: &Config) -> u32 {
    ike_templates(cfg)
        .last()
        .map_or(instance_index_base(cfg), |(_, t)| {
            t.first_index + t.max_peers as u32
        })
}

/// The IKE core's configuration of every `kind = "ike"` tunnel of `cfg`.
pub fn ike_peers(cfg: &Config) -> Result<Vec<PeerConfig>> {
    let mut peers = Vec::new();
    for (i, t) in cfg.tunnels.iter().enumerate() {
        let TunnelKind::Ike(k) = &t.kind else {
            continue;
        };
        let id = |s: &Option<String>, default: IpAddr| match s {
            None => Identity::Addr(default),
            Some(v) => crate::config::ike_identity(v),
        };
        // Each offer as its single proposals, in order of preference.
        let ike_proposals = k
            .ike_proposals
            .iter()
            .map(|p| IkeOffer::parse(p).map(|o| o.expand()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("tunnel {}: ike_proposals: {}", t.name, e.0))?
            .concat();
        let esp_proposals = k
            .esp_proposals
            .iter()
            .map(|p| EspProposal::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("tunnel {}: esp_proposals: {}", t.name, e.0))?;
        let prefixes = |l: &[Cidr]| l.iter().map(prefix_of).collect::<Vec<_>>();
        peers.push(PeerConfig {
            tunnel: t.name.clone(),
            tunnel_index: i as u32,
            local: cfg.underlay.address,
            remote: t.peer,
            psk: k.psk.clone(),
            // With a certificate and no local_id: its subject DN.
            local_id: match (&k.cert, &k.local_id) {
                (Some(c), None) => Identity::Dn(c.subject_der()),
                _ => id(&k.local_id, cfg.underlay.address),
            },
            cert: k.cert.clone(),
            remote_id: id(&k.remote_id, t.peer),
            ike_proposals,
            esp_proposals,
            ike_lifetime: k.ike_lifetime,
            child_lifetime: k.lifetime,
            dpd: k.dpd,
            dpd_retry: k
                .dpd_retry
                .map(|s| std::time::Duration::from_secs(s.into())),
            initiate: k.initiate,
            force_encap: matches!(t.encap, crate::config::Encap::Udp { .. }),
            nat_t_port: k.nat_t_port,
            local_ts: prefixes(&t.local_selectors(&cfg.inside)),
            remote_ts: prefixes(&t.remote_subnets),
            replay_window: t.replay_window,
            invalid_spi_recovery: k.invalid_spi_recovery,
            fragmentation: k.fragmentation,
            fragment_size: k.fragment_size,
        });
    }
    Ok(peers)
}

/// An IKE tunnel's certificate files (None for PSK and other kinds).
pub(super) fn ike_cert_files(t: &Tunnel) -> Option<&[String; 3]> {
    match &t.kind {
        TunnelKind::Ike(i) => i.cert_files.as_ref(),
        TunnelKind::Manual(_) => None,
    }
}

/// An IKE tunnel's pre-shared key (empty for other kinds).
pub(super) fn ike_psk(t: &Tunnel) -> &[u8] {
    match &t.kind {
        TunnelKind::Ike(i) => &i.psk,
        TunnelKind::Manual(_) => &[],
    }
}
