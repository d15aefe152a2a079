//! Building and sending messages, shared by every exchange: proposal
//! selection, traffic selector, NAT detection and notify payloads, the SK
//! payload, requests with retransmission and cached responses.

#[allow(unused_imports)]
use super::*;

impl Core {
    /// Whether a received proposal offers every transform of ours.
    pub(super) fn offers(theirs: &ProposalRepr, ours: &[TransformRepr]) -> bool {
        ours.iter().all(|o| theirs.transforms.iter().any(|t| t == o))
            // ...and nothing of a type we did not propose is mandatory for
            // it (an INTEG with an AEAD, a DH when we do not do PFS).
            && theirs.transforms.iter().all(|t| {
                ours.iter().any(|o| o.ty == t.ty) || (t.ty == TRANS_DH && t.id == 0) || (t.ty == TRANS_ESN && t.id == 0)
            })
    }

    /// Responder: the first of our IKE proposals the peer offers.
    pub(super) fn select_ike(
        ours: &[IkeProposal],
        theirs: &[ProposalRepr],
    ) -> Option<(u8, IkeProposal)> {
        for o in ours {
            let Payload::Sa(p) = proposal::ike_sa_payload(std::slice::from_ref(o), None) else {
                continue;
            };
            for t in theirs.iter().filter(|t| t.protocol == wire::PROTO_IKE) {
                if Self::offers(t, &p[0].transforms) {
                    return Some((t.num, o.clone()));
                }
            }
        }
        None
    }

    /// Responder: the first of our ESP proposals the peer offers.
    pub(super) fn select_esp(
        ours: &[EspProposal],
        theirs: &[ProposalRepr],
        pfs: bool,
    ) -> Option<(u8, u32, EspProposal)> {
        // Matched without the DH transform when there is no KE (IKE_AUTH,
        // no PFS), but the configured proposal (with its PFS group, for
        // later rekeys) is what the child keeps.
        for configured in ours {
            let o = EspProposal {
                dh: if pfs { configured.dh } else { None },
                ..configured.clone()
            };
            let mine = proposal::esp_transforms(&o, pfs);
            for t in theirs
                .iter()
                .filter(|t| t.protocol == wire::PROTO_ESP && t.spi.len() == 4)
            {
                if Self::offers(t, &mine) {
                    let spi = u32::from_be_bytes(t.spi.clone().try_into().unwrap_or([0; 4]));
                    return Some((t.num, spi, configured.clone()));
                }
            }
        }
        None
    }

    /// Initiator: which of our proposals the responder's single proposal is.
    pub(super) fn accepted_ike(
        ours: &[IkeProposal],
        theirs: &[ProposalRepr],
    ) -> Option<IkeProposal> {
        let [t] = theirs else { return None };
        ours.iter()
            .find(|o| {
                let Payload::Sa(p) = proposal::ike_sa_payload(std::slice::from_ref(o), None) else {
                    return false;
                };
                Self::offers(t, &p[0].transforms) && t.transforms.len() == p[0].transforms.len()
            })
            .cloned()
    }

    pub(super) fn accepted_esp(
        ours: &[EspProposal],
        theirs: &[ProposalRepr],
        pfs: bool,
    ) -> Option<(u32, EspProposal)> {
        let [t] = theirs else { return None };
        if t.protocol != wire::PROTO_ESP || t.spi.len() != 4 {
            return None;
        }
        let spi = u32::from_be_bytes(t.spi.clone().try_into().unwrap_or([0; 4]));
        ours.iter()
            .find(|configured| {
                let o = EspProposal {
                    dh: if pfs { configured.dh } else { None },
                    ..(*configured).clone()
                };
                Self::offers(t, &proposal::esp_transforms(&o, pfs))
            })
            .map(|o| (spi, o.clone()))
    }

    pub(super) fn ts_payloads(
        local: &[Prefix],
        remote: &[Prefix],
        initiator: bool,
    ) -> [Payload; 2] {
        let l: Vec<TsRepr> = local.iter().map(|p| TsRepr::from_prefix(*p)).collect();
        let r: Vec<TsRepr> = remote.iter().map(|p| TsRepr::from_prefix(*p)).collect();
        if initiator {
            [Payload::TsI(l), Payload::TsR(r)]
        } else {
            [Payload::TsI(r), Payload::TsR(l)]
        }
    }

