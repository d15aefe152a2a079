//! IKE_AUTH (RFC 7296 1.2, 2.15): authentication of both ends and the
//! first child SA; an IKE SA becoming established, duplicate IKE SAs.
//! The authentication payloads themselves (PSK or certificate) are
//! `credentials.rs`'s.

#[allow(unused_imports)]
use super::*;

impl Core {
    pub(super) fn send_auth(&mut self, i: usize, now: Instant) {
        let cfg = self.peers[self.sas[i].peer].clone();
        let Some(mut p) = self.own_auth_payloads(i, &cfg) else {
            return;
        };
        let sa = &self.sas[i];
        let Some(neg) = sa.neg.as_ref() else {
            return;
        };
        // INITIAL_CONTACT: the peer may drop IKE SAs left from our past
        // (only when we have no other established one with it).
        let peer = sa.peer;
        if !self
            .sas
            .iter()
            .any(|s| s.peer == peer && s.state == State::Ready)
        {
            p.push(Self::notify_payload(notify::INITIAL_CONTACT, vec![]));
        }
        p.push(proposal::esp_sa_payload(
            &cfg.esp_proposals,
            neg.child_spi,
            false,
        ));
        p.extend(Self::ts_payloads(&cfg.local_ts, &cfg.remote_ts, true));
        self.sas[i].state = State::AuthSent;
        self.send_request(i, now, wire::IKE_AUTH, &p, Sent::Auth);
    }

    pub(super) fn auth_response(&mut self, i: usize, now: Instant, m: &Message) {
        let p = self.sas[i].peer;
        let cfg = self.peers[p].clone();
        if m.notify(notify::AUTHENTICATION_FAILED).is_some() {
            let check = if cfg.cert.is_some() {
                "our certificate (is its CA in the peer's trust?), its validity and local_id"
            } else {
                "the pre-shared key and local_id"
            };
            self.log(p, false, format!("authentication failed: peer refused our authentication (AUTHENTICATION_FAILED): check {check}"));
            self.event(i, TunnelEvent::Failure(Failure::Authentication));
            self.drop_sa(i, now, Some(FAILED_RETRY));
            return;
        }
        let idr = m.id_r().map(|(t, d)| (t, d.to_vec()));
        let auth = m.auth().map(|(t, d)| (t, d.to_vec()));
        let (Some((idt, idd)), Some((am, ad))) = (idr, auth) else {
            let e = m.error_notify().map(|n| n.ty).unwrap_or(0);
            self.log(p, false, format!("IKE_AUTH answered without IDr or AUTH (error notify {e}); IKE SA not established"));
            self.event(i, TunnelEvent::Failure(Failure::Refused { notify: e }));
            self.drop_sa(i, now, Some(FAILED_RETRY));
            return;
        };
        let verdict = if credentials::id_matches(&cfg.remote_id, idt, &idd) {
            let Some(v) = self.peer_auth(i, &cfg, m, (idt, &idd), (am, &ad)) else {
                return;
            };
            v
        } else {
            Err(format!(
                "peer identity {} is not the configured remote_id {}",
                id_text(idt, &idd),
                ident_text(&cfg.remote_id)
            ))
        };
        match verdict {
            Err(why) => {
                // RFC 7296 2.21.2: tell the peer with an INFORMATIONAL.
                self.initiator_auth_failed(i, now, &cfg, &why);
                return;
            }
            Ok(Some(line)) => self.log(p, false, line),
            Ok(None) => {}
        }
        self.established(i, now);
        // The first child.
        if let Some(e) = m.error_notify() {
            let why = match e.ty {
                notify::TS_UNACCEPTABLE => {
                    "TS_UNACCEPTABLE: the peer does not accept our traffic selectors".to_string()
                }
                notify::NO_PROPOSAL_CHOSEN => {
                    "NO_PROPOSAL_CHOSEN: no ESP proposal acceptable to the peer".to_string()
                }
                t => format!("error notify {t}"),
            };
            self.log(
                p,
                false,
                format!("first child SA refused by the peer ({why})"),
            );
            self.event(i, TunnelEvent::Failure(Failure::Refused { notify: e.ty }));
            return;
        }
        let child_spi = self.sas[i].neg.as_ref().map_or(0, |n| n.child_spi);
        let (ni, nr) = {
            let n = self.sas[i].neg.as_ref().expect("checked");
            (n.ni.clone(), n.nr.clone())
        };
        self.sas[i].neg = None;
        self.finish_child(
            i,
            now,
            m,
            child_spi,
            &ni,
            &nr,
            None,
            None,
            &cfg.esp_proposals,
            false,
        );
    }

