//! Authentication payloads (RFC 7296 2.15, 3.6, 3.7; RFC 7427): what we
//! send to prove who we are (ID and AUTH, with a pre-shared key or a
//! certificate, then also CERT; in IKE_SA_INIT the CERTREQ and
//! SIGNATURE_HASH_ALGORITHMS), and the check of what the peer sent. The
//! certificate work itself (chains, signatures, identities) is
//! [`crate::cert`]'s.

#[allow(unused_imports)]
use super::*;
use crate::{
    Identity, Prf,
    cert::{self, CERT_X509_SIGNATURE, MAX_CERT_LEN, MAX_PEER_CERTS, OUR_HASHES},
};

/// Longest reason of a failed certificate check in a log line (it names
/// the peer's certificates, which the peer chose).
const REASON_MAX: usize = 512;

/// The inputs of one side's AUTH: (RealMessage, the other side's nonce,
/// SK_p, the PRF).
type AuthInputs<'a> = (&'a [u8], &'a [u8], &'a [u8], Prf);

impl Core {
    /// What an IKE_SA_INIT carries when we authenticate with a
    /// certificate: SIGNATURE_HASH_ALGORITHMS with the hashes we verify
    /// (RFC 7427 4), and in the `response` our CERTREQ (RFC 7296 1.2: the
    /// initiator's goes in IKE_AUTH; strongSwan refuses one in the
    /// request). Nothing with a pre-shared key.
    pub(super) fn cert_init_payloads(cfg: &PeerConfig, response: bool) -> Vec<Payload> {
        let Some(c) = &cfg.cert else {
            return Vec::new();
        };
        let hashes = OUR_HASHES.iter().flat_map(|h| h.to_be_bytes()).collect();
        let mut out = Vec::new();
        if response {
            out.push(Self::certreq(c));
        }
        out.push(Self::notify_payload(
            notify::SIGNATURE_HASH_ALGORITHMS,
            hashes,
        ));
        out
    }

    /// A CERTREQ naming our CAs: SHA-1 of each one's
    /// SubjectPublicKeyInfo, encoding 4 (RFC 7296 3.7).
    fn certreq(c: &cert::Credentials) -> Payload {
        Payload::CertReq(CERT_X509_SIGNATURE, c.certreq_data())
    }

