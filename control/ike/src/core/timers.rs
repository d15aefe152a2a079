//! Timers: (re)initiation with backoff, retransmission, rekey and expiry
//! of IKE and child SAs, DPD, the request window's queue, limits.

#[allow(unused_imports)]
use super::*;

impl Core {
    /// Whether an IKE SA serves tunnel `p`, so that we need not initiate:
    /// one of ours (in any state), or an authenticated one of the peer's.
    /// A half-open responder SA never counts: anyone can make one with a
    /// spoofed IKE_SA_INIT.
    pub(super) fn served(&self, p: usize) -> bool {
        self.sas.iter().any(|s| {
            s.peer == p && (s.initiator || matches!(s.state, State::Ready | State::Deleting))
        })
    }

    /// The delay before initiating again after `failures` attempts in a
    /// row went unanswered: doubling from [`REINITIATE_DELAY`] up to
    /// [`REINITIATE_MAX`].
    pub(super) fn backoff(failures: u32) -> Duration {
        let d = REINITIATE_DELAY.saturating_mul(1 << failures.saturating_sub(1).min(8));
        d.min(REINITIATE_MAX)
    }

    /// Tear down an IKE SA and its children now.
    pub(super) fn drop_sa(&mut self, i: usize, now: Instant, reinitiate: Option<Duration>) {
        // None of its children takes the tunnel's outbound SA over.
        for c in &mut self.sas[i].children {
            c.deleting = true;
        }
        let spis: Vec<u32> = self.sas[i].children.iter().map(|c| c.spi_in).collect();
        for s in spis {
            self.remove_child(i, s);
        }
        let sa = self.sas.remove(i);
        // SPIs taken for children that never came: the first child's of a
        // handshake that did not finish, an outstanding CREATE_CHILD_SA's.
        if let Some(n) = &sa.neg {
            self.used_spis.remove(&n.child_spi);
        }
        if let Some(Pending {
            sent: Sent::Child { spi_in, .. },
            ..
        }) = &sa.pending
        {
            self.used_spis.remove(spi_in);
        }
        if (sa.state == State::Ready || sa.state == State::Deleting) && !sa.rekeyed {
            self.log(sa.peer, true, "%IKEV2-5-SA_DOWN: SA DOWN");
        }
        let cfg = self.peers[sa.peer].clone();
        let t = &mut self.tunnels[sa.peer];
        if sa.initiator && sa.established.is_none() && reinitiate.is_none() {
            // Our attempt got no IKE SA: back off before the next one.
            t.failures = t.failures.saturating_add(1);
        }
        // Re-initiate only if no other IKE SA serves the tunnel.
        if cfg.initiate && !self.served(sa.peer) {
            let t = &mut self.tunnels[sa.peer];
            let at = now + reinitiate.unwrap_or_else(|| Self::backoff(t.failures));
            t.initiate_at = Some(t.initiate_at.map_or(at, |x| x.min(at)));
        }
        self.retire_if_unused(sa.peer);
    }

