//! INFORMATIONAL exchanges (RFC 7296 1.4, 1.5): DELETE, DPD, INVALID_SPI;
//! commands from the owner.

#[allow(unused_imports)]
use super::*;

impl Core {
    pub(super) fn informational_request(&mut self, i: usize, now: Instant, m: &Message) {
        let p = self.sas[i].peer;
        let msg_id = m.header.msg_id;
        let mut answer = Vec::new();
        let mut delete_ike = false;
        for pl in &m.payloads {
            match pl {
                Payload::Delete(DeleteRepr::Ike) => delete_ike = true,
                Payload::Delete(DeleteRepr::Esp(spis)) => {
                    let mut ours = Vec::new();
                    for s in spis {
                        let Some(ci) = self.sas[i].children.iter().position(|c| c.spi_out == *s)
                        else {
                            continue;
                        };
                        let c = &self.sas[i].children[ci];
                        let spi_in = c.spi_in;
                        ours.push(spi_in);
                        if c.superseded || c.peer_rekey.is_some() {
                            // The peer finished a rekey of it: switch our
                            // outbound SA to the replacement first, then
                            // keep the old inbound SA for packets in flight.
                            let repl = self.sas[i].children.iter().position(|n| {
                                n.replaces == Some(spi_in) && n.pending_out.is_some()
                            });
                            if let Some(r) = repl
                                && let Some(k) = self.sas[i].children[r].pending_out.take()
                            {
                                self.sas[i].children[r].expire_at =
                                    now + self.peers[p].child_lifetime;
                                self.set_outbound(i, k);
                            }
                            let c = &mut self.sas[i].children[ci];
                            c.superseded = true;
                            c.deleting = true;
                            c.remove_at = Some(now + INBOUND_GRACE);
                        } else {
                            self.log(p, false, format!("peer deleted child SA (inbound SPI 0x{spi_in:08x}, outbound SPI 0x{s:08x})"));
                            self.event(
                                i,
                                TunnelEvent::Removed(Removal::DeletedByPeer { ike: false }),
                            );
                            self.remove_child(i, spi_in);
                        }
                    }
                    if !ours.is_empty() {
                        answer.push(Payload::Delete(DeleteRepr::Esp(ours)));
                    }
                }
                Payload::Notify(n) if n.ty == notify::INVALID_SPI => {
                    let spi = n
                        .data
                        .get(..4)
                        .and_then(|b| <[u8; 4]>::try_from(b).ok())
                        .map(u32::from_be_bytes);
                    if let Some(spi) = spi
                        && let Some(c) = self.sas[i]
                            .children
                            .iter()
                            .find(|c| c.spi_out == spi && !c.superseded)
                    {
                        let spi_in = c.spi_in;
                        self.log(p, false, format!("peer reports our ESP SPI 0x{spi:08x} as invalid (INVALID_SPI); deleting that child SA and negotiating a new one"));
                        self.remove_child(i, spi_in);
                        self.sas[i].enqueue(Work::DeleteChildren(vec![spi_in]));
                        self.sas[i].enqueue(Work::NewChild);
                    }
                }
                _ => {}
            }
        }
        if delete_ike {
            self.respond(i, wire::INFORMATIONAL, msg_id, &[]);
            let me = self.sas[i].id;
            if let Some(j) = self
                .sas
                .iter()
                .position(|s| s.peer_ike_rekey.as_ref().is_some_and(|x| x.2 == me))
            {
                // A simultaneous IKE rekey the peer resolved before the
                // answer to ours reached us (reordered): it deleted the SA
                // of its own exchange, so ours survives. The children go
                // back to the old SA; ours takes them when it completes.
                let children = std::mem::take(&mut self.sas[i].children);
                let work: Vec<Work> = self.sas[i].queue.drain(..).collect();
                self.sas[j].children.extend(children);
                self.sas[j].queue.extend(work);
                self.sas[j].peer_ike_rekey = None;
                self.log(p, false, "simultaneous IKE SA rekey: the peer deleted the new IKE SA of its exchange; ours survives");
                self.sas.remove(i);
                return;
            }
            self.log(p, false, "peer deleted the IKE SA");
            self.event(
                i,
                TunnelEvent::Removed(Removal::DeletedByPeer { ike: true }),
            );
            let re = if self.sas[i].rekeyed {
                None
            } else {
                Some(REINITIATE_DELAY)
            };
            // (The old SA of a rekey: its children moved to the new one,
            // but the peer may have made more on it since.)
            self.drop_sa(i, now, re);
            return;
        }
        self.respond(i, wire::INFORMATIONAL, msg_id, &answer);
    }

