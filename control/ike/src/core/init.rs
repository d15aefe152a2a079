//! IKE_SA_INIT (RFC 7296 1.2): the initiator's request and the
//! responder's answer, cookies (2.6), INVALID_KE_PAYLOAD (1.2) and NAT
//! detection (2.23).

#[allow(unused_imports)]
use super::*;

impl Core {
    pub(super) fn start_init(&mut self, p: usize, now: Instant, group: Option<DhGroup>) {
        let cfg = self.peers[p].clone();
        let Some(first) = cfg.ike_proposals.first() else {
            self.log(p, false, "no IKE proposals configured; not initiating");
            return;
        };
        let group = group.unwrap_or(first.dh);
        let id = self.next_id;
        self.next_id += 1;
        let child_spi = self.alloc_spi();
        let sa = IkeSa {
            id,
            peer: p,
            initiator: true,
            spi_i: self.random_u64(),
            spi_r: 0,
            state: State::InitSent,
            local: SocketAddr::new(cfg.local, crate::IKE_PORT),
            remote: SocketAddr::new(cfg.remote, crate::IKE_PORT),
            prop: None,
            keys: None,
            nat: false,
            created: now,
            established: None,
            rekey_at: None,
            next_req_id: 0,
            peer_req_id: 0,
            pending: None,
            queue: VecDeque::new(),
            last_response: None,
            frag: false,
            reasm: frag::Reassembler::default(),
            last_rx: now,
            children: Vec::new(),
            neg: Some(Neg {
                dh: None,
                ni: Vec::new(),
                nr: Vec::new(),
                init_req: Vec::new(),
                init_resp: Vec::new(),
                cookie: None,
                child_spi,
                ke_retries: 0,
                refused: false,
                respins: 0,
                peer_hashes: Vec::new(),
            }),
            rekeyed: false,
            auth_sign: credentials::configured_auth(&cfg),
            auth_verify: credentials::configured_auth(&cfg),
            last_invalid_spi: None,
            peer_ike_rekey: None,
        };
        self.sas.push(sa);
        let i = self.sas.len() - 1;
        self.send_init(i, now, group);
        self.log(
            p,
            false,
            format!(
                "initiating IKE SA (IKE_SA_INIT to {}:{})",
                cfg.remote,
                crate::IKE_PORT
            ),
        );
    }

    pub(super) fn send_init(&mut self, i: usize, now: Instant, group: DhGroup) {
        let cfg = self.peers[self.sas[i].peer].clone();
        // Retrying with a COOKIE resends the same Ni and KE (the cookie is
        // bound to Ni, RFC 7296 2.6); a new group needs a new key.
        let reuse = self.sas[i].neg.as_mut().and_then(|n| match &n.dh {
            Some(d) if d.group == group && !n.ni.is_empty() => {
                n.dh.take().map(|d| (d, n.ni.clone()))
            }
            _ => None,
        });
        let (dh, ni) = match reuse {
            Some(x) => x,
            None => {
                let Ok(dh) = Dh::generate(group, &*self.rng) else {
                    return;
                };
                (dh, self.nonce())
            }
        };
        let sa = &self.sas[i];
        let mut p = Vec::new();
        if let Some(c) = sa.neg.as_ref().and_then(|n| n.cookie.clone()) {
            p.push(Self::notify_payload(notify::COOKIE, c));
        }
        p.extend(self.init_body(
            proposal::ike_sa_payload(&cfg.ike_proposals, None),
            group,
            dh.public(),
            &ni,
            (sa.spi_i, 0),
            (sa.local, sa.remote),
            cfg.force_encap,
        ));
        p.extend(Self::cert_init_payloads(&cfg, false));
        if cfg.fragmentation {
            p.push(Self::notify_payload(
                notify::IKEV2_FRAGMENTATION_SUPPORTED,
                vec![],
            ));
        }
        let h = HeaderRepr {
            spi_i: sa.spi_i,
            spi_r: 0,
            exchange: wire::IKE_SA_INIT,
            flags: FLAG_INITIATOR,
            msg_id: 0,
        };
        let data = wire::emit_message(&h, &p);
        let sa = &mut self.sas[i];
        if let Some(n) = &mut sa.neg {
            n.dh = Some(dh);
            n.ni = ni;
            n.init_req = data.clone();
        }
        sa.next_req_id = 1;
        self.send_request_bytes(i, now, 0, vec![data], Sent::Init);
    }

