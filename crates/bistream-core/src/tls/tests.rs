//! Tests of each TLS setting: real rustls handshakes between our client configuration and a
//! rustls server, pumped through memory (no sockets), with certificates made by rcgen the way
//! people make them (self-signed with and without `CA:TRUE`, a private CA, expired, wrong name).

use super::*;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::{ClientConnection, ServerConfig, ServerConnection};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A server identity: its certificate (PEM and DER) and key.
struct Identity {
    pem: String,
    der: CertificateDer<'static>,
    key: KeyPair,
}

fn params(names: &[&str]) -> CertificateParams {
    CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

/// Self-signed; `ca` marks it `CA:TRUE` as `openssl req -x509` does.
fn self_signed(names: &[&str], ca: bool) -> Identity {
    let mut p = params(names);
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Identity {
        pem: cert.pem(),
        der: cert.der().clone(),
        key,
    }
}

fn server_config(id: &Identity) -> Arc<ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.serialize_der()));
    Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![id.der.clone()], key)
            .unwrap(),
    )
}

/// Runs a full handshake in memory; the client's verdict on the server.
fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    name: &str,
) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut c = ClientConnection::new(client, name)?;
    let mut s = ServerConnection::new(server)?;
    for _ in 0..20 {
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        // A server-side failure means the client sent an alert; the client's own error
        // (returned below) is the verdict we want.
        let server_ok = s.process_new_packets().is_ok();
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        c.process_new_packets()?;
        assert!(server_ok, "the server failed while the client did not");
    }
    panic!("handshake did not finish");
}

fn ca_file_with(dir: &tempfile::TempDir, pems: &[&str]) -> TlsOptions {
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, pems.concat()).unwrap();
    TlsOptions::CaFile(path)
}

fn cfg(opts: &TlsOptions) -> Arc<ClientConfig> {
    client_config(opts).unwrap()
}

fn invalid(e: rustls::Error) -> CertificateError {
    match e {
        rustls::Error::InvalidCertificate(c) => c,
        other => panic!("expected a certificate error, got {other:?}"),
    }
}

#[test]
fn ca_file_errors_are_specific() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let e = client_config(&TlsOptions::CaFile(missing)).unwrap_err();
    assert!(matches!(e, TlsConfigError::CaFileUnreadable { .. }), "{e}");
    assert!(e.to_string().contains("cannot read CA file"), "{e}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no pem here\n").unwrap();
    let e = client_config(&TlsOptions::CaFile(empty)).unwrap_err();
    assert!(matches!(e, TlsConfigError::CaFileEmpty { .. }), "{e}");
    assert!(e.to_string().contains("holds no certificate"), "{e}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = client_config(&TlsOptions::CaFile(garbage)).unwrap_err();
    assert!(matches!(e, TlsConfigError::CaFileBadPem { .. }), "{e}");

    // A control character in the path is escaped in the message.
    let odd = dir.path().join("odd\x1b[31m.pem");
    let e = client_config(&TlsOptions::CaFile(odd)).unwrap_err();
    assert!(!e.to_string().contains('\x1b'), "{e}");
}

#[test]
fn ca_file_with_a_real_certificate_loads() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, cert.cert.pem()).unwrap();
    client_config(&TlsOptions::CaFile(path)).unwrap();
    client_config(&TlsOptions::DangerAcceptAnyCertificate).unwrap();
}

/// The usual self-signed certificate (`CA:TRUE`, as `openssl req -x509` makes it) is accepted
/// when the CA file holds it: WebPKI alone refuses it with `CaUsedAsEndEntity`.
#[test]
fn ca_file_accepts_a_self_signed_ca_true_certificate_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let id = self_signed(&["localhost", "127.0.0.1"], true);
    let opts = ca_file_with(&dir, &[&id.pem]);
    handshake(cfg(&opts), server_config(&id), "localhost").unwrap();
    handshake(cfg(&opts), server_config(&id), "127.0.0.1").unwrap();

    // What plain WebPKI checking says about the same certificate (the bug this fixes).
    let mut roots = RootCertStore::empty();
    roots.add(id.der.clone()).unwrap();
    let plain = Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let e = handshake(plain, server_config(&id), "localhost").unwrap_err();
    // rustls passes WebPKI's `CaUsedAsEndEntity` on as an `Other` certificate error.
    let text = format!("{:?}", invalid(e));
    assert!(text.contains("CaUsedAsEndEntity"), "{text}");
}

#[test]
fn ca_file_pin_still_checks_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let id = self_signed(&["localhost"], true);
    let opts = ca_file_with(&dir, &[&id.pem]);
    let e = handshake(cfg(&opts), server_config(&id), "relay.example.org").unwrap_err();
    assert!(
        matches!(
            invalid(e),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        ),
        "wrong host name must be refused"
    );
}

