//! What clients send cannot write the log (issue 14, items 5 and 7): client names are escaped
//! (no forged lines), logged values are cut, and client-caused lines are rate limited with the
//! suppressed ones counted (per client address and per server). One test per binary: the log capture is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use uuid::Uuid;

#[tokio::test]
async fn clients_cannot_forge_or_flood_the_log() {
    let cap = LogCapture::install(tracing::Level::INFO);
    let relay = start(config()).await;

    // Item 7: a name with a newline, a forged line and ESC bytes.
    let forged = "innocent\n2026-01-01T00:00:00.000000Z  INFO bistream: registered client name=admin\x1b[31m";
    let mut ws = connect(&relay).await;
    register(&mut ws, forged, Uuid::new_v4()).await;
    eventually("registration logged", || cap.contains("registered client")).await;
    let log = cap.take();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01")),
        "forged line:\n{log}"
    );
    assert!(!log.contains('\x1b'), "raw ESC in log:\n{log:?}");
    assert!(
        log.contains("innocent\\n2026"),
        "escaped name missing:\n{log}"
    );

    // Item 5: 100 unauthenticated connections, each sending a ~1 MiB unknown field name.
    let field = "f".repeat((1 << 20) - 100);
    let text = format!(r#"{{"message_type": "relay_registration", "{field}": 1}}"#);
    for _ in 0..100 {
        let mut c = connect(&relay).await;
        send(&mut c, text.clone()).await;
        assert_eq!(expect_close(&mut c).await.0, 4000);
    }
    assert_eq!(relay.metrics().closes_with(4000), 100);
    let log = cap.take();
    // Before: 100 MB of WARN lines. Now each line quotes at most a short escaped excerpt.
    assert!(log.len() < 100 * 1024, "{} bytes of log", log.len());
    assert!(
        log.lines().all(|l| l.len() < 2048),
        "a line is too long:\n{log}"
    );

    // A flood of bounces (unknown peer, logged at INFO) is rate limited and counted.
    let (mut a, ua) = registered(&relay, "a").await;
    for _ in 0..500 {
        send(&mut a, peer_message(ua, "a", Uuid::new_v4(), "d")).await;
        let _ = recv_json(&mut a).await;
    }
    let log = cap.take();
    let bounce_lines = log.matches("unknown peer bounced").count();
    assert!(bounce_lines <= 200, "{bounce_lines} bounce lines");
    let metrics = relay.metrics().render();
    let suppressed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("relay_log_lines_suppressed_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(suppressed >= 300, "{metrics}");
    // Per client: the one flooding address went over its own budget (a repeated offender,
    // counted), not only over the server's.
    let limited: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("relay_log_clients_limited_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(limited >= 1, "{metrics}");
    relay.shutdown().await;
}