    pub(super) fn init_response(
        &mut self,
        i: usize,
        now: Instant,
        m: &Message,
        local: SocketAddr,
        remote: SocketAddr,
        raw: &[u8],
    ) {
        let cfg = self.peers[self.sas[i].peer].clone();
        let p = self.sas[i].peer;
        if let Some(c) = m.notify(notify::COOKIE) {
            // RFC 7296 2.6: retry with the cookie first. But if the
            // request went out more than once, another copy may still
            // reach the responder after it stops asking for cookies, and
            // be the one it answers: the answer does not say which request
            // it answers, and AUTH must sign that one (2.15). So start over
            // once with a new SPI (the cookie is bound to the SPI, and an
            // answer to the old one no longer matches this SA).
            let copies = self.sas[i].pending.as_ref().map_or(1, |p| p.tries + 1);
            let respin = copies > 1 && self.sas[i].neg.as_ref().is_some_and(|n| n.respins == 0);
            let spi = if respin { self.random_u64() } else { 0 };
            let sa = &mut self.sas[i];
            if let Some(n) = &mut sa.neg
                && n.cookie.is_none()
            {
                if respin {
                    n.respins += 1;
                    sa.spi_i = spi;
                } else {
                    n.cookie = Some(c.data.clone());
                }
                let g = n.dh.as_ref().map_or(cfg.ike_proposals[0].dh, |d| d.group);
                self.send_init(i, now, g);
            }
            return;
        }
        if let Some(n) = m.notify(notify::INVALID_KE_PAYLOAD) {
            let want = n
                .data
                .get(..2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .and_then(DhGroup::from_id);
            let tried = self.sas[i].neg.as_ref().map_or(0, |n| n.ke_retries);
            match want {
                Some(g) if cfg.ike_proposals.iter().any(|x| x.dh == g) && tried < 2 => {
                    self.log(p, false, format!("peer asks for DH group {} (INVALID_KE_PAYLOAD); retrying IKE_SA_INIT with it", g.id()));
                    if let Some(n) = &mut self.sas[i].neg {
                        n.ke_retries += 1;
                    }
                    self.send_init(i, now, g);
                }
                _ => self.init_refused(
                    i,
                    "peer asks for a DH group we do not propose (INVALID_KE_PAYLOAD); IKE SA not established",
                    Some(Failure::DhGroup),
                ),
            }
            return;
        }
        if let Some(e) = m.error_notify() {
            let what = if e.ty == notify::NO_PROPOSAL_CHOSEN {
                "NO_PROPOSAL_CHOSEN: no IKE proposal acceptable to the peer".to_string()
            } else {
                format!("error notify {}", e.ty)
            };
            self.init_refused(
                i,
                format!("IKE_SA_INIT refused by the peer ({what}); IKE SA not established"),
                Some(Failure::Refused { notify: e.ty }),
            );
            return;
        }
        let Some((props, group, ke, nr)) =
            self.init_payloads(now, m, remote, p, "IKE_SA_INIT response")
        else {
            return;
        };
        if m.header.spi_r == 0 {
            return;
        }
        let Some(prop) = Self::accepted_ike(&cfg.ike_proposals, props) else {
            self.init_refused(
                i,
                "peer chose an IKE proposal we did not offer; IKE SA not established",
                None,
            );
            return;
        };
        let Some(ours) = self.sas[i].neg.as_ref().and_then(|n| n.dh.as_ref()) else {
            return;
        };
        if ours.group.id() != group || prop.dh != ours.group || ke.len() != ours.group.ke_len() {
            self.init_refused(
                i,
                "peer's KE group differs from the chosen proposal; IKE SA not established",
                None,
            );
            return;
        }
        let Some(dh) = self.sas[i].neg.as_mut().and_then(|n| n.dh.take()) else {
            return;
        };
        let Ok(shared) = dh.agree(ke) else {
            // Our key is spent (an invalid point is only found by using
            // it): start over at once with a new IKE SA rather than wait
            // (an answer forged with our SPI, from on the path, costs a
            // retry, never the tunnel).
            self.log_noise(
                now,
                remote.ip(),
                Noise::Malformed,
                Some(p),
                "peer's KE payload is invalid; starting over with a new IKE SA",
            );
            self.drop_sa(i, now, Some(Duration::ZERO));
            return;
        };
        let spi_r = m.header.spi_r;
        let sa = &mut self.sas[i];
        sa.spi_r = spi_r;
        sa.frag = cfg.fragmentation && m.notify(notify::IKEV2_FRAGMENTATION_SUPPORTED).is_some();
        let neg = sa.neg.as_mut().expect("checked above");
        neg.nr = nr;
        neg.init_resp = raw.to_vec();
        neg.peer_hashes = Self::peer_hashes(m);
        sa.keys = Some(init_keys(&prop, &neg.ni, &neg.nr, &shared, sa.spi_i, spi_r));
        sa.prop = Some(prop);
        sa.pending = None;
        sa.nat = cfg.force_encap || Self::nat_detected(m, sa.spi_i, spi_r, local, remote);
        if sa.nat {
            // RFC 7296 2.23: move to the NAT-T port from IKE_AUTH on.
            sa.local = Self::ike_port_addr(&cfg, cfg.local, true);
            sa.remote = Self::ike_port_addr(&cfg, remote.ip(), true);
        }
        self.send_auth(i, now);
    }

    /// An answer to our IKE_SA_INIT we cannot use. It is unauthenticated:
    /// a forged or damaged answer must not end the exchange (RFC 7296
    /// 2.21.1). Keep retransmitting and waiting for a valid answer, give
    /// up when the retransmissions end (then retry after
    /// [`FAILED_RETRY`]); the line is logged once per exchange, with
    /// `failure`'s event where it is a refusal of the setup.
    pub(super) fn init_refused(
        &mut self,
        i: usize,
        line: impl std::fmt::Display,
        failure: Option<Failure>,
    ) {
        let first = self.sas[i]
            .neg
            .as_mut()
            .is_some_and(|n| !std::mem::replace(&mut n.refused, true));
        if first {
            self.log(self.sas[i].peer, false, line);
            if let Some(f) = failure {
                self.event(i, TunnelEvent::Failure(f));
            }
        }
    }

    pub(super) fn init_request(
        &mut self,
        now: Instant,
        m: &Message,
        local: SocketAddr,
        remote: SocketAddr,
        raw: &[u8],
    ) {
        // A retransmitted IKE_SA_INIT: answer from the cache, only to
        // the address and port the original came from, and only for the
        // very same message.
        if let Some(sa) = self
            .sas
            .iter()
            .find(|s| !s.initiator && s.spi_i == m.header.spi_i && s.remote.ip() == remote.ip())
        {
            if let Some((0, data, l, r)) = &sa.last_response
                && *r == remote
                && l.port() == local.port()
                && sa.neg.as_ref().is_some_and(|n| n.init_req == raw)
            {
                let (l, r, d) = (*l, *r, data.clone());
                self.send_all(l, r, &d);
            }
            return;
        }
        let Some(p) = self.tunnel_for(remote.ip()) else {
            self.log_noise(
                now,
                remote.ip(),
                Noise::UnknownPeer,
                None,
                format!("IKE_SA_INIT from {remote}: no tunnel has this peer; ignored"),
            );
            return;
        };
        let cfg = self.peers[p].clone();
        let h = |spi_r: u64| HeaderRepr {
            spi_i: m.header.spi_i,
            spi_r,
            exchange: wire::IKE_SA_INIT,
            flags: FLAG_RESPONSE,
            msg_id: 0,
        };
        if self.template_full(p) {
            // A new peer of a full template: refused before any state or
            // DH computation (and again at IKE_AUTH, for peers that were
            // half-open when the last slot went).
            self.log_noise(
                now,
                remote.ip(),
                Noise::TemplateRefused,
                Some(p),
                format!(
                    "IKE_SA_INIT from {remote}: max_peers instances up; answered NO_ADDITIONAL_SAS"
                ),
            );
            let d = wire::emit_message(
                &h(0),
                &[Self::notify_payload(notify::NO_ADDITIONAL_SAS, vec![])],
            );
            self.send(local, remote, d);
            return;
        }
        let Some((props, group, ke, ni)) = self.init_payloads(now, m, remote, p, "IKE_SA_INIT")
        else {
            return;
        };
        let Some((num, prop)) = Self::select_ike(&cfg.ike_proposals, props) else {
            self.log_noise(
                now,
                remote.ip(),
                Noise::InitRefused,
                Some(p),
                "IKE_SA_INIT: no proposal of the peer is acceptable; answered NO_PROPOSAL_CHOSEN",
            );
            let d = wire::emit_message(
                &h(0),
                &[Self::notify_payload(notify::NO_PROPOSAL_CHOSEN, vec![])],
            );
            self.send(local, remote, d);
            return;
        };
        if group != prop.dh.id() {
            // RFC 7296 1.2: ask for the group of the chosen proposal.
            self.log_noise(
                now,
                remote.ip(),
                Noise::InitRefused,
                Some(p),
                format!(
                    "IKE_SA_INIT with DH group {group}; asked for group {} (INVALID_KE_PAYLOAD)",
                    prop.dh.id()
                ),
            );
            let d = wire::emit_message(
                &h(0),
                &[Self::notify_payload(
                    notify::INVALID_KE_PAYLOAD,
                    prop.dh.id().to_be_bytes().to_vec(),
                )],
            );
            self.send(local, remote, d);
            return;
        }
        // Half-open SAs are unauthenticated state: hard caps per peer and
        // in all, and under load a cookie first, before spending a DH
        // computation or any state (RFC 7296 2.6).
        let half_open = self
            .sas
            .iter()
            .filter(|s| s.state == State::InitDone)
            .count();
        // A template's half-open SAs are many peers': counted per address.
        let template = self.is_template(p);
        let half_open_peer = self
            .sas
            .iter()
            .filter(|s| {
                s.state == State::InitDone
                    && s.peer == p
                    && (!template || s.remote.ip() == remote.ip())
            })
            .count();
        if half_open >= HALF_OPEN_MAX || half_open_peer >= HALF_OPEN_MAX_PER_PEER {
            self.log_noise(
                now,
                remote.ip(),
                Noise::InitRefused,
                Some(p),
                format!("IKE_SA_INIT dropped: {half_open_peer} half-open IKE SA(s) of this peer, {half_open} in all (limits {HALF_OPEN_MAX_PER_PEER} and {HALF_OPEN_MAX})"),
            );
            return;
        }
        if half_open >= COOKIE_THRESHOLD || half_open_peer >= HALF_OPEN_COOKIE_PER_PEER {
            let want = self.cookie(&ni, remote.ip(), m.header.spi_i);
            if m.notify(notify::COOKIE)
                .is_none_or(|c| !ring_eq(&c.data, &want))
            {
                let d = wire::emit_message(&h(0), &[Self::notify_payload(notify::COOKIE, want)]);
                self.send(local, remote, d);
                return;
            }
        }
        let Ok(dh) = Dh::generate(prop.dh, &*self.rng) else {
            return;
        };
        let public = dh.public().to_vec();
        let Ok(shared) = dh.agree(ke) else {
            self.log_noise(
                now,
                remote.ip(),
                Noise::Malformed,
                Some(p),
                "IKE_SA_INIT with an invalid KE payload; ignored",
            );
            return;
        };
        let spi_r = self.random_u64();
        let spi_i = m.header.spi_i;
        let nr = self.nonce();
        let nat = cfg.force_encap || Self::nat_detected(m, spi_i, 0, local, remote);
        let mut sa_prop = proposal::ike_sa_payload(std::slice::from_ref(&prop), None);
        if let Payload::Sa(ps) = &mut sa_prop {
            ps[0].num = num;
        }
        let mut pl = self.init_body(
            sa_prop,
            prop.dh,
            &public,
            &nr,
            (spi_i, spi_r),
            (local, remote),
            cfg.force_encap,
        );
        pl.extend(Self::cert_init_payloads(&cfg, true));
        // RFC 7383 2.3: announced only to an initiator that announced it.
        let frag = cfg.fragmentation && m.notify(notify::IKEV2_FRAGMENTATION_SUPPORTED).is_some();
        if frag {
            pl.push(Self::notify_payload(
                notify::IKEV2_FRAGMENTATION_SUPPORTED,
                vec![],
            ));
        }
        let resp = wire::emit_message(&h(spi_r), &pl);
        let keys = init_keys(&prop, &ni, &nr, &shared, spi_i, spi_r);
        let id = self.next_id;
        self.next_id += 1;
        self.sas.push(IkeSa {
            id,
            peer: p,
            initiator: false,
            spi_i,
            spi_r,
            state: State::InitDone,
            local,
            remote,
            prop: Some(prop),
            keys: Some(keys),
            nat,
            created: now,
            established: None,
            rekey_at: None,
            next_req_id: 0,
            peer_req_id: 1,
            pending: None,
            queue: VecDeque::new(),
            last_response: Some((0, vec![resp.clone()], local, remote)),
            frag,
            reasm: frag::Reassembler::default(),
            last_rx: now,
            children: Vec::new(),
            neg: Some(Neg {
                dh: None,
                ni,
                nr,
                init_req: raw.to_vec(),
                init_resp: resp.clone(),
                cookie: None,
                child_spi: 0,
                ke_retries: 0,
                refused: false,
                respins: 0,
                peer_hashes: Self::peer_hashes(m),
            }),
            rekeyed: false,
            auth_sign: credentials::configured_auth(&cfg),
            auth_verify: credentials::configured_auth(&cfg),
            last_invalid_spi: None,
            peer_ike_rekey: None,
        });
        self.send(local, remote, resp);
        if self.sas.iter().any(|s| {
            s.peer == p && s.initiator && matches!(s.state, State::InitSent | State::AuthSent)
        }) {
            // RFC 7296 2.21.1: nothing before authentication may end an
            // exchange; an IKE_SA_INIT with the peer's address may be
            // anyone's. Both exchanges go on; settle_duplicates decides
            // once the peer's has authenticated.
            self.log_noise(
                now,
                remote.ip(),
                Noise::HalfOpen,
                Some(p),
                "simultaneous initiation: answering the peer's IKE_SA_INIT; ours goes on too (the tie is settled once the peer's authenticates)",
            );
        }
    }

    /// The SA, KE and Nonce payloads every IKE_SA_INIT request and
    /// response carries (RFC 7296 1.2): (proposals, KE group, KE data,
    /// nonce). Without one, or with a nonce of the wrong size (2.10):
    /// None, logged as `{what} without SA, KE or Nonce; ignored`.
    pub(super) fn init_payloads<'m>(
        &mut self,
        now: Instant,
        m: &'m Message,
        remote: SocketAddr,
        p: usize,
        what: &str,
    ) -> Option<InitPayloads<'m>> {
        let (Some(props), Some((group, ke)), Some(nonce)) = (m.sa(), m.ke(), m.nonce()) else {
            self.log_noise(
                now,
                remote.ip(),
                Noise::Malformed,
                Some(p),
                format!("{what} without SA, KE or Nonce; ignored"),
            );
            return None;
        };
        if !(16..=256).contains(&nonce.len()) {
            return None;
        }
        Some((props, group, ke, nonce.to_vec()))
    }

    /// The body of an IKE_SA_INIT request or response: `sa`, our KE
    /// (`group`, `public`) and nonce, the NAT detection notifies (`spis` (SPIi, SPIr), `addrs`
    /// (ours, the peer's)).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn init_body(
        &self,
        sa: Payload,
        group: DhGroup,
        public: &[u8],
        nonce: &[u8],
        spis: (u64, u64),
        addrs: (SocketAddr, SocketAddr),
        force_encap: bool,
    ) -> Vec<Payload> {
        let mut p = vec![
            sa,
            Payload::Ke {
                group: group.id(),
                data: public.to_vec(),
            },
            Payload::Nonce(nonce.to_vec()),
        ];
        p.extend(self.nat_payloads(spis.0, spis.1, addrs.0, addrs.1, force_encap));
        p
    }

    /// Cookie = 0 (secret version) | HMAC-SHA256(secret, Ni | IPi | SPIi).
    pub(super) fn cookie(&self, ni: &[u8], ip: IpAddr, spi_i: u64) -> Vec<u8> {
        let mut c = ring::hmac::Context::with_key(&self.cookie_secret);
        c.update(ni);
        match ip {
            IpAddr::V4(a) => c.update(&a.octets()),
            IpAddr::V6(a) => c.update(&a.octets()),
        }
        c.update(&spi_i.to_be_bytes());
        let mut v = vec![0u8];
        v.extend_from_slice(c.sign().as_ref());
        v
    }
}

/// The IKE SA's keys from IKE_SA_INIT (RFC 7296 2.14), the same on both
/// sides.
fn init_keys(
    prop: &IkeProposal,
    ni: &[u8],
    nr: &[u8],
    shared: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> IkeKeys {
    let seed = crypto::skeyseed(prop.prf, ni, nr, shared);
    IkeKeys::derive(prop, &seed, ni, nr, spi_i, spi_r)
}

/// An IKE_SA_INIT's (proposals, KE group, KE data, nonce).
type InitPayloads<'m> = (&'m [ProposalRepr], u16, &'m [u8], Vec<u8>);