#[test]
fn ca_file_pin_still_checks_the_dates() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = params(&["localhost"]);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.not_before = rcgen::date_time_ymd(2001, 1, 1);
    p.not_after = rcgen::date_time_ymd(2002, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    let id = Identity {
        pem: cert.pem(),
        der: cert.der().clone(),
        key,
    };
    let opts = ca_file_with(&dir, &[&id.pem]);
    let e = handshake(cfg(&opts), server_config(&id), "localhost").unwrap_err();
    assert!(
        matches!(
            invalid(e),
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        ),
        "an expired certificate must be refused"
    );
}

#[test]
fn ca_file_refuses_a_certificate_it_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = self_signed(&["localhost"], true);
    let other = self_signed(&["localhost"], true);
    let opts = ca_file_with(&dir, &[&trusted.pem]);
    // Refused whatever its kind (the pin is the exact certificate, not its names).
    for other in [other, self_signed(&["localhost"], false)] {
        let e = handshake(cfg(&opts), server_config(&other), "localhost").unwrap_err();
        invalid(e);
    }
    let e = handshake(
        cfg(&opts),
        server_config(&self_signed(&["localhost"], false)),
        "localhost",
    )
    .unwrap_err();
    let e = invalid(e);
    assert!(
        matches!(
            e,
            CertificateError::UnknownIssuer | CertificateError::BadSignature
        ),
        "{e:?}"
    );
}

#[test]
fn ca_file_accepts_a_plain_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let id = self_signed(&["localhost"], false);
    let opts = ca_file_with(&dir, &[&id.pem]);
    handshake(cfg(&opts), server_config(&id), "localhost").unwrap();
}

/// A private CA in the file; the server presents a leaf that CA signed.
#[test]
fn ca_file_accepts_a_leaf_signed_by_a_ca_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = params(&[]);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = params(&["localhost"])
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let id = Identity {
        pem: leaf.pem(),
        der: leaf.der().clone(),
        key: leaf_key,
    };
    // Other certificates in the file do not get in the way.
    let unrelated = self_signed(&["elsewhere"], true);
    let opts = ca_file_with(&dir, &[&unrelated.pem, &ca_cert.pem()]);
    handshake(cfg(&opts), server_config(&id), "localhost").unwrap();
    // The leaf is checked against the CA's names rules too.
    let e = handshake(cfg(&opts), server_config(&id), "other.example").unwrap_err();
    assert!(matches!(
        invalid(e),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
    ));
}

#[test]
fn system_roots_refuse_a_self_signed_certificate() {
    match client_config(&TlsOptions::SystemRoots) {
        Ok(c) => {
            let plain = self_signed(&["localhost"], false);
            let e = invalid(handshake(c.clone(), server_config(&plain), "localhost").unwrap_err());
            assert!(matches!(e, CertificateError::UnknownIssuer), "{e:?}");
            let ca = self_signed(&["localhost"], true);
            invalid(handshake(c, server_config(&ca), "localhost").unwrap_err());
        }
        // A machine without root certificates: the option says so instead of trusting nothing.
        Err(e) => assert!(matches!(e, TlsConfigError::NoSystemRoots { .. }), "{e}"),
    }
}

#[test]
fn trust_nothing_refuses_every_certificate() {
    let c = trust_nothing().unwrap();
    let id = self_signed(&["localhost"], false);
    let e = invalid(handshake(c, server_config(&id), "localhost").unwrap_err());
    assert!(matches!(e, CertificateError::UnknownIssuer), "{e:?}");
}

#[test]
fn certificate_errors_are_found_in_the_cause_chain() {
    let rustls_err = rustls::Error::InvalidCertificate(CertificateError::Expired);
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_err);
    assert_eq!(certificate_error(&io), Some(CertificateError::Expired));
    let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    assert_eq!(certificate_error(&plain), None);
}

#[test]
fn errors_carry_a_status() {
    let e = client_config(&TlsOptions::CaFile("/no/such/file.pem".into())).unwrap_err();
    assert_eq!(e.status(), Status::InvalidInput);
    assert_eq!(
        TlsConfigError::NoSystemRoots { errors: 0 }.status(),
        Status::Internal
    );
}

#[test]
fn danger_accepts_any_certificate_and_name() {
    let id = self_signed(&["localhost"], true);
    let c = cfg(&TlsOptions::DangerAcceptAnyCertificate);
    handshake(c.clone(), server_config(&id), "localhost").unwrap();
    handshake(c, server_config(&id), "anything.example").unwrap();
}

#[test]
fn custom_config_is_used_as_is() {
    let id = self_signed(&["localhost"], false);
    let mut roots = RootCertStore::empty();
    roots.add(id.der.clone()).unwrap();
    let custom = Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let got = cfg(&TlsOptions::Custom(custom.clone()));
    assert!(Arc::ptr_eq(&got, &custom));
    handshake(got, server_config(&id), "localhost").unwrap();
}