    /// The hashes a peer announced in its IKE_SA_INIT (RFC 7427 4; at
    /// most 16 kept).
    pub(super) fn peer_hashes(m: &Message) -> Vec<u16> {
        m.notify(notify::SIGNATURE_HASH_ALGORITHMS)
            .map(|n| {
                n.data
                    .chunks_exact(2)
                    .take(16)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The inputs of the AUTH of SA `i`'s side `ours` (else the peer's),
    /// RFC 7296 2.15: the initiator's are its IKE_SA_INIT request, Nr and
    /// SK_pi; the responder's its response, Ni and SK_pr. None before
    /// IKE_SA_INIT is done.
    pub(super) fn auth_inputs(&self, i: usize, ours: bool) -> Option<AuthInputs<'_>> {
        let sa = &self.sas[i];
        let (neg, keys) = (sa.neg.as_ref()?, sa.keys.as_ref()?);
        Some(if sa.initiator == ours {
            (&neg.init_req, &neg.nr, &keys.sk_pi, keys.prop.prf)
        } else {
            (&neg.init_resp, &neg.ni, &keys.sk_pr, keys.prop.prf)
        })
    }

    /// Our ID (IDi as initiator, IDr as responder), CERT (with a
    /// certificate; then as initiator our CERTREQ too) and AUTH payloads
    /// for IKE_AUTH. With a certificate the
    /// AUTH is a signature: RFC 7427's (method 14) when the peer announced
    /// a hash we can use, else our key's classic method (9, 10), as IOS
    /// does. None before IKE_SA_INIT is done, or when signing failed
    /// (logged).
    pub(super) fn own_auth_payloads(&mut self, i: usize, cfg: &PeerConfig) -> Option<Vec<Payload>> {
        let (idt, idd) = id_payload(&cfg.local_id);
        let body = Self::id_body(idt, &idd);
        let (msg, nonce, sk_p, prf) = self.auth_inputs(i, true)?;
        let auth = match &cfg.cert {
            None => Ok((
                crypto::AUTH_PSK,
                crypto::psk_auth(prf, &cfg.psk, msg, nonce, sk_p, &body).to_vec(),
            )),
            Some(c) => {
                let signed = crypto::signed_octets(prf, msg, nonce, sk_p, &body);
                let hashes = self.sas[i].neg.as_ref().map_or(&[][..], |n| &n.peer_hashes);
                c.sign(hashes, &signed, self.rng.ring())
            }
        };
        let (method, data) = match auth {
            Ok(a) => {
                self.sas[i].auth_sign = configured_auth(cfg);
                a
            }
            Err(e) => {
                self.log(
                    self.sas[i].peer,
                    false,
                    format!("IKE_AUTH not sent: {e} (key_file)"),
                );
                return None;
            }
        };
        let mut out = vec![if self.sas[i].initiator {
            Payload::IdI(idt, idd)
        } else {
            Payload::IdR(idt, idd)
        }];
        if let Some(c) = &cfg.cert {
            out.push(Payload::Cert(CERT_X509_SIGNATURE, c.cert_der().to_vec()));
            if self.sas[i].initiator {
                out.push(Self::certreq(c));
            }
        }
        out.push(Payload::Auth(method, data));
        Some(out)
    }

    /// Check the peer's authentication in its IKE_AUTH `m`, whose ID
    /// payload was `id` (type, data) and AUTH `auth` (method, data).
    /// With a pre-shared key: the PSK AUTH over its signed octets. With a
    /// certificate: its CERT payloads (encoding 4; its own first, then
    /// intermediates) lead to a CA of `ca_file`, every one valid now; the
    /// identity is bound to its certificate (a DN equal to its subject,
    /// or a subjectAltName); its AUTH is a signature with the
    /// certificate's key over its signed octets. Ok: with a certificate,
    /// what authenticated the peer for the log (its subject and the AUTH
    /// method); Err: why not. Both escaped for a log line. None before
    /// IKE_SA_INIT is done.
    pub(super) fn peer_auth(
        &mut self,
        i: usize,
        cfg: &PeerConfig,
        m: &Message,
        id: (u8, &[u8]),
        auth: (u8, &[u8]),
    ) -> Option<Result<Option<String>, String>> {
        let body = Self::id_body(id.0, id.1);
        let Some(c) = &cfg.cert else {
            let ok = self.peer_psk_auth_ok(i, &cfg.psk, &body, auth.0, auth.1)?;
            return Some(if ok {
                self.sas[i].auth_verify = AuthMethod::Psk;
                Ok(None)
            } else {
                Err("the peer's AUTH does not verify with our pre-shared key".into())
            });
        };
        let (msg, nonce, sk_p, prf) = self.auth_inputs(i, false)?;
        let signed = crypto::signed_octets(prf, msg, nonce, sk_p, &body);
        let certs: Vec<Vec<u8>> = m
            .payloads
            .iter()
            .filter_map(|p| match p {
                Payload::Cert(CERT_X509_SIGNATURE, d) if d.len() <= MAX_CERT_LEN => Some(d.clone()),
                _ => None,
            })
            .take(1 + MAX_PEER_CERTS)
            .collect();
        let check = || -> Result<(String, AuthMethod), String> {
            let subject = c.verify_chain(&certs)?;
            cert::id_bound_to_cert(&certs[0], id.0, id.1)?;
            let kind = cert::verify_auth(&certs[0], auth.0, auth.1, &signed)
                .map_err(|e| format!("the AUTH of certificate {subject}: {e}"))?;
            let line = format!(
                "peer authenticated by certificate {subject} (AUTH method {}{})",
                auth.0,
                match auth.0 {
                    cert::AUTH_DIGITAL_SIGNATURE => ", RFC 7427 digital signature",
                    cert::AUTH_ECDSA_256 | cert::AUTH_ECDSA_384 => ", ECDSA (RFC 4754)",
                    _ => ", RSA PKCS#1 v1.5 SHA-1",
                }
            );
            Ok((line, kind.into()))
        };
        let esc = |e: String| escape_text_max(e.as_bytes(), REASON_MAX);
        let verdict = check();
        if let Ok((_, m)) = verdict {
            self.sas[i].auth_verify = m;
        }
        Some(verdict.map(|(ok, _)| Some(esc(ok))).map_err(esc))
    }

    /// We initiated and the responder's authentication failed (`why`):
    /// log it and tell the peer (RFC 7296 2.21.2: with a pre-shared key
    /// a DELETE; with certificates an INFORMATIONAL with
    /// AUTHENTICATION_FAILED and the DELETE), then give the SA up and
    /// retry after [`FAILED_RETRY`]. With certificates the line is
    /// rate-limited: it names what the peer sent.
    pub(super) fn initiator_auth_failed(
        &mut self,
        i: usize,
        now: Instant,
        cfg: &PeerConfig,
        why: &str,
    ) {
        let p = self.sas[i].peer;
        let line = format!("authentication failed: {why} (AUTHENTICATION_FAILED)");
        if cfg.cert.is_some() {
            let from = self.sas[i].remote.ip();
            self.log_noise(now, from, Noise::AuthFailed, Some(p), line);
            self.send_info_once(
                i,
                &[
                    Self::notify_payload(notify::AUTHENTICATION_FAILED, vec![]),
                    Payload::Delete(DeleteRepr::Ike),
                ],
            );
        } else {
            self.log(p, false, line);
            self.send_delete_ike(i);
        }
        self.event(i, TunnelEvent::Failure(Failure::Authentication));
        self.drop_sa(i, now, Some(FAILED_RETRY));
    }

    /// Send an INFORMATIONAL request with `payloads` once, without waiting
    /// for its answer (the SA goes at once).
    pub(super) fn send_info_once(&mut self, i: usize, payloads: &[Payload]) {
        let msg_id = self.sas[i].next_req_id;
        if let Some(d) = self.seal(i, wire::INFORMATIONAL, false, msg_id, payloads) {
            let (l, r) = (self.sas[i].local, self.sas[i].remote);
            self.send_all(l, r, &d);
        }
    }
}

/// How SA's of `cfg` authenticate before their AUTH payloads are made
/// or checked: with a pre-shared key PSK both ways, with a certificate
/// our key's kind both ways (the peer's is known once its AUTH is
/// verified).
pub(super) fn configured_auth(cfg: &PeerConfig) -> AuthMethod {
    cfg.cert
        .as_ref()
        .map_or(AuthMethod::Psk, |c| c.kind().into())
}

/// Whether an ID payload (type `t`, data `d`) is the identity `want`: DNs
/// by their attributes ([`cert::dn_eq`]: a certificate's subject may use
/// other string types than a DN written in the configuration), others
/// byte for byte.
pub(super) fn id_matches(want: &Identity, t: u8, d: &[u8]) -> bool {
    match want {
        Identity::Dn(w) => t == wire::id_type::DER_ASN1_DN && cert::dn_eq(w, d),
        _ => {
            let (wt, wd) = id_payload(want);
            wt == t && wd == d
        }
    }
}