    /// At most [`MAX_IKE_SAS_PER_PEER`] established IKE SAs per tunnel: a
    /// peer that authenticates or rekeys again and again loses its oldest
    /// ones, those a rekey already replaced first.
    pub(super) fn limit_ike_sas(&mut self, now: Instant) {
        if self.sas.len() <= MAX_IKE_SAS_PER_PEER {
            return;
        }
        let mut count: HashMap<usize, usize> = HashMap::new();
        for s in self.sas.iter().filter(|s| s.state == State::Ready) {
            *count.entry(s.peer).or_default() += 1;
        }
        for (p, mut n) in count {
            while n > MAX_IKE_SAS_PER_PEER {
                let Some((_, j)) = self
                    .sas
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.peer == p && s.state == State::Ready)
                    .map(|(j, s)| ((!s.rekeyed, s.established), j))
                    .min()
                else {
                    break;
                };
                self.log(
                    p,
                    false,
                    format!("more than {MAX_IKE_SAS_PER_PEER} IKE SAs with the peer; deleting the oldest and its child SAs"),
                );
                self.drop_sa(j, now, None);
                n -= 1;
            }
        }
    }

    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |x: Instant| t = Some(t.map_or(x, |y| y.min(x)));
        for (p, ts) in self.tunnels.iter().enumerate() {
            if let Some(x) = ts.initiate_at
                && !self.stopped
                && !self.served(p)
            {
                at(x);
            }
        }
        for sa in &self.sas {
            if let Some(p) = &sa.pending {
                at(p.next_at);
            }
            if sa.state == State::InitDone {
                at(sa.created + HALF_OPEN_TIMEOUT);
            }
            if sa.state == State::Ready {
                if let Some(r) = sa.rekey_at {
                    at(r);
                }
                if let Some(d) = self.peers[sa.peer].dpd
                    && sa.pending.is_none()
                    && sa.queue.is_empty()
                {
                    at(sa.last_rx + d);
                }
                for c in &sa.children {
                    // (A child waiting for the peer's DELETE of the one it
                    // replaces is not rekeyed before that.)
                    if !c.superseded && !c.deleting && c.pending_out.is_none() {
                        at(c.rekey_at);
                    }
                    if let Some(r) = c.remove_at {
                        at(r);
                    }
                    if !c.superseded && !c.deleting {
                        at(c.expire_at);
                    }
                }
            }
        }
        t
    }

    pub(super) fn timers(&mut self, now: Instant) {
        if std::mem::take(&mut self.fresh) {
            for (t, p) in self.tunnels.iter_mut().zip(&self.peers) {
                if p.initiate {
                    t.initiate_at = Some(now);
                }
            }
        }
        // Initiations: a tunnel with `initiate` and no IKE SA serving it
        // always has one due (half-open responder SAs, which a spoofed
        // IKE_SA_INIT makes, never hold it back).
        for p in 0..self.peers.len() {
            if !self.peers[p].initiate || self.stopped {
                continue;
            }
            if self.served(p) {
                self.tunnels[p].initiate_at = None;
                continue;
            }
            match self.tunnels[p].initiate_at {
                Some(at) if at <= now => {
                    self.tunnels[p].initiate_at = None;
                    self.start_init(p, now, None);
                }
                Some(_) => {}
                None => {
                    let d = Self::backoff(self.tunnels[p].failures);
                    self.tunnels[p].initiate_at = Some(now + d);
                }
            }
        }
        let mut i = 0;
        while i < self.sas.len() {
            if self.sa_timers(i, now) {
                i += 1;
            }
        }
    }

    /// Returns false when the SA at `i` was removed.
    pub(super) fn sa_timers(&mut self, i: usize, now: Instant) -> bool {
        if self.sas[i].state == State::InitDone && now >= self.sas[i].created + HALF_OPEN_TIMEOUT {
            let (from, p) = (self.sas[i].remote.ip(), self.sas[i].peer);
            self.log_noise(
                now,
                from,
                Noise::HalfOpen,
                Some(p),
                "half-open IKE SA timed out (no IKE_AUTH from the peer)",
            );
            self.drop_sa(i, now, None);
            return false;
        }
        // Retransmissions (RFC 7296 2.1, 2.4).
        let dpd_retry = self.peers[self.sas[i].peer].dpd_retry;
        if let Some(p) = &mut self.sas[i].pending
            && p.next_at <= now
        {
            p.tries += 1;
            let dpd = matches!(p.sent, Sent::Dpd);
            let delay = |tries| resend_delay(dpd_retry, dpd, tries);
            if p.tries >= RETRANSMIT.len() {
                let what = match self.sas[i].state {
                    State::InitSent => "no answer to IKE_SA_INIT",
                    State::AuthSent => "no answer to IKE_AUTH",
                    _ => "peer dead: no answer",
                };
                let total: Duration = (0..RETRANSMIT.len()).map(delay).sum();
                self.log(
                    self.sas[i].peer,
                    false,
                    format!("{what} after {} retransmissions ({} s); deleting the IKE SA and its child SAs", RETRANSMIT.len() - 1, total.as_secs()),
                );
                self.no_answer(i);
                let refused = self.sas[i].neg.as_ref().is_some_and(|n| n.refused);
                self.drop_sa(i, now, if refused { Some(FAILED_RETRY) } else { None });
                return false;
            }
            p.next_at = now + delay(p.tries);
            self.stats.retransmissions += 1;
            let data = p.data.clone();
            let (local, remote) = (self.sas[i].local, self.sas[i].remote);
            self.send_all(local, remote, &data);
        }
        self.sas[i].reasm.expire(now);
        if self.sas[i].state != State::Ready {
            return true;
        }
        if self.sas[i].rekeyed {
            if self.sas[i].rekey_at.is_some_and(|t| t <= now) {
                self.drop_sa(i, now, None);
                return false;
            }
            return true;
        }
        let cfg = self.peers[self.sas[i].peer].clone();
        // Children: grace removals, deferred outbound fallbacks, rekeys.
        let mut j = 0;
        while j < self.sas[i].children.len() {
            let c = &self.sas[i].children[j];
            if c.remove_at.is_some_and(|t| t <= now) {
                let spi = c.spi_in;
                self.remove_child(i, spi);
                continue;
            }
            if c.pending_out.is_some() && c.expire_at <= now {
                // Never told to switch: the SA is not used; drop it.
                let spi = c.spi_in;
                self.remove_child(i, spi);
                continue;
            }
            if !c.superseded && !c.deleting && c.pending_out.is_none() && c.expire_at <= now {
                // The hard lifetime passed and no rekey got through: the
                // keys must not be used longer (RFC 7296 2.8).
                let spi = c.spi_in;
                self.log(
                    self.sas[i].peer,
                    false,
                    format!("child SA (inbound SPI 0x{spi:08x}) reached its lifetime without a rekey; deleting it and negotiating a new one"),
                );
                self.remove_child(i, spi);
                self.sas[i]
                    .queue
                    .retain(|w| !matches!(w, Work::RekeyChild(s) if *s == spi));
                self.sas[i].enqueue(Work::DeleteChildren(vec![spi]));
                self.sas[i].enqueue(Work::NewChild);
                continue;
            }
            if !c.superseded && !c.deleting && c.pending_out.is_none() && c.rekey_at <= now {
                let spi = c.spi_in;
                let retry = now + self.jitter(REKEY_RETRY, 500, 1500);
                self.sas[i].children[j].rekey_at = retry;
                if !self.sas[i]
                    .queue
                    .iter()
                    .any(|w| matches!(w, Work::RekeyChild(s) if *s == spi))
                {
                    self.sas[i].queue.push_back(Work::RekeyChild(spi));
                }
            }
            j += 1;
        }
        if let Some(r) = self.sas[i].rekey_at
            && r <= now
            && !self.sas[i].rekeyed
        {
            self.sas[i].rekey_at = Some(now + self.jitter(REKEY_RETRY, 500, 1500));
            if !self.sas[i]
                .queue
                .iter()
                .any(|w| matches!(w, Work::RekeyIke))
            {
                self.sas[i].queue.push_back(Work::RekeyIke);
            }
        }
        if let Some(d) = cfg.dpd
            && now >= self.sas[i].last_rx + d
            && self.sas[i].pending.is_none()
            && self.sas[i].queue.is_empty()
        {
            self.sas[i].queue.push_back(Work::Dpd);
        }
        true
    }

    /// Send queued requests where the window is free.
    pub(super) fn kick(&mut self, now: Instant) {
        for i in 0..self.sas.len() {
            while self.sas[i].pending.is_none()
                && matches!(self.sas[i].state, State::Ready | State::Deleting)
            {
                let Some(w) = self.sas[i].queue.pop_front() else {
                    break;
                };
                self.start_work(i, now, w);
            }
        }
    }

    pub(super) fn start_work(&mut self, i: usize, now: Instant, w: Work) {
        match w {
            Work::NewChild => self.start_child(i, now, None, None, 0),
            Work::RekeyChild(s) => self.start_child(i, now, Some(s), None, 0),
            Work::ChildWithGroup {
                rekey,
                group,
                retries,
            } => self.start_child(i, now, rekey, Some(group), retries),
            Work::RekeyIke => {
                let Some(prop) = self.sas[i].prop.clone() else {
                    return;
                };
                let spi = self.random_u64();
                let ni = self.nonce();
                let Ok(dh) = Dh::generate(prop.dh, &*self.rng) else {
                    return;
                };
                let p = vec![
                    proposal::ike_sa_payload(std::slice::from_ref(&prop), Some(spi)),
                    Payload::Nonce(ni.clone()),
                    Payload::Ke {
                        group: prop.dh.id(),
                        data: dh.public().to_vec(),
                    },
                ];
                self.send_request(
                    i,
                    now,
                    wire::CREATE_CHILD_SA,
                    &p,
                    Sent::Ike {
                        spi,
                        ni,
                        dh: Some(dh),
                        prop,
                    },
                );
            }
            Work::DeleteChildren(spis) => {
                let p = vec![Payload::Delete(DeleteRepr::Esp(spis.clone()))];
                self.send_request(i, now, wire::INFORMATIONAL, &p, Sent::DeleteChildren(spis));
            }
            Work::DeleteIke => {
                self.sas[i].state = State::Deleting;
                let p = vec![Payload::Delete(DeleteRepr::Ike)];
                self.send_request(i, now, wire::INFORMATIONAL, &p, Sent::DeleteIke);
            }
            Work::Dpd => self.send_request(i, now, wire::INFORMATIONAL, &[], Sent::Dpd),
            Work::InvalidSpi(spi) => {
                let p = vec![Payload::Notify(NotifyRepr {
                    protocol: wire::PROTO_ESP,
                    spi: vec![],
                    ty: notify::INVALID_SPI,
                    data: spi.to_be_bytes().to_vec(),
                })];
                self.send_request(i, now, wire::INFORMATIONAL, &p, Sent::InvalidSpi);
            }
        }
    }
}

/// How long after its `tries`-th sending (0: the first) a pending request
/// is sent again (or, after the last, given up): the tunnel's `dpd_retry`
/// for a liveness check (`dpd`) when it has one, else [`RETRANSMIT`].
pub(super) fn resend_delay(dpd_retry: Option<Duration>, dpd: bool, tries: usize) -> Duration {
    match dpd_retry {
        Some(r) if dpd => r,
        _ => RETRANSMIT[tries],
    }
}
