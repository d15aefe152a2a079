//! TLS 1.3 of the control connections (rustls with the ring provider,
//! webpki for the chains), sans I/O: the shells own the sockets and pass
//! bytes through a [`Link`].
//!
//! Both ends present a device certificate from `xdpsec pki` and check the
//! peer's chain against the enterprise root CA alone (no system roots):
//! the controller's verifier is webpki's client verifier (clientAuth key
//! usage: an edge certificate); the edge's checks the controller's chain
//! and the serverAuth key usage but not a host name (the controller is
//! known by its certificate's organization and role, as Cisco's edges know
//! their vSmarts). The application checks (organization, role, serial,
//! system-ip) are the cores' ([`PeerCert`] carries what they need), so a
//! refusal can travel to the peer inside TLS with its code. Session
//! resumption is off: every connection is a full handshake with both
//! certificates.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

pub use rustls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring as provider, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    ServerConfig, SignatureScheme,
};
use zeroize::{Zeroize, Zeroizing};

use crate::history::ErrorCode;

/// A device's TLS material, PEM: the enterprise root CA, its own
/// certificate (chain) and private key.
#[derive(Clone)]
pub struct TlsFiles {
    /// The root CA certificate(s) peers must chain to.
    pub ca_pem: Vec<u8>,
    /// This device's certificate, then any intermediates.
    pub cert_pem: Vec<u8>,
    /// This device's private key (PKCS#8, SEC1 or PKCS#1); zeroized on drop.
    pub key_pem: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsFiles {{ key: <redacted> }}")
    }
}

impl PartialEq for TlsFiles {
    fn eq(&self, o: &Self) -> bool {
        self.ca_pem == o.ca_pem && self.cert_pem == o.cert_pem && *self.key_pem == *o.key_pem
    }
}

fn provider() -> Arc<CryptoProvider> {
    // ring's provider as it is (deprecated only for lacking post-quantum
    // key exchange, which ring does not have): one crypto library.
    #[allow(deprecated)]
    Arc::new(provider::default_provider())
}

impl TlsFiles {
    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        let mut n = 0;
        for c in CertificateDer::pem_slice_iter(&self.ca_pem) {
            let c = c.map_err(|e| format!("the CA file is not PEM certificates ({e})"))?;
            roots
                .add(c)
                .map_err(|e| format!("the CA file's certificate is not usable ({e})"))?;
            n += 1;
        }
        if n == 0 {
            return Err("the CA file holds no certificate".into());
        }
        Ok(roots)
    }

    fn chain_and_key(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the certificate file is not PEM certificates ({e})"))?;
        if chain.is_empty() {
            return Err("the certificate file holds no certificate".into());
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| format!("the key file holds no usable private key ({e})"))?;
        Ok((chain, key))
    }

    /// The controller's (TLS server's) configuration: TLS 1.3 only, a
    /// client certificate from the CA required.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let p = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), p.clone())
                .build()
                .map_err(|e| format!("the CA cannot verify clients ({e})"))?;
        let (chain, key) = self.chain_and_key()?;
        let mut c = ServerConfig::builder_with_provider(p)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| format!("the certificate and key do not go together ({e})"))?;
        c.send_tls13_tickets = 0;
        c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Arc::new(c))
    }

    /// An edge's (TLS client's) configuration: TLS 1.3 only, the
    /// controller's chain checked against the CA (serverAuth), its own
    /// certificate presented.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let p = provider();
        let verifier = Arc::new(CaServerVerifier {
            roots: self.roots()?,
            provider: p.clone(),
        });
        let (chain, key) = self.chain_and_key()?;
        let mut c = ClientConfig::builder_with_provider(p)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the certificate and key do not go together ({e})"))?;
        c.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(c))
    }
}

/// The edge's check of the controller: the chain to the CA, validity, the
/// serverAuth key usage; no host name (see the module doc).
#[derive(Debug)]
struct CaServerVerifier {
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CaServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // TLS 1.3 only: never called.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS failure as Cisco's codes: (what we found wrong, what the peer
/// told us it found wrong in ours).
pub fn error_codes(e: &rustls::Error) -> (ErrorCode, ErrorCode) {
    use CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => (ErrorCode::CertExprd, ErrorCode::NoErr),
        rustls::Error::InvalidCertificate(_) => (ErrorCode::CrtVerFl, ErrorCode::NoErr),
        rustls::Error::NoCertificatesPresented => (ErrorCode::NoSlPrCrt, ErrorCode::NoErr),
        rustls::Error::AlertReceived(a) => (ErrorCode::NoErr, alert_code(*a)),
        _ => (ErrorCode::HsFail, ErrorCode::NoErr),
    }
}

fn alert_code(a: AlertDescription) -> ErrorCode {
    use AlertDescription as A;
    match a {
        A::CertificateExpired => ErrorCode::CertExprd,
        A::UnknownCA
        | A::BadCertificate
        | A::DecryptError
        | A::UnsupportedCertificate
        | A::CertificateUnknown
        | A::CertificateRevoked
        | A::AccessDenied => ErrorCode::CrtVerFl,
        A::CertificateRequired => ErrorCode::NoSlPrCrt,
        _ => ErrorCode::HsFail,
    }
}