    pub(super) fn command(&mut self, now: Instant, c: Command) {
        match c {
            Command::ClearChildSas(peer) => {
                let Some(i) = self.sas.iter().position(|s| {
                    self.peers[s.peer].remote == peer && s.state == State::Ready && !s.rekeyed
                }) else {
                    return;
                };
                let spis: Vec<u32> = self.sas[i].children.iter().map(|c| c.spi_in).collect();
                self.log(
                    self.sas[i].peer,
                    false,
                    format!(
                        "clearing {} child SA(s) on command; negotiating new ones",
                        spis.len()
                    ),
                );
                for s in &spis {
                    self.remove_child(i, *s);
                }
                // The DELETE first (the peer removes its half), then a new child.
                self.sas[i]
                    .queue
                    .retain(|w| !matches!(w, Work::RekeyChild(_)));
                if !spis.is_empty() {
                    self.sas[i].queue.push_front(Work::DeleteChildren(spis));
                }
                // One new child however often the command comes before it
                // is made (a silent peer queued one per command).
                self.sas[i].enqueue(Work::NewChild);
            }
            Command::ClearIkeSas(peer) => {
                self.delete_ike_sas(now, peer, "clearing the IKE SA on command")
            }
            Command::Shutdown => {
                self.stopped = true;
                self.delete_ike_sas(now, None, "the daemon stops: deleting the IKE SA");
            }
        }
    }

    /// A DELETE of IKE SA `i`, fire and forget (the SA goes locally at
    /// once; no retransmission).
    pub(super) fn send_delete_ike(&mut self, i: usize) {
        self.send_info_once(i, &[Payload::Delete(DeleteRepr::Ike)]);
    }

    /// Delete the IKE SAs of `peer` (all with None) and their children
    /// now, telling the peer with a DELETE wherever it may hold the SA
    /// established (ours in IKE_AUTH, or established): fire and forget,
    /// the SA is gone locally at once. Initiators start again at once
    /// (unless stopped).
    pub(super) fn delete_ike_sas(&mut self, now: Instant, peer: Option<IpAddr>, line: &str) {
        let mut i = 0;
        while i < self.sas.len() {
            let p = self.sas[i].peer;
            if peer.is_some_and(|x| self.peers[p].remote != x) {
                i += 1;
                continue;
            }
            self.log(p, false, line);
            if self.sas[i].keys.is_some()
                && matches!(
                    self.sas[i].state,
                    State::AuthSent | State::Ready | State::Deleting
                )
            {
                self.send_delete_ike(i);
            }
            self.drop_sa(i, now, Some(Duration::ZERO));
        }
    }

    /// Tests: start a rekey of the children (or the IKE SA) of `peer` now.
    pub(crate) fn rekey_now(&mut self, now: Instant, peer: IpAddr, ike: bool) -> Vec<Action> {
        for sa in self
            .sas
            .iter_mut()
            .filter(|s| s.state == State::Ready && !s.rekeyed)
        {
            if self.peers[sa.peer].remote != peer {
                continue;
            }
            if ike {
                sa.rekey_at = Some(now);
            } else {
                for c in sa.children.iter_mut().filter(|c| !c.superseded) {
                    c.rekey_at = now;
                }
            }
        }
        self.handle(now, Input::Timer)
    }

    pub(super) fn unknown_spi(&mut self, now: Instant, peer: IpAddr, spi: u32) {
        let Some(i) = self.sas.iter().position(|s| {
            self.peers[s.peer].remote == peer && s.state == State::Ready && !s.rekeyed
        }) else {
            return;
        };
        let cfg = self.peers[self.sas[i].peer].clone();
        if !cfg.invalid_spi_recovery {
            return;
        }
        if self.sas[i]
            .last_invalid_spi
            .is_some_and(|t| now < t + INVALID_SPI_INTERVAL)
        {
            return;
        }
        self.sas[i].last_invalid_spi = Some(now);
        self.log(
            self.sas[i].peer,
            false,
            format!("ESP with unknown SPI 0x{spi:08x}: telling the peer (INVALID_SPI)"),
        );
        self.sas[i].queue.push_back(Work::InvalidSpi(spi));
    }
}
