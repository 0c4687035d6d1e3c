//! Security (issue 15): a relay serving `wss://` with a self-signed certificate is refused by
//! the real ProxyStore `RelayClient` (proxystore 1.1.0, Python's default SSL context) when the
//! certificate is not trusted, and accepted when it is given as the CA file; the relay keeps
//! serving after the refused handshake. (Our own client's refusal is in
//! `relay_client/tls.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Stdio;
use std::time::Duration;

use bistream_testkit::{python_scripts_dir, relay_python, Peer};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bistream");
const T: Duration = Duration::from_secs(30);

async fn python_client(url: &str, cafile: Option<&std::path::Path>) -> (Option<i32>, String) {
    let mut cmd = Command::new(relay_python());
    cmd.arg(python_scripts_dir().join("relay_client_peer.py"))
        .arg(url)
        .args(["--mode", "recv", "--count", "0"]);
    if let Some(ca) = cafile {
        cmd.arg("--cafile").arg(ca);
    }
    let out = tokio::time::timeout(T, cmd.stdin(Stdio::null()).kill_on_drop(true).output())
        .await
        .expect("the Python client finished")
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn the_real_relay_client_refuses_an_untrusted_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (certfile, keyfile) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&certfile, cert.cert.pem()).unwrap();
    std::fs::write(&keyfile, cert.signing_key.serialize_pem()).unwrap();

    let mut cmd = Command::new(BIN);
    cmd.args(["relay", "serve", "--host", "127.0.0.1", "--port", "0"])
        .arg("--certfile")
        .arg(&certfile)
        .arg("--keyfile")
        .arg(&keyfile)
        .args(["--log-level", "warn"]);
    let mut relay = Peer::spawn(cmd).expect("spawn the relay");
    let line = relay.wait_for_line("relay listening on ", T).await;
    relay.drain_output();
    let url = line
        .trim()
        .trim_start_matches("relay listening on ")
        .to_string();
    assert!(url.starts_with("wss://"), "{url}");

    let (code, out) = python_client(&url, None).await;
    assert_ne!(
        code,
        Some(0),
        "connected to an untrusted certificate: {out}"
    );
    assert!(
        out.contains("CERTIFICATE_VERIFY_FAILED"),
        "not a certificate refusal: {out}"
    );
    assert!(!out.contains("READY"), "{out}");

    // Trusting the certificate: registers (and the relay survived the refused handshake).
    let (code, out) = python_client(&url, Some(&certfile)).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("READY "), "{out}");
    relay.check_alive().unwrap();
}