    pub(super) fn established(&mut self, i: usize, now: Instant) {
        let cfg = self.peers[self.sas[i].peer].clone();
        let rekey_at = now + self.jitter(cfg.ike_lifetime, REKEY_SOFT_MIN, REKEY_SOFT_MAX);
        let sa = &mut self.sas[i];
        sa.state = State::Ready;
        sa.established = Some(now);
        sa.rekey_at = Some(rekey_at);
        let sa = &self.sas[i];
        let prop = sa.prop.clone();
        let (role, spi_i, spi_r, nat) = (
            if sa.initiator {
                "initiator"
            } else {
                "responder"
            },
            sa.spi_i,
            sa.spi_r,
            sa.nat,
        );
        let (l, r) = (sa.local, sa.remote);
        self.log(self.sas[i].peer, true, "%IKEV2-5-SA_UP: SA UP");
        if let Some(prop) = prop {
            self.log(
                self.sas[i].peer,
                false,
                format!(
                    "IKE SA established as {role}: {l} <-> {r}, SPIs {spi_i:016x}/{spi_r:016x}, {}{} {} DH group {}{}",
                    prop.encr,
                    prop.integ.map(|x| format!(" {x}")).unwrap_or_default(),
                    prop.prf,
                    prop.dh.id(),
                    if nat { ", NAT-T (UDP encapsulation)" } else { "" }
                ),
            );
        }
        // A newer IKE SA for the same tunnel replaces older ones (e.g. the
        // peer restarted): nothing to do here; they expire by DPD or delete.
        let p = self.sas[i].peer;
        self.tunnels[p].failures = 0;
        self.settle_duplicates(p);
    }

    /// Simultaneous initiation (both sides `initiate`, or a peer that
    /// restarted while we were initiating). RFC 7296 has no tie rule for
    /// initial exchanges and does not forbid two IKE SAs between the same
    /// peers; an IKE_SA_INIT is unauthenticated (anyone can send one with
    /// the peer's address), and nothing unauthenticated may end an
    /// exchange (2.21.1), so both exchanges go on. Only once the peer's
    /// has authenticated (its IKE SA is READY here) does the side with the
    /// higher address give its own up, as 2.8.2 has the initiator of a
    /// redundant SA delete it: an exchange still in IKE_SA_INIT is
    /// forgotten (the peer holds half-open state at most, which times
    /// out); one in IKE_AUTH goes on and is deleted here when it is
    /// established; an established one is deleted now. The side with the
    /// lower address keeps both until the peer deletes its redundant one.
    pub(super) fn settle_duplicates(&mut self, p: usize) {
        let cfg = self.peers[p].clone();
        if addr_key(cfg.local) < addr_key(cfg.remote)
            || !self
                .sas
                .iter()
                .any(|s| s.peer == p && !s.initiator && s.state == State::Ready && !s.rekeyed)
        {
            return;
        }
        let mut k = 0;
        while k < self.sas.len() {
            let s = &self.sas[k];
            if s.peer != p || !s.initiator || s.rekeyed {
                k += 1;
                continue;
            }
            match s.state {
                State::InitSent => {
                    let spi = s.neg.as_ref().map_or(0, |n| n.child_spi);
                    self.log(p, false, "simultaneous initiation: the peer's IKE SA is authenticated and the peer has the lower address; ours (in IKE_SA_INIT) given up");
                    self.used_spis.remove(&spi);
                    self.sas.remove(k);
                    continue;
                }
                State::Ready if !s.queue.iter().any(|w| matches!(w, Work::DeleteIke)) => {
                    self.log(p, false, "simultaneous initiation: the peer's IKE SA is authenticated and the peer has the lower address; deleting ours");
                    self.sas[k].queue.push_back(Work::DeleteIke);
                }
                _ => {}
            }
            k += 1;
        }
    }

