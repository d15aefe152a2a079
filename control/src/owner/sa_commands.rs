//! The commands that delete, restore or forget SAs, whatever the tunnel's
//! kind: each walks the one [`Registry`] and does per entry what its kind
//! needs, the SA table's changes going out in the input's one snapshot.
use super::*;

impl Owner {
    /// `request platform software xdpsec fault forget-sa peer ADDR`: the
    /// datapath loses every inbound SA with that peer. Nothing else is
    /// told: the owner's view (and `show crypto ipsec sa`) keeps them and
    /// the peer keeps sending on their SPIs, which now count as unknown
    /// (4/12) with `%CRYPTO-4-RECVD_PKT_INV_SPI`, as in the seed.
    pub(super) fn forget_sa(&mut self, peer: IpAddr) -> Result<(String, serde_json::Value)> {
        let mut changes = Vec::new();
        let mut spis = Vec::new();
        let mut any = false;
        for e in self.registry.matching(Some(peer)) {
            any = true;
            for s in &e.inbound {
                if !self.table.is_forgotten(s.id) {
                    changes.push(SaChange::ForgetInbound(s.id));
                    spis.push((e.name.clone(), s.spi));
                }
            }
        }
        if !any {
            return Err(anyhow!("no tunnel has peer {peer}"));
        }
        self.table
            .apply(changes, self.now.duration_since(self.epoch))
            .map_err(|e| anyhow!("forget-sa: {e}"))?;
        let mut text = String::new();
        for (t, spi) in &spis {
            text.push_str(&format!(
                "Fault injected: the datapath forgot inbound SA 0x{spi:08X} of {t} (peer {peer}); the control plane still lists it\n"
            ));
        }
        if spis.is_empty() {
            text = format!("The datapath has no inbound SA of peer {peer} left to forget\n");
        }
        warn!(
            "fault injection: forget-sa peer {peer}: {} inbound SA(s)",
            spis.len()
        );
        let json = serde_json::json!({
            "peer": peer.to_string(),
            "forgotten_spis": spis.iter().map(|(_, s)| s).collect::<Vec<_>>(),
        });
        Ok((text, json))
    }

    /// `clear crypto sa [peer ADDR]`: delete and re-create the SAs with
    /// that peer (every peer without one), per kind:
    /// - manual tunnels re-install their SAs from the config: an inbound SA
    ///   the datapath lost comes back (the same SA, so its replay window
    ///   carries on), and the tunnel's SA counters start again from zero,
    ///   as after a clear on IOS;
    /// - IKE deletes the child SAs (telling the peer) and negotiates new
    ///   ones at once, with new SPIs;
    /// - SD-WAN peers lose their SAs and nothing re-creates them (no IKE;
    ///   OMP updates for them are ignored from now on); the tunnel and its
    ///   BFD session stay, down.
    pub(super) fn clear_sa(&mut self, peer: Option<IpAddr>) -> Result<(String, serde_json::Value)> {
        let keys: Vec<Key> = self.registry.matching(peer).map(|e| e.key()).collect();
        if let (true, Some(p)) = (keys.is_empty(), peer) {
            return Err(anyhow!("no tunnel has peer {p}"));
        }
        let mut changes = Vec::new();
        let mut text = String::new();
        // Configured tunnels by name (the log line), and the SD-WAN
        // interfaces (with them in the JSON).
        let mut names = Vec::new();
        let mut sdwan = Vec::new();
        let mut rebase = Vec::new();
        let mut ike_peers = Vec::new();
        for key in &keys {
            let e = self.registry.get(key).expect("listed above");
            match &e.kind {
                Kind::Manual => {
                    for s in &e.inbound {
                        if self.table.is_forgotten(s.id) {
                            changes.push(SaChange::RestoreInbound(s.id));
                        }
                    }
                    rebase.extend(e.sa_ids());
                    names.push(e.name.clone());
                    text.push_str(&format!(
                        "{}: manual SAs re-installed from the configuration\n",
                        e.name
                    ));
                }
                Kind::Ike => {
                    rebase.extend(e.sa_ids());
                    ike_peers.push(e.peer);
                    names.push(e.name.clone());
                    text.push_str(&format!(
                        "{}: child SAs deleted; IKEv2 negotiates new ones\n",
                        e.name
                    ));
                }
                Kind::Sdwan { .. } => {
                    changes.extend(e.inbound.iter().map(|s| SaChange::RemoveInbound(s.id)));
                    if e.outbound.is_some() {
                        // Sending on it now counts OUT_V?_PKT_HIT_INVALID_SA.
                        changes.push(SaChange::RemoveOutbound {
                            tunnel: e.index,
                            keep_invalid: true,
                        });
                    }
                    sdwan.push(key);
                }
            }
        }
        self.table
            .apply(changes, self.now.duration_since(self.epoch))
            .map_err(|e| anyhow!("clear crypto sa: {e}"))?;
        self.registry.rebase(&self.workers, rebase);
        // Applied: the SD-WAN peers' SAs leave their bookkeeping, and
        // their protocol state remembers the clear.
        let mut sdwan_names = Vec::new();
        for key in sdwan {
            self.registry.drain_sas(key);
            let Some(e) = self.registry.get(key) else {
                continue;
            };
            let name = e.name.clone();
            if let Key::Sdwan(color, remote) = key {
                text.push_str(&self.sdwan_peer_cleared(&(color.clone(), remote.clone()), &name));
            }
            sdwan_names.push(name);
        }
        for p in ike_peers {
            self.ike_input(IkeInput::Command(xdpsec_ike::Command::ClearChildSas(p)));
        }
        info!(
            "clear crypto sa{}: {}",
            peer.map(|p| format!(" peer {p}")).unwrap_or_default(),
            names.join(", ")
        );
        // Configured tunnels first, then the SD-WAN interfaces, each once.
        let mut all = names;
        for n in sdwan_names {
            if !all.contains(&n) {
                all.push(n);
            }
        }
        Ok((text, serde_json::json!({ "cleared": all })))
    }
}
