//! CREATE_CHILD_SA rekeying the IKE SA (RFC 7296 1.3.2, 2.18), and
//! simultaneous IKE SA rekeys (2.8.2).

#[allow(unused_imports)]
use super::*;

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ike_rekey_response(
        &mut self,
        i: usize,
        now: Instant,
        m: &Message,
        spi: u64,
        ni: Vec<u8>,
        dh: Option<Dh>,
        prop: IkeProposal,
    ) {
        let p = self.sas[i].peer;
        if let Some(e) = m.error_notify() {
            self.log(
                p,
                false,
                format!(
                    "IKE SA rekey refused by the peer (error notify {}); retrying later",
                    e.ty
                ),
            );
            return;
        }
        let props = m.sa();
        let nr = m.nonce().map(<[u8]>::to_vec);
        let ke = m.ke().map(|(_, d)| d.to_vec());
        let (Some(props), Some(nr), Some(ke), Some(dh)) = (props, nr, ke, dh) else {
            return;
        };
        let [rp] = props else { return };
        if rp.spi.len() != 8 || Self::accepted_ike(std::slice::from_ref(&prop), props).is_none() {
            self.log(
                p,
                false,
                "IKE SA rekey: the peer's answer does not match our proposal",
            );
            return;
        }
        let spi_r = u64::from_be_bytes(rp.spi.clone().try_into().unwrap_or([0; 8]));
        let Ok(shared) = dh.agree(&ke) else { return };
        self.rekey_ike_finish(i, now, spi, spi_r, true, &ni, &nr, &shared, prop);
    }

    /// Create the new IKE SA of a rekey, move the children to it, and (as
    /// the rekey's initiator) delete the old one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rekey_ike_finish(
        &mut self,
        i: usize,
        now: Instant,
        spi_i: u64,
        spi_r: u64,
        we_initiated: bool,
        ni: &[u8],
        nr: &[u8],
        shared: &[u8],
        prop: IkeProposal,
    ) {
        let Some(old) = self.sas[i].keys.as_ref() else {
            return;
        };
        let seed = crypto::skeyseed_rekey(old.prop.prf, &old.sk_d, shared, ni, nr);
        let keys = IkeKeys::derive(&prop, &seed, ni, nr, spi_i, spi_r);
        let cfg = self.peers[self.sas[i].peer].clone();
        let id = self.next_id;
        self.next_id += 1;
        let children = std::mem::take(&mut self.sas[i].children);
        let old_sa = &mut self.sas[i];
        old_sa.rekeyed = true;
        // The rekey's initiator deletes the old SA; if that DELETE never
        // comes, it goes anyway after a while (its children have moved).
        old_sa.rekey_at = Some(now + REKEYED_LINGER);
        let new = IkeSa {
            id,
            peer: old_sa.peer,
            initiator: we_initiated,
            spi_i,
            spi_r,
            state: State::Ready,
            local: old_sa.local,
            remote: old_sa.remote,
            prop: Some(prop),
            keys: Some(keys),
            nat: old_sa.nat,
            frag: old_sa.frag,
            auth_sign: old_sa.auth_sign,
            auth_verify: old_sa.auth_verify,
            created: now,
            established: Some(now),
            rekey_at: Some(now + self.jitter(cfg.ike_lifetime, REKEY_SOFT_MIN, REKEY_SOFT_MAX)),
            next_req_id: 0,
            peer_req_id: 0,
            pending: None,
            queue: VecDeque::new(),
            last_response: None,
            reasm: frag::Reassembler::default(),
            last_rx: now,
            children,
            neg: None,
            rekeyed: false,
            last_invalid_spi: None,
            peer_ike_rekey: None,
        };
        // Work waiting on the old SA (child rekeys, deletes) moves too.
        let moved: Vec<Work> = self.sas[i]
            .queue
            .drain(..)
            .filter(|w| !matches!(w, Work::RekeyIke | Work::Dpd))
            .collect();
        self.sas.push(new);
        let n = self.sas.len() - 1;
        self.sas[n].queue.extend(moved);
        self.log(
            self.sas[i].peer,
            false,
            format!("IKE SA rekeyed: new SPIs {spi_i:016x}/{spi_r:016x}"),
        );
        let ours_in_flight = self.sas[i]
            .pending
            .as_ref()
            .is_some_and(|x| matches!(x.sent, Sent::Ike { .. }));
        if !we_initiated && ours_in_flight {
            // Simultaneous rekey (RFC 7296 2.8.2), the peer's exchange
            // done first: the children serve on its new SA until ours
            // completes and the nonces decide which new SA survives.
            self.sas[i].peer_ike_rekey = Some((ni.to_vec(), nr.to_vec(), id));
            self.log(
                self.sas[i].peer,
                false,
                "simultaneous IKE SA rekey: answered the peer's while ours is in flight",
            );
            return;
        }
        if we_initiated
            && let Some((pni, pnr, pid)) = self.sas[i].peer_ike_rekey.take()
            && let Some(pj) = self.sas.iter().position(|s| s.id == pid)
        {
            self.resolve_ike_rekey_collision(i, n, pj, now, (ni, nr), (&pni, &pnr));
            return;
        }
        if we_initiated {
            self.sas[i].queue.push_back(Work::DeleteIke);
        }
    }

    /// Both rekeys of the IKE SA `old` completed: `ours` is the new SA we
    /// initiated, `theirs` the one the peer initiated. RFC 7296 2.8.2: the
    /// new SA created by the exchange with the lowest of the four nonces
    /// is deleted by the side that initiated it; the survivor takes the
    /// children, and its initiator deletes the old SA. Both sides see the
    /// same four nonces, so both come to the same answer.
    pub(super) fn resolve_ike_rekey_collision(
        &mut self,
        old: usize,
        ours: usize,
        theirs: usize,
        now: Instant,
        our_nonces: (&[u8], &[u8]),
        their_nonces: (&[u8], &[u8]),
    ) {
        let p = self.sas[old].peer;
        let ours_min = std::cmp::min(our_nonces.0, our_nonces.1);
        let theirs_min = std::cmp::min(their_nonces.0, their_nonces.1);
        let (spi_i, spi_r) = (self.sas[ours].spi_i, self.sas[ours].spi_r);
        if ours_min < theirs_min {
            // Ours is redundant: we delete it; the children stay on the
            // peer's, and the peer deletes the old SA.
            let sa = &mut self.sas[ours];
            sa.rekeyed = true;
            sa.rekey_at = Some(now + REKEYED_LINGER);
            sa.queue.push_back(Work::DeleteIke);
            self.log(
                p,
                false,
                format!("simultaneous IKE SA rekey: ours ({spi_i:016x}/{spi_r:016x}) has the lowest nonce and is redundant; deleting it"),
            );
        } else {
            // The peer's is redundant (the peer deletes it): the children
            // and pending work move to ours, and we delete the old SA.
            let children = std::mem::take(&mut self.sas[theirs].children);
            let work: Vec<Work> = self.sas[theirs]
                .queue
                .drain(..)
                .filter(|w| !matches!(w, Work::RekeyIke | Work::Dpd))
                .collect();
            let t = &mut self.sas[theirs];
            t.rekeyed = true;
            t.rekey_at = Some(now + REKEYED_LINGER);
            self.sas[ours].children.extend(children);
            self.sas[ours].queue.extend(work);
            self.sas[old].queue.push_back(Work::DeleteIke);
            self.log(
                p,
                false,
                format!("simultaneous IKE SA rekey: ours ({spi_i:016x}/{spi_r:016x}) survives (the peer's has the lowest nonce)"),
            );
        }
    }
}