    pub(super) fn auth_request(&mut self, i: usize, now: Instant, m: &Message) {
        let mut p = self.sas[i].peer;
        let mut cfg = self.peers[p].clone();
        let msg_id = m.header.msg_id;
        let idi = m.id_i().map(|(t, d)| (t, d.to_vec()));
        let auth = m.auth().map(|(t, d)| (t, d.to_vec()));
        let fail = |s: &mut Core, why: String| {
            let from = s.sas[i].remote.ip();
            s.log_noise(
                now,
                from,
                Noise::AuthFailed,
                Some(p),
                format!("authentication failed: {why}; answered AUTHENTICATION_FAILED"),
            );
            s.event(i, TunnelEvent::Failure(Failure::Authentication));
            s.respond(
                i,
                wire::IKE_AUTH,
                msg_id,
                &[Self::notify_payload(notify::AUTHENTICATION_FAILED, vec![])],
            );
            s.drop_sa(i, now, Some(FAILED_RETRY));
        };
        let (Some((idt, idd)), Some((am, ad))) = (idi, auth) else {
            fail(self, "IKE_AUTH without IDi or AUTH".into());
            return;
        };
        if !self.any_remote_id(p) && !credentials::id_matches(&cfg.remote_id, idt, &idd) {
            fail(
                self,
                format!(
                    "peer identity {} is not the configured remote_id {}",
                    id_text(idt, &idd),
                    ident_text(&cfg.remote_id)
                ),
            );
            return;
        }
        let Some(verdict) = self.peer_auth(i, &cfg, m, (idt, &idd), (am, &ad)) else {
            return;
        };
        match verdict {
            Err(why) => {
                fail(self, why);
                return;
            }
            Ok(Some(line)) => self.log(p, false, line),
            Ok(None) => {}
        }
        if self.is_template(p) {
            // Authenticated: only now may the peer become an instance.
            if let Err((n, why)) = self.instantiate(i, m) {
                let from = self.sas[i].remote;
                self.log_noise(
                    now,
                    from.ip(),
                    Noise::TemplateRefused,
                    Some(p),
                    format!("new peer {from} refused: {why}"),
                );
                self.respond(
                    i,
                    wire::IKE_AUTH,
                    msg_id,
                    &[Self::notify_payload(n, vec![])],
                );
                self.drop_sa(i, now, None);
                return;
            }
            p = self.sas[i].peer;
            cfg = self.peers[p].clone();
        }
        // Our ID, CERT and AUTH.
        let Some(mut out) = self.own_auth_payloads(i, &cfg) else {
            return;
        };
        let Some((ni, nr)) = self.sas[i]
            .neg
            .as_ref()
            .map(|n| (n.ni.clone(), n.nr.clone()))
        else {
            return;
        };
        self.established(i, now);
        self.sas[i].neg = None;
        match self.child_offer(i, m, false, None) {
            Ok((num, spi_out, esp, local_ts, remote_ts)) => {
                let spi_in = self.alloc_spi();
                let Some(keys) = self.child_keys(i, None, &ni, &nr, &esp, spi_in, spi_out, false)
                else {
                    return;
                };
                out.extend(Self::answer_child(
                    num, spi_in, &esp, &local_ts, &remote_ts, false,
                ));
                self.respond(i, wire::IKE_AUTH, msg_id, &out);
                self.install_child(i, now, keys, esp, local_ts, remote_ts, None, false);
            }
            Err(n) => {
                out.push(Self::notify_payload(n, vec![]));
                self.respond(i, wire::IKE_AUTH, msg_id, &out);
            }
        }
        if m.notify(notify::INITIAL_CONTACT).is_some() {
            // RFC 7296 2.4: the peer has no other IKE SA with us (it
            // restarted): ours from before are stale.
            let me = self.sas[i].id;
            while let Some(j) = self
                .sas
                .iter()
                .position(|s| s.peer == p && s.id != me && s.state == State::Ready)
            {
                self.log(p, false, "INITIAL_CONTACT: the peer started afresh; deleting our older IKE SA and its child SAs");
                self.drop_sa(j, now, None);
            }
        }
    }
}

impl Core {
    /// Whether the peer's AUTH payload (`method`, `data`) is the PSK AUTH
    /// (RFC 7296 2.15) over its own signed octets: the initiator's are its
    /// IKE_SA_INIT request, our nonce and SK_pi; the responder's, its
    /// response, our nonce and SK_pr. None when SA `i` has no keys yet.
    pub(super) fn peer_psk_auth_ok(
        &self,
        i: usize,
        psk: &[u8],
        id_body: &[u8],
        method: u8,
        data: &[u8],
    ) -> Option<bool> {
        let (message, nonce, sk_p, prf) = self.auth_inputs(i, false)?;
        let expect = crypto::psk_auth(prf, psk, message, nonce, sk_p, id_body);
        Some(method == crypto::AUTH_PSK && ring_eq(&expect, data))
    }
}