    pub(super) fn nat_payloads(
        &self,
        spi_i: u64,
        spi_r: u64,
        local: SocketAddr,
        remote: SocketAddr,
        fake: bool,
    ) -> [Payload; 2] {
        // strongSwan's `encap = yes`: a source hash that cannot match makes
        // the peer see a NAT, so both sides move to UDP encapsulation.
        let src = if fake {
            self.random_bytes(20)
        } else {
            crypto::nat_hash(spi_i, spi_r, local)
        };
        [
            Payload::Notify(NotifyRepr {
                protocol: 0,
                spi: vec![],
                ty: notify::NAT_DETECTION_SOURCE_IP,
                data: src,
            }),
            Payload::Notify(NotifyRepr {
                protocol: 0,
                spi: vec![],
                ty: notify::NAT_DETECTION_DESTINATION_IP,
                data: crypto::nat_hash(spi_i, spi_r, remote),
            }),
        ]
    }

    /// Whether the NAT detection notifies of `m` (received on `local`
    /// from `remote`) show a NAT on the path.
    pub(super) fn nat_detected(
        m: &Message,
        spi_i: u64,
        spi_r: u64,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> bool {
        let src_ok = m
            .notifies(notify::NAT_DETECTION_SOURCE_IP)
            .any(|n| n.data == crypto::nat_hash(spi_i, spi_r, remote));
        let has_src = m.notify(notify::NAT_DETECTION_SOURCE_IP).is_some();
        let dst_ok = m
            .notify(notify::NAT_DETECTION_DESTINATION_IP)
            .is_none_or(|n| n.data == crypto::nat_hash(spi_i, spi_r, local));
        has_src && (!src_ok || !dst_ok)
    }

    pub(super) fn notify_payload(ty: u16, data: Vec<u8>) -> Payload {
        Payload::Notify(NotifyRepr {
            protocol: 0,
            spi: vec![],
            ty,
            data,
        })
    }

    /// Encrypt `payloads` into a message of this SA: one datagram, or
    /// where fragmentation was negotiated and the message is longer than
    /// the tunnel's `fragment_size` allows, its Encrypted Fragments (RFC
    /// 7383 2.5).
    pub(super) fn seal(
        &self,
        i: usize,
        exchange: u8,
        response: bool,
        msg_id: u32,
        payloads: &[Payload],
    ) -> Option<Vec<Vec<u8>>> {
        let sa = &self.sas[i];
        let keys = sa.keys.as_ref()?;
        let h = HeaderRepr {
            spi_i: sa.spi_i,
            spi_r: sa.spi_r,
            exchange,
            flags: (if sa.initiator { FLAG_INITIATOR } else { 0 })
                | (if response { FLAG_RESPONSE } else { 0 }),
            msg_id,
        };
        let mut inner = Vec::new();
        let first = wire::emit_payloads(payloads, &mut inner);
        let inner = Zeroizing::new(inner);
        let cfg = &self.peers[sa.peer];
        let max = frag::max_message_len(
            cfg.fragment_size,
            sa.remote.ip(),
            sa.local.port() != crate::IKE_PORT,
        );
        if sa.frag && frag::sealed_len(keys, inner.len()) > max {
            return frag::seal_fragments(keys, sa.initiator, &h, first, &inner, max, &*self.rng)
                .ok();
        }
        keys.seal(sa.initiator, &h, first, &inner, &*self.rng)
            .ok()
            .map(|d| vec![d])
    }

    /// Send a request now (the window is free) and keep it for retransmission.
    pub(super) fn send_request(
        &mut self,
        i: usize,
        now: Instant,
        exchange: u8,
        payloads: &[Payload],
        sent: Sent,
    ) {
        let msg_id = self.sas[i].next_req_id;
        let Some(data) = self.seal(i, exchange, false, msg_id, payloads) else {
            return;
        };
        self.sas[i].next_req_id = msg_id.wrapping_add(1);
        self.send_request_bytes(i, now, msg_id, data, sent);
    }

    pub(super) fn send_request_bytes(
        &mut self,
        i: usize,
        now: Instant,
        msg_id: u32,
        data: Vec<Vec<u8>>,
        sent: Sent,
    ) {
        let (local, remote) = (self.sas[i].local, self.sas[i].remote);
        self.send_all(local, remote, &data);
        let dpd_retry = self.peers[self.sas[i].peer].dpd_retry;
        let next_at = now + timers::resend_delay(dpd_retry, matches!(sent, Sent::Dpd), 0);
        self.sas[i].pending = Some(Pending {
            msg_id,
            data,
            tries: 0,
            next_at,
            sent,
        });
    }

    /// Answer a request of the peer and cache the answer for its retransmissions.
    pub(super) fn respond(&mut self, i: usize, exchange: u8, msg_id: u32, payloads: &[Payload]) {
        let Some(data) = self.seal(i, exchange, true, msg_id, payloads) else {
            return;
        };
        let (local, remote) = (self.sas[i].local, self.sas[i].remote);
        self.send_all(local, remote, &data);
        self.sas[i].last_response = Some((msg_id, data, local, remote));
        self.sas[i].peer_req_id = msg_id.wrapping_add(1);
    }
}