/// What the cores check in a peer's (already chain-verified) certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerCert {
    /// Subject O.
    pub organization: String,
    /// Subject OU: `edge` or `controller` from `xdpsec pki`.
    pub role: String,
    /// Subject serialNumber, upper-case hex.
    pub serial: String,
    /// The first IPv4 iPAddress subjectAltName: the system-ip.
    pub system_ip: Option<Ipv4Addr>,
}

impl PeerCert {
    /// Reads the subject and SAN of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<PeerCert, String> {
        use yasna::{
            Tag,
            tags::{TAG_IA5STRING, TAG_PRINTABLESTRING, TAG_UTF8STRING},
        };
        let mut p = PeerCert::default();
        let mut rest: Vec<Vec<u8>> = Vec::new();
        yasna::parse_der(der, |r| {
            r.read_sequence(|r| {
                r.next().read_sequence(|r| {
                    r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_u8()))?;
                    for _ in 0..4 {
                        r.next().read_der()?;
                    }
                    r.next().read_sequence_of(|r| {
                        r.read_set_of(|r| {
                            r.read_sequence(|r| {
                                let oid = r.next().read_oid()?;
                                let v = r.next();
                                let s = match v.lookahead_tag()? {
                                    TAG_UTF8STRING => v.read_utf8string()?,
                                    TAG_PRINTABLESTRING => v.read_printable_string()?,
                                    TAG_IA5STRING => v.read_ia5_string()?,
                                    _ => {
                                        v.read_der()?;
                                        return Ok(());
                                    }
                                };
                                match oid.components().as_slice() {
                                    [2, 5, 4, 10] => p.organization = s,
                                    [2, 5, 4, 11] => p.role = s,
                                    [2, 5, 4, 5] => p.serial = s.to_ascii_uppercase(),
                                    _ => {}
                                }
                                Ok(())
                            })
                        })
                    })?;
                    r.next().read_der()?;
                    while let Some(x) = r.read_optional(|r| r.read_der())? {
                        rest.push(x);
                    }
                    Ok(())
                })?;
                r.next().read_der()?;
                r.next().read_der()?;
                Ok(())
            })
        })
        .map_err(|e| format!("not an X.509 certificate ({e})"))?;
        for x in rest {
            let Ok(exts) = yasna::parse_der(&x, |r| {
                r.read_tagged(Tag::context(3), |r| {
                    r.collect_sequence_of(|r| {
                        r.read_sequence(|r| {
                            let oid = r.next().read_oid()?;
                            r.read_optional(|r| r.read_bool())?;
                            Ok((oid, r.next().read_bytes()?))
                        })
                    })
                })
            }) else {
                continue;
            };
            for (oid, value) in exts {
                if oid.components().as_slice() != [2, 5, 29, 17] {
                    continue;
                }
                let ips = yasna::parse_der(&value, |r| {
                    r.collect_sequence_of(|r| {
                        if r.lookahead_tag()? == Tag::context(7) {
                            Ok(Some(r.read_tagged_implicit(Tag::context(7), |r| {
                                r.read_bytes()
                            })?))
                        } else {
                            r.read_der()?;
                            Ok(None)
                        }
                    })
                })
                .map_err(|e| format!("bad subjectAltName ({e})"))?;
                p.system_ip = ips
                    .into_iter()
                    .flatten()
                    .find_map(|b| <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from));
            }
        }
        Ok(p)
    }
}

/// One TLS connection's state, fed and drained by a shell.
pub struct Link {
    conn: rustls::Connection,
    /// The handshake's end was reported by [`Link::input`].
    up: bool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Link {{ handshaking: {} }}", self.conn.is_handshaking())
    }
}

/// Reads from a byte slice into rustls's input buffer, zeroing the whole
/// free part rustls offers first. rustls decrypts each record in place in
/// that buffer and, once processed, only moves the unprocessed bytes to its
/// front: the plaintext of earlier records (TLOC keys) would stay behind
/// them for the connection's life, as long as no later input is as long.
/// Every read wipes it, so plaintext lasts until the next read at most.
struct WipingReader<'a, 'b>(&'a mut &'b [u8]);

impl std::io::Read for WipingReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        buf.zeroize();
        Read::read(self.0, buf)
    }
}

/// What [`Link::receive`] got out of the bytes.
#[derive(Default)]
pub struct Received {
    /// Application data (frames may carry keys: zeroized on drop).
    pub plain: Zeroizing<Vec<u8>>,
    /// The peer closed its side (close_notify).
    pub closed: bool,
}

/// Why a TLS handshake failed (or a session broke), in Cisco's codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFailure {
    /// What we found wrong.
    pub local: ErrorCode,
    /// What the peer told us (its alert).
    pub remote: ErrorCode,
    /// rustls's reason (or the certificate's).
    pub detail: String,
}

