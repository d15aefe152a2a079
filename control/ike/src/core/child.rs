//! CREATE_CHILD_SA for child SAs (RFC 7296 1.3.1, 1.3.3): new children,
//! child rekeys (with PFS), their keys and installation in the datapath.

#[allow(unused_imports)]
use super::*;

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn child_keys(
        &self,
        i: usize,
        shared: Option<&[u8]>,
        ni: &[u8],
        nr: &[u8],
        esp: &EspProposal,
        spi_in: u32,
        spi_out: u32,
        we_initiated: bool,
    ) -> Option<(ChildKeys, ChildKeys)> {
        let keys = self.sas[i].keys.as_ref()?;
        let (i2r, r2i) = crypto::child_keymat(
            keys.prop.prf,
            &keys.sk_d,
            shared,
            ni,
            nr,
            esp.encr,
            esp.integ,
        );
        let (inb, outb) = if we_initiated { (r2i, i2r) } else { (i2r, r2i) };
        Some((
            ChildKeys {
                spi: spi_in,
                encr: esp.encr,
                integ: esp.integ,
                key: inb,
            },
            ChildKeys {
                spi: spi_out,
                encr: esp.encr,
                integ: esp.integ,
                key: outb,
            },
        ))
    }

    /// Install a child: inbound first, then outbound unless deferred.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn install_child(
        &mut self,
        i: usize,
        now: Instant,
        keys: (ChildKeys, ChildKeys),
        esp: EspProposal,
        local_ts: Vec<Prefix>,
        remote_ts: Vec<Prefix>,
        replaces: Option<u32>,
        defer_out: bool,
    ) {
        let cfg = self.peers[self.sas[i].peer].clone();
        let encap = self.encap(&self.sas[i]);
        let (inb, outb) = keys;
        let (spi_in, spi_out) = (inb.spi, outb.spi);
        self.out.push(Action::AddInbound {
            tunnel: cfg.tunnel_index,
            peer: cfg.remote,
            encap,
            keys: inb,
            replay_window: cfg.replay_window,
            local_ts: local_ts.clone(),
            remote_ts: remote_ts.clone(),
            lifetime: cfg.child_lifetime,
        });
        let out_keys = outb.clone();
        let mut pending_out = None;
        if defer_out {
            pending_out = Some(outb);
        } else {
            self.set_outbound(i, outb);
        }
        let rekey_at = now + self.jitter(cfg.child_lifetime, REKEY_SOFT_MIN, REKEY_SOFT_MAX);
        self.sas[i].children.push(Child {
            spi_in,
            spi_out,
            esp: esp.clone(),
            local_ts,
            remote_ts,
            rekey_at,
            expire_at: now + cfg.child_lifetime,
            superseded: false,
            deleting: false,
            pending_out,
            replaces,
            remove_at: None,
            outbound: !defer_out,
            peer_rekey: None,
            out_keys,
        });
        let what = if replaces.is_some() {
            "rekeyed"
        } else {
            "established"
        };
        self.log(
            self.sas[i].peer,
            false,
            format!(
                "child SA {what}: inbound SPI 0x{spi_in:08x}, outbound SPI 0x{spi_out:08x}, {}{}",
                esp.encr,
                esp.integ.map(|x| format!(" {x}")).unwrap_or_default()
            ),
        );
    }

    pub(super) fn set_outbound(&mut self, i: usize, outb: ChildKeys) {
        let cfg = self.peers[self.sas[i].peer].clone();
        let encap = self.encap(&self.sas[i]);
        let spi = outb.spi;
        // One outbound SA per tunnel, whichever IKE SA made it.
        let peer = self.sas[i].peer;
        for sa in self.sas.iter_mut().filter(|s| s.peer == peer) {
            for c in &mut sa.children {
                c.outbound = false;
            }
        }
        if let Some(c) = self.sas[i].children.iter_mut().find(|c| c.spi_out == spi) {
            c.outbound = true;
        }
        self.out.push(Action::SetOutbound {
            tunnel: cfg.tunnel_index,
            peer: cfg.remote,
            encap,
            keys: outb,
            lifetime: cfg.child_lifetime,
        });
    }

    /// Remove a child's SAs from the datapath now.
    pub(super) fn remove_child(&mut self, i: usize, spi_in: u32) {
        let tunnel = self.peers[self.sas[i].peer].tunnel_index;
        let Some(pos) = self.sas[i].children.iter().position(|c| c.spi_in == spi_in) else {
            return;
        };
        let c = self.sas[i].children.remove(pos);
        self.out.push(Action::RemoveInbound {
            tunnel,
            spi: c.spi_in,
        });
        self.used_spis.remove(&c.spi_in);
        if c.outbound {
            // Its outbound SA was the tunnel's (a rekey would have moved
            // the flag to the replacement). Another live child of the
            // tunnel (of a duplicate IKE SA: simultaneous initiation) takes
            // over; else the tunnel has none now.
            let peer = self.sas[i].peer;
            let other = self.sas.iter().enumerate().rev().find_map(|(j, s)| {
                if s.peer != peer || s.state != State::Ready || s.rekeyed {
                    return None;
                }
                s.children
                    .iter()
                    .rev()
                    .find(|c| !c.superseded && !c.deleting && c.pending_out.is_none())
                    .map(|c| (j, c.out_keys.clone()))
            });
            match other {
                Some((j, keys)) => self.set_outbound(j, keys),
                None => self.out.push(Action::RemoveOutbound { tunnel }),
            }
        }
    }

    /// The ESP proposals for a rekey of a child negotiated as `esp`: that
    /// one first, then the same transforms with each other PFS group of
    /// the configured proposals (so that a peer asking for another group
    /// with INVALID_KE_PAYLOAD, RFC 7296 1.3 and 2.7, finds it offered).
    pub(super) fn rekey_proposals(cfg: &PeerConfig, esp: &EspProposal) -> Vec<EspProposal> {
        let mut v = vec![esp.clone()];
        if esp.dh.is_none() {
            return v;
        }
        for c in &cfg.esp_proposals {
            if c.encr == esp.encr
                && c.integ == esp.integ
                && c.dh.is_some()
                && !v.iter().any(|x| x.dh == c.dh)
            {
                v.push(EspProposal {
                    dh: c.dh,
                    ..esp.clone()
                });
            }
        }
        v
    }

    /// Send a CREATE_CHILD_SA request for a new child (`rekey` None) or a
    /// rekey of the child with inbound SPI `rekey`; `group` overrides the
    /// PFS group of the first proposal (after INVALID_KE_PAYLOAD).
    pub(super) fn start_child(
        &mut self,
        i: usize,
        now: Instant,
        rekey: Option<u32>,
        group: Option<DhGroup>,
        ke_retries: u8,
    ) {
        let cfg = self.peers[self.sas[i].peer].clone();
        let old = rekey.and_then(|s| {
            self.sas[i]
                .children
                .iter()
                .find(|c| c.spi_in == s && !c.superseded && !c.deleting)
        });
        if rekey.is_some() && old.is_none() {
            return;
        }
        let (local_ts, remote_ts, esp_list) = match old {
            Some(c) => (
                c.local_ts.clone(),
                c.remote_ts.clone(),
                Self::rekey_proposals(&cfg, &c.esp),
            ),
            None => (
                cfg.local_ts.clone(),
                cfg.remote_ts.clone(),
                cfg.esp_proposals.clone(),
            ),
        };
        if esp_list.is_empty() {
            self.log(
                self.sas[i].peer,
                false,
                "no ESP proposals configured; no child SA",
            );
            return;
        }
        let spi_in = self.alloc_spi();
        let ni = self.nonce();
        let pfs = esp_list.first().and_then(|e| e.dh);
        // The group the peer asked for, if it is one we offer.
        let pfs = match group {
            Some(g) if pfs.is_some() && esp_list.iter().any(|e| e.dh == Some(g)) => Some(g),
            _ => pfs,
        };
        let dh = match pfs {
            Some(g) => match Dh::generate(g, &*self.rng) {
                Ok(d) => Some(d),
                Err(_) => return,
            },
            None => None,
        };
        let mut p = vec![
            proposal::esp_sa_payload(&esp_list, spi_in, true),
            Payload::Nonce(ni.clone()),
        ];
        if let Some(d) = &dh {
            p.push(Payload::Ke {
                group: d.group.id(),
                data: d.public().to_vec(),
            });
        }
        p.extend(Self::ts_payloads(&local_ts, &remote_ts, true));
        if let Some(s) = rekey {
            p.insert(
                0,
                Payload::Notify(NotifyRepr {
                    protocol: wire::PROTO_ESP,
                    spi: s.to_be_bytes().to_vec(),
                    ty: notify::REKEY_SA,
                    data: vec![],
                }),
            );
        }
        self.send_request(
            i,
            now,
            wire::CREATE_CHILD_SA,
            &p,
            Sent::Child {
                rekey,
                spi_in,
                ni,
                dh,
                offered: esp_list,
                ke_retries,
            },
        );
    }

    /// Initiator side of a child's creation: check the response's SA and
    /// TS, derive and install.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_child(
        &mut self,
        i: usize,
        now: Instant,
        m: &Message,
        spi_in: u32,
        ni: &[u8],
        nr: &[u8],
        shared: Option<&[u8]>,
        replaces: Option<u32>,
        esp_list: &[EspProposal],
        pfs: bool,
    ) -> Option<u32> {
        let p = self.sas[i].peer;
        let props = m.sa();
        let Some((spi_out, esp)) = props.and_then(|x| Self::accepted_esp(esp_list, x, pfs)) else {
            self.log(
                p,
                false,
                "child SA: the peer chose an ESP proposal we did not offer; deleting it",
            );
            self.used_spis.remove(&spi_in);
            self.sas[i].enqueue(Work::DeleteChildren(vec![spi_in]));
            return None;
        };
        let (local_ts, remote_ts) =
            match replaces.and_then(|s| self.sas[i].children.iter().find(|c| c.spi_in == s)) {
                Some(c) => (c.local_ts.clone(), c.remote_ts.clone()),
                None => (
                    self.peers[p].local_ts.clone(),
                    self.peers[p].remote_ts.clone(),
                ),
            };
        // Narrowing of what we offered is refused (the datapath's policy
        // is the configured subnets).
        let tsi = m.ts_i().map(<[_]>::to_vec);
        let tsr = m.ts_r().map(<[_]>::to_vec);
        let want_i: Vec<TsRepr> = local_ts.iter().map(|x| TsRepr::from_prefix(*x)).collect();
        let want_r: Vec<TsRepr> = remote_ts.iter().map(|x| TsRepr::from_prefix(*x)).collect();
        if tsi.as_ref() != Some(&want_i) || tsr.as_ref() != Some(&want_r) {
            self.log(
                p,
                false,
                format!(
                    "child SA refused: the peer narrowed our traffic selectors (local {}, remote {}) to TSi {} TSr {} (TS_UNACCEPTABLE)",
                    prefixes(&local_ts),
                    prefixes(&remote_ts),
                    ts_text(tsi.as_deref()),
                    ts_text(tsr.as_deref())
                ),
            );
            self.used_spis.remove(&spi_in);
            let msg_id = self.sas[i].next_req_id;
            let _ = msg_id;
            self.sas[i].enqueue(Work::DeleteChildren(vec![spi_in]));
            return None;
        }
        let keys = self.child_keys(i, shared, ni, nr, &esp, spi_in, spi_out, true)?;
        self.install_child(i, now, keys, esp, local_ts, remote_ts, replaces, false);
        Some(spi_out)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn child_response(
        &mut self,
        i: usize,
        now: Instant,
        m: &Message,
        rekey: Option<u32>,
        spi_in: u32,
        ni: Vec<u8>,
        dh: Option<Dh>,
        offered: Vec<EspProposal>,
        ke_retries: u8,
    ) {
        let p = self.sas[i].peer;
        if let Some(e) = m.error_notify() {
            self.used_spis.remove(&spi_in);
            let t = e.ty;
            if t == notify::INVALID_KE_PAYLOAD && dh.is_some() {
                // RFC 7296 1.3 and 2.7: the peer wants another PFS group;
                // retry at once with it if we offered it (as IKE_SA_INIT
                // does), at most twice.
                let want = e
                    .data
                    .get(..2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .and_then(DhGroup::from_id);
                let what = if rekey.is_some() {
                    "child SA rekey"
                } else {
                    "new child SA"
                };
                match want {
                    Some(g) if offered.iter().any(|x| x.dh == Some(g)) && ke_retries < 2 => {
                        self.log(
                            p,
                            false,
                            format!("peer asks for PFS DH group {} (INVALID_KE_PAYLOAD); retrying the {what} with it", g.id()),
                        );
                        self.sas[i].queue.push_front(Work::ChildWithGroup {
                            rekey,
                            group: g,
                            retries: ke_retries + 1,
                        });
                    }
                    _ => {
                        let g = want.map_or_else(|| "unknown".to_string(), |g| g.id().to_string());
                        self.log(
                            p,
                            false,
                            format!("peer asks for PFS DH group {g} (INVALID_KE_PAYLOAD), which we do not offer; {what} refused"),
                        );
                    }
                }
                return;
            }
            if t == notify::TEMPORARY_FAILURE || t == notify::CHILD_SA_NOT_FOUND {
                // A collision the peer resolved (RFC 7296 2.25): its own
                // rekey or delete of this child goes on.
                self.log(
                    p,
                    false,
                    format!(
                        "child SA rekey answered with notify {t}; leaving it to the peer's exchange"
                    ),
                );
            } else {
                self.log(
                    p,
                    false,
                    format!("CREATE_CHILD_SA refused by the peer (error notify {t})"),
                );
                self.event(i, TunnelEvent::RekeyRefused);
            }
            return;
        }
        let nr = m.nonce().map(<[u8]>::to_vec);
        let Some(nr) = nr else {
            self.log(
                p,
                false,
                "CREATE_CHILD_SA response without a nonce; child not created",
            );
            self.used_spis.remove(&spi_in);
            return;
        };
        let shared = match dh {
            Some(d) => {
                let ke = m.ke().map(|(_, d)| d.to_vec());
                match ke.map(|k| d.agree(&k)) {
                    Some(Ok(s)) => Some(s),
                    _ => {
                        self.log(p, false, "CREATE_CHILD_SA response without a valid KE for PFS; child not created");
                        self.used_spis.remove(&spi_in);
                        return;
                    }
                }
            }
            None => None,
        };
        let pfs = shared.is_some();
        let esp_list = offered;
        // Simultaneous rekey (RFC 7296 2.8.1): the new child made with the
        // lowest of the four nonces is redundant; whoever created it
        // deletes it.
        if let Some(old) = rekey
            && let Some(c) = self.sas[i].children.iter().find(|c| c.spi_in == old)
            && let Some((pni, pnr, _)) = &c.peer_rekey
        {
            let ours = std::cmp::min(ni.as_slice(), nr.as_slice());
            let theirs = std::cmp::min(pni.as_slice(), pnr.as_slice());
            if ours < theirs {
                self.log(
                    p,
                    false,
                    "simultaneous rekey: ours has the lowest nonce and is redundant; deleting it",
                );
                let props = m.sa();
                // Never installed here: the SPI is free again either way.
                self.used_spis.remove(&spi_in);
                if props
                    .and_then(|x| Self::accepted_esp(&esp_list, x, pfs))
                    .is_some()
                {
                    self.sas[i].enqueue(Work::DeleteChildren(vec![spi_in]));
                }
                return;
            }
            self.log(
                p,
                false,
                "simultaneous rekey: ours wins (the peer's has the lowest nonce)",
            );
        }
        let done = self.finish_child(
            i,
            now,
            m,
            spi_in,
            &ni,
            &nr,
            shared.as_ref().map(|s| s.as_slice()),
            rekey,
            &esp_list,
            pfs,
        );
        if done.is_some()
            && let Some(old) = rekey
            && let Some(c) = self.sas[i].children.iter_mut().find(|c| c.spi_in == old)
        {
            // Make before break: the new outbound SA is installed; the old
            // inbound SA decrypts until the peer has answered our DELETE.
            c.superseded = true;
            c.deleting = true;
            self.sas[i].enqueue(Work::DeleteChildren(vec![old]));
        }
    }

    pub(super) fn answer_child(
        num: u8,
        spi_in: u32,
        esp: &EspProposal,
        local_ts: &[Prefix],
        remote_ts: &[Prefix],
        pfs: bool,
    ) -> Vec<Payload> {
        let mut sa = proposal::esp_sa_payload(std::slice::from_ref(esp), spi_in, pfs);
        if let Payload::Sa(p) = &mut sa {
            p[0].num = num;
        }
        let mut v = vec![sa];
        v.extend(Self::ts_payloads(local_ts, remote_ts, false));
        v
    }

    /// Responder: pick the ESP proposal and check the traffic selectors of
    /// a child request. Err: the error notify to answer.
    #[allow(clippy::type_complexity)]
    pub(super) fn child_offer(
        &mut self,
        i: usize,
        m: &Message,
        pfs: bool,
        rekeyed: Option<usize>,
    ) -> Result<(u8, u32, EspProposal, Vec<Prefix>, Vec<Prefix>), u16> {
        let p = self.sas[i].peer;
        let cfg = self.peers[p].clone();
        let props = m.sa();
        let ours = match rekeyed {
            Some(c) => Self::rekey_proposals(&cfg, &self.sas[i].children[c].esp),
            None => cfg.esp_proposals.clone(),
        };
        let Some((num, spi_out, esp)) = props.and_then(|x| Self::select_esp(&ours, x, pfs)) else {
            self.log(
                p,
                false,
                "child SA: no ESP proposal of the peer is acceptable (NO_PROPOSAL_CHOSEN)",
            );
            return Err(notify::NO_PROPOSAL_CHOSEN);
        };
        if spi_out < 256 {
            return Err(notify::NO_PROPOSAL_CHOSEN);
        }
        let tsi = m.ts_i().map(<[_]>::to_vec).unwrap_or_default();
        let tsr = m.ts_r().map(<[_]>::to_vec).unwrap_or_default();
        let (lts, rts) = match rekeyed {
            Some(c) => (
                self.sas[i].children[c].local_ts.clone(),
                self.sas[i].children[c].remote_ts.clone(),
            ),
            None => (cfg.local_ts.clone(), cfg.remote_ts.clone()),
        };
        // The peer's TSi are its local side (our remote), TSr ours. We
        // accept exactly our configured selectors (what the datapath's
        // policy check enforces); anything else is TS_UNACCEPTABLE.
        let want_i: Vec<TsRepr> = rts.iter().map(|x| TsRepr::from_prefix(*x)).collect();
        let want_r: Vec<TsRepr> = lts.iter().map(|x| TsRepr::from_prefix(*x)).collect();
        let covers = |offered: &[TsRepr], want: &[TsRepr]| {
            want.iter().all(|w| offered.iter().any(|o| o.contains(w)))
        };
        if !covers(&tsi, &want_i) || !covers(&tsr, &want_r) {
            self.log(
                p,
                false,
                format!(
                    "child SA refused: the peer's traffic selectors TSi {} TSr {} do not cover ours (local {}, remote {}) (TS_UNACCEPTABLE)",
                    ts_text(Some(&tsi)),
                    ts_text(Some(&tsr)),
                    prefixes(&lts),
                    prefixes(&rts)
                ),
            );
            return Err(notify::TS_UNACCEPTABLE);
        }
        Ok((num, spi_out, esp, lts, rts))
    }

    pub(super) fn create_child_request(&mut self, i: usize, now: Instant, m: &Message) {
        let p = self.sas[i].peer;
        let msg_id = m.header.msg_id;
        let props = m.sa().map(<[_]>::to_vec);
        let ni = m.nonce().map(<[u8]>::to_vec);
        let ke = m.ke().map(|(g, d)| (g, d.to_vec()));
        let (Some(props), Some(ni)) = (props, ni) else {
            self.respond(
                i,
                wire::CREATE_CHILD_SA,
                msg_id,
                &[Self::notify_payload(notify::NO_PROPOSAL_CHOSEN, vec![])],
            );
            return;
        };
        if !(16..=256).contains(&ni.len()) {
            return;
        }
        let nr = self.nonce();
        // IKE SA rekey (RFC 7296 1.3.2).
        if props.first().is_some_and(|x| x.protocol == wire::PROTO_IKE) {
            let prop = self.sas[i].prop.clone();
            let chosen = prop
                .as_ref()
                .and_then(|pr| Self::select_ike(std::slice::from_ref(pr), &props));
            let (Some((num, prop)), Some((g, kd))) = (chosen, ke) else {
                self.respond(
                    i,
                    wire::CREATE_CHILD_SA,
                    msg_id,
                    &[Self::notify_payload(notify::NO_PROPOSAL_CHOSEN, vec![])],
                );
                return;
            };
            if g != prop.dh.id() {
                self.respond(
                    i,
                    wire::CREATE_CHILD_SA,
                    msg_id,
                    &[Self::notify_payload(
                        notify::INVALID_KE_PAYLOAD,
                        prop.dh.id().to_be_bytes().to_vec(),
                    )],
                );
                return;
            }
            if self.sas[i].rekeyed
                || self.sas[i]
                    .pending
                    .as_ref()
                    .is_some_and(|x| matches!(x.sent, Sent::Child { .. }))
            {
                // An IKE rekey while our child exchange is in flight, or of
                // an SA already replaced: TEMPORARY_FAILURE (RFC 7296
                // 2.25). A simultaneous IKE rekey (ours in flight) is
                // answered as usual and resolved by the nonces (2.8.2)
                // when ours completes (rekey_ike_finish).
                self.respond(
                    i,
                    wire::CREATE_CHILD_SA,
                    msg_id,
                    &[Self::notify_payload(notify::TEMPORARY_FAILURE, vec![])],
                );
                return;
            }
            let their_spi = props
                .iter()
                .find(|x| x.num == num)
                .map(|x| x.spi.clone())
                .unwrap_or_default();
            let Ok(spi_i) = <[u8; 8]>::try_from(their_spi.as_slice()).map(u64::from_be_bytes)
            else {
                return;
            };
            let Ok(dh) = Dh::generate(prop.dh, &*self.rng) else {
                return;
            };
            let public = dh.public().to_vec();
            let Ok(shared) = dh.agree(&kd) else { return };
            let spi_r = self.random_u64();
            let mut sa = proposal::ike_sa_payload(std::slice::from_ref(&prop), Some(spi_r));
            if let Payload::Sa(x) = &mut sa {
                x[0].num = num;
            }
            self.respond(
                i,
                wire::CREATE_CHILD_SA,
                msg_id,
                &[
                    sa,
                    Payload::Nonce(nr.clone()),
                    Payload::Ke {
                        group: g,
                        data: public,
                    },
                ],
            );
            self.rekey_ike_finish(i, now, spi_i, spi_r, false, &ni, &nr, &shared, prop);
            return;
        }
        let rekey = m
            .notify(notify::REKEY_SA)
            .and_then(|n| <[u8; 4]>::try_from(n.spi.as_slice()).ok())
            .map(u32::from_be_bytes);
        let old = match rekey {
            Some(s) => match self.sas[i].children.iter().position(|c| c.spi_out == s) {
                Some(c) if !self.sas[i].children[c].superseded => Some(c),
                Some(_) => {
                    // We already rekeyed it (our exchange finished first).
                    self.respond(
                        i,
                        wire::CREATE_CHILD_SA,
                        msg_id,
                        &[Self::notify_payload(notify::TEMPORARY_FAILURE, vec![])],
                    );
                    return;
                }
                None => {
                    self.respond(
                        i,
                        wire::CREATE_CHILD_SA,
                        msg_id,
                        &[Payload::Notify(NotifyRepr {
                            protocol: wire::PROTO_ESP,
                            spi: s.to_be_bytes().to_vec(),
                            ty: notify::CHILD_SA_NOT_FOUND,
                            data: vec![],
                        })],
                    );
                    return;
                }
            },
            None => None,
        };
        // A peer that keeps asking for children (new ones, or rekeys whose
        // old SA it never deletes): each is an inbound SA in the datapath.
        if self.sas[i].children.len() >= MAX_CHILD_SAS {
            self.log(
                p,
                false,
                format!(
                    "CREATE_CHILD_SA refused: the IKE SA has {MAX_CHILD_SAS} child SAs already; answered NO_ADDITIONAL_SAS"
                ),
            );
            self.respond(
                i,
                wire::CREATE_CHILD_SA,
                msg_id,
                &[Self::notify_payload(notify::NO_ADDITIONAL_SAS, vec![])],
            );
            return;
        }
        let pfs = ke.is_some();
        let (num, spi_out, esp, lts, rts) = match self.child_offer(i, m, pfs, old) {
            Ok(x) if pfs && x.2.dh.is_none() => {
                // A KE without a DH transform in the proposal we chose.
                let _ = x;
                self.respond(
                    i,
                    wire::CREATE_CHILD_SA,
                    msg_id,
                    &[Self::notify_payload(notify::NO_PROPOSAL_CHOSEN, vec![])],
                );
                return;
            }
            Ok(x) => x,
            Err(n) => {
                self.respond(
                    i,
                    wire::CREATE_CHILD_SA,
                    msg_id,
                    &[Self::notify_payload(n, vec![])],
                );
                return;
            }
        };
        let mut shared = None;
        let mut ke_out = None;
        if let (Some((g, kd)), Some(want)) = (&ke, esp.dh) {
            if *g != want.id() {
                self.respond(
                    i,
                    wire::CREATE_CHILD_SA,
                    msg_id,
                    &[Self::notify_payload(
                        notify::INVALID_KE_PAYLOAD,
                        want.id().to_be_bytes().to_vec(),
                    )],
                );
                return;
            }
            let Ok(dh) = Dh::generate(want, &*self.rng) else {
                return;
            };
            ke_out = Some(Payload::Ke {
                group: *g,
                data: dh.public().to_vec(),
            });
            let Ok(s) = dh.agree(kd) else { return };
            shared = Some(s);
        }
        let spi_in = self.alloc_spi();
        let Some(keys) = self.child_keys(
            i,
            shared.as_ref().map(|s: &Secret| s.as_slice()),
            &ni,
            &nr,
            &esp,
            spi_in,
            spi_out,
            false,
        ) else {
            return;
        };
        let mut out = Self::answer_child(num, spi_in, &esp, &lts, &rts, pfs);
        out.insert(1, Payload::Nonce(nr.clone()));
        if let Some(k) = ke_out {
            out.insert(2, k);
        }
        self.respond(i, wire::CREATE_CHILD_SA, msg_id, &out);
        let replaces = old.map(|c| self.sas[i].children[c].spi_in);
        if let Some(c) = old {
            self.sas[i].children[c].peer_rekey = Some((ni.clone(), nr.clone(), spi_in));
        }
        // Rekey responder: our outbound switches when the peer deletes the
        // old SA (it has our new inbound SA by then). A new child (after a
        // clear) is used at once.
        self.install_child(i, now, keys, esp, lts, rts, replaces, replaces.is_some());
        if let Some(n) = self.sas[i].children.last_mut()
            && replaces.is_some()
        {
            // If the peer never deletes the old SA, the unused new one
            // goes with the old one's lifetime.
            n.expire_at = now + self.peers[p].child_lifetime;
        }
    }
}
