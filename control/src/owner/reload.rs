//! `request platform software xdpsec reload` and SIGHUP: the tunnels' SAs
//! swapped as one batch, anything else refused by name.
use super::ike::{ike_cert_files, ike_psk};
use super::*;

impl Owner {
    /// Re-read the config file and apply what changed in the tunnels' SAs
    /// as one atomic SA-table update. Anything else that changed needs a
    /// restart and is refused, naming the field; nothing is half-applied.
    pub(super) fn reload(&mut self) -> Result<String> {
        let new = Config::load(&self.config_path).map_err(|e| anyhow!("reload refused: {e}"))?;
        let cur = &self.config;
        let refuse = |field: &str, why: &str| -> Result<String> {
            Err(anyhow!("reload refused: `{field}` changed; {why}"))
        };
        let restart = "restart xdpsec to apply it";
        if new.node != cur.node {
            return refuse("node", restart);
        }
        if new.socket != cur.socket {
            return refuse("socket", restart);
        }
        if new.state_dir != cur.state_dir {
            return refuse("state_dir", restart);
        }
        let (u, v) = (&new.underlay, &cur.underlay);
        if u.interface != v.interface
            || u.address != v.address
            || u.queues != v.queues
            || u.udp_ports != v.udp_ports
            || u.xdp_mode != v.xdp_mode
            || u.busy_poll_us != v.busy_poll_us
        {
            return refuse("underlay", restart);
        }
        if new.inside != cur.inside {
            return refuse("inside", restart);
        }
        if new.metrics != cur.metrics {
            return refuse("metrics", restart);
        }
        if new.logging != cur.logging {
            return refuse("logging", restart);
        }
        if new.sdwan != cur.sdwan {
            return refuse(
                "sdwan",
                "restart xdpsec to apply it (its TLOC keys come from the controller; `request platform software sdwan security ipsec-rekey` rekeys without a restart)",
            );
        }
        if new.tunnels.len() != cur.tunnels.len() {
            return refuse("tunnel (tunnels added or removed)", restart);
        }
        let mut changes = Vec::new();
        let mut summary = Vec::new();
        let mut replaced = Vec::with_capacity(new.tunnels.len());
        // (tunnel, limit) of each new outbound SA, raised once on disk.
        let mut staged = Vec::new();
        // Templates whose settings changed: their instances go.
        let mut templates = Vec::new();
        for (i, (n, o)) in new.tunnels.iter().zip(&cur.tunnels).enumerate() {
            let (nt, ot) = (ike_template(n), ike_template(o));
            if nt.is_some() || ot.is_some() {
                if n.name != o.name {
                    return refuse("tunnel.name", restart);
                }
                if nt != ot || n.encap != o.encap || n.worker != o.worker {
                    return refuse(
                        &format!(
                            "tunnel {} (peer, peer_range, max_peers, encap or worker of a template)",
                            n.name
                        ),
                        restart,
                    );
                }
                if format!("{:?}", n.kind) != format!("{:?}", o.kind)
                    || *ike_psk(n) != *ike_psk(o)
                    || ike_cert_files(n) != ike_cert_files(o)
                    || n.replay_window != o.replay_window
                    || n.remote_subnets != o.remote_subnets
                    || n.local_subnets != o.local_subnets
                {
                    templates.push(i);
                }
                continue;
            }
            let Some(ts) = self.registry.by_index(i as u32) else {
                continue;
            };
            if n.name != o.name {
                return refuse("tunnel.name", restart);
            }
            if n.peer != o.peer
                || n.encap != o.encap
                || n.remote_subnets != o.remote_subnets
                || n.local_subnets != o.local_subnets
                || n.kind.name() != o.kind.name()
            {
                return refuse(
                    &format!(
                        "tunnel {} (kind, peer, encap, remote_subnets or local_subnets)",
                        n.name
                    ),
                    restart,
                );
            }
            let (TunnelKind::Manual(nm), TunnelKind::Manual(om)) = (&n.kind, &o.kind) else {
                // IKE settings take effect when the tunnel next negotiates
                // after a restart; nothing to swap here.
                if format!("{:?}", n.kind) != format!("{:?}", o.kind)
                    || *ike_psk(n) != *ike_psk(o)
                    || ike_cert_files(n) != ike_cert_files(o)
                    || n.replay_window != o.replay_window
                    || n.worker != o.worker
                {
                    return refuse(&format!("tunnel {} (IKE settings)", n.name), restart);
                }
                replaced.push((false, false));
                continue;
            };
            let same_params = nm.cipher == om.cipher && nm.esn == om.esn;
            let in_key_same = *nm.inbound.key == *om.inbound.key;
            let out_key_same = *nm.outbound.key == *om.outbound.key;
            // A new SA under the same inbound key would start with an empty
            // replay window: packets the old window rejected would be
            // accepted again.
            if in_key_same && n.replay_window != o.replay_window {
                return refuse(
                    &format!("tunnel.replay_window in tunnel {}", n.name),
                    "with the same tunnel.inbound.key the replay window's state would be lost and old packets accepted again: change inbound.key with it",
                );
            }
            if in_key_same && n.worker != o.worker {
                return refuse(
                    &format!("tunnel.worker in tunnel {}", n.name),
                    "with the same tunnel.inbound.key the replay window's state would be lost and old packets accepted again: change inbound.key with it",
                );
            }
            // The peer starts a new replay window for a new SPI; sequence
            // numbers under the old key would have to start again at 1,
            // reusing nonces. A new SPI needs a new key.
            if out_key_same && nm.outbound.spi != om.outbound.spi {
                return refuse(
                    &format!("tunnel.outbound.spi in tunnel {}", n.name),
                    "a new outbound SPI needs a new tunnel.outbound.key (sequence numbers restart for the peer, and AEAD nonces must never repeat under a key)",
                );
            }
            let in_changed = !same_params || nm.inbound.spi != om.inbound.spi || !in_key_same;
            let out_changed = !same_params || !out_key_same;
            replaced.push((in_changed, out_changed));
            if !(in_changed || out_changed) {
                continue;
            }
            let out_key = KeyId::of(&nm.outbound.key);
            let last = if out_changed {
                let (last, limit) = seqstore::start(&mut self.seq, out_key);
                staged.push((i as u32, limit));
                last
            } else {
                0
            };
            // No number usable until the reservation is on disk (`reserve`).
            let c = tunnel_sa_changes(&new, i as u32, last, last).expect("a manual tunnel");
            if in_changed {
                changes.extend(ts.inbound.iter().map(|s| SaChange::RemoveInbound(s.id)));
                changes.push(c.inbound);
                summary.push(format!(
                    "{}: inbound SA 0x{:X} -> 0x{:X}",
                    n.name, om.inbound.spi, nm.inbound.spi
                ));
            }
            if out_changed {
                changes.push(c.outbound);
                summary.push(format!(
                    "{}: outbound SA 0x{:X} -> 0x{:X}",
                    n.name, om.outbound.spi, nm.outbound.spi
                ));
            }
        }
        if changes.is_empty() {
            self.config = new;
            let t = self.reload_templates(&templates)?;
            self.sync_early_drop();
            if t.is_empty() {
                return Ok("Reloaded: no SA changed\n".into());
            }
            let text = format!("Reloaded: {}\n", t.join("; "));
            info!("{}", text.trim_end());
            return Ok(text);
        }
        let added = self
            .table
            .apply(changes, self.now.duration_since(self.epoch))
            .map_err(|e| anyhow!("reload refused by the SA table: {e}"))?;
        // `added` lists new SAs in change order: inbound before outbound per tunnel.
        let mut added = added.into_iter();
        for (i, (inc, outc)) in replaced.into_iter().enumerate() {
            let TunnelKind::Manual(m) = &new.tunnels[i].kind else {
                continue;
            };
            let Some(ts) = self.registry.by_index_mut(i as u32) else {
                continue;
            };
            let mut gone = Vec::new();
            if inc {
                gone.extend(ts.inbound.iter().map(|s| s.id));
                ts.inbound = vec![SaSlot {
                    spi: m.inbound.spi,
                    id: added.next().expect("one id per added SA"),
                }];
            }
            if outc {
                gone.extend(ts.outbound.map(|s| s.id));
                ts.outbound = Some(SaSlot {
                    spi: m.outbound.spi,
                    id: added.next().expect("one id per added SA"),
                });
                ts.out_key = Some(KeyId::of(&m.outbound.key));
            }
            ts.worker = new.tunnels[i].worker as u16;
            for id in gone {
                self.registry.forget(id);
            }
        }
        for (i, limit) in staged {
            self.stage_outbound(i, limit);
        }
        self.config = new;
        summary.extend(self.reload_templates(&templates)?);
        self.sync_early_drop();
        let text = format!("Reloaded: {}\n", summary.join("; "));
        info!("{}", text.trim_end());
        Ok(text)
    }

    /// Templates `changed` (indices into the config now in force): their
    /// instances deleted (a DELETE to each peer), the core given their
    /// new settings. One summary line each.
    fn reload_templates(&mut self, changed: &[usize]) -> Result<Vec<String>> {
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let peers = ike_peers(&self.config)?;
        let mut lines = Vec::new();
        for &i in changed {
            let new = peers.iter().find(|p| p.tunnel_index == i as u32).cloned();
            let Some(core) = self.ike.as_mut() else {
                continue;
            };
            let (n, actions) = core.drop_template_instances(self.now, i as u32, new);
            self.ike_actions(actions);
            lines.push(format!(
                "{}: template changed, {n} instance(s) deleted",
                self.config.tunnels[i].name
            ));
        }
        Ok(lines)
    }
}

/// A tunnel's template settings (`peer_range`, `max_peers`), if it is one.
fn ike_template(t: &Tunnel) -> Option<crate::config::IkeTemplate> {
    match &t.kind {
        TunnelKind::Ike(k) => k.template.as_deref().copied(),
        TunnelKind::Manual(_) => None,
    }
}