/// What bytes read from a control connection's socket came to, through
/// [`Link::input`]: both shells' read path (TLS records → the handshake's
/// end → application bytes for the core's [`FrameReader`](crate::wire::FrameReader)).
#[derive(Default)]
pub struct LinkInput {
    /// The handshake ended with these bytes: the peer's certificate.
    pub up: Option<PeerCert>,
    /// Application data (frames may carry keys: zeroized on drop).
    pub plain: Zeroizing<Vec<u8>>,
    /// The peer closed its side (close_notify).
    pub closed: bool,
}

impl Link {
    /// Feeds bytes read from the socket and moves the records to send
    /// (handshake, or the alert that says why on an error) into `out`.
    /// The first call after the handshake ends reports the peer's
    /// certificate in [`LinkInput::up`]; a certificate whose fields do not
    /// parse is a failure (`CRTVERFL`). On an error the link is dead.
    pub fn input(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<LinkInput, TlsFailure> {
        let got = self.receive(data);
        self.pull(out);
        let got = got.map_err(|e| {
            let (local, remote) = error_codes(&e);
            TlsFailure {
                local,
                remote,
                detail: e.to_string(),
            }
        })?;
        let mut up = None;
        if !self.up && !self.conn.is_handshaking() {
            self.up = true;
            up = Some(self.peer().map_err(|detail| TlsFailure {
                local: ErrorCode::CrtVerFl,
                remote: ErrorCode::NoErr,
                detail,
            })?);
        }
        Ok(LinkInput {
            up,
            plain: got.plain,
            closed: got.closed,
        })
    }

    /// The edge's side of a connection to the controller at `peer`.
    pub fn client(cfg: Arc<ClientConfig>, peer: IpAddr) -> Result<Link, rustls::Error> {
        let mut conn = rustls::ClientConnection::new(cfg, ServerName::IpAddress(peer.into()))?;
        conn.set_buffer_limit(None);
        Ok(Link {
            conn: conn.into(),
            up: false,
        })
    }

    /// The controller's side of an accepted connection.
    pub fn server(cfg: Arc<ServerConfig>) -> Result<Link, rustls::Error> {
        let mut conn = rustls::ServerConnection::new(cfg)?;
        conn.set_buffer_limit(None);
        Ok(Link {
            conn: conn.into(),
            up: false,
        })
    }

    /// Feeds bytes read from the socket. On an error the link is dead;
    /// [`Link::pull`] still yields the alert that tells the peer why.
    pub fn receive(&mut self, mut data: &[u8]) -> Result<Received, rustls::Error> {
        let mut got = Received::default();
        let mut buf = Zeroizing::new([0u8; 4096]);
        while !data.is_empty() {
            if self.conn.read_tls(&mut WipingReader(&mut data)).is_err() {
                return Err(rustls::Error::General("TLS input buffer full".into()));
            }
            let state = self.conn.process_new_packets()?;
            loop {
                match self.conn.reader().read(&mut buf[..]) {
                    Ok(0) => {
                        got.closed = true;
                        break;
                    }
                    Ok(n) => crate::zbuf::extend(&mut got.plain, &buf[..n]),
                    Err(_) => break,
                }
            }
            if state.peer_has_closed() {
                got.closed = true;
            }
        }
        Ok(got)
    }

    /// Queues application data (sent once the handshake allows).
    pub fn send(&mut self, data: &[u8]) {
        // Unlimited buffer (set_buffer_limit(None)): write takes it all.
        let _ = self.conn.writer().write_all(data);
    }

    /// Moves the TLS records waiting to be written into `out`.
    pub fn pull(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            if self.conn.write_tls(out).is_err() {
                break;
            }
        }
    }

    /// Still in the handshake.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The peer's end-entity certificate, once the handshake is done.
    pub fn peer(&self) -> Result<PeerCert, String> {
        let certs = self
            .conn
            .peer_certificates()
            .ok_or_else(|| "no peer certificate".to_string())?;
        let ee = certs
            .first()
            .ok_or_else(|| "no peer certificate".to_string())?;
        PeerCert::from_der(ee)
    }

    /// Queues a close_notify.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::WipingReader;

    #[test]
    fn the_reader_zeroes_all_of_the_free_space_it_is_offered() {
        // rustls offers the free part of its input buffer, where the
        // plaintext of records it already processed lies (decrypted in
        // place, then left behind the unprocessed bytes it moved forward).
        let mut buf = [0x5cu8; 4096];
        let input = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        let mut data = &input[..];
        let n = WipingReader(&mut data).read(&mut buf[100..]).unwrap();
        assert_eq!(n, 10);
        assert_eq!(&buf[100..110], &input);
        assert!(buf[110..].iter().all(|&b| b == 0), "stale bytes left");
        assert!(buf[..100].iter().all(|&b| b == 0x5c), "outside the offer");
        assert!(data.is_empty());
    }
}
