//! RSocket interop with the JavaScript RSocket 1.0 client (`rsocket-core` +
//! `rsocket-websocket-client` 1.0.0-alpha.3 over the `ws` package, pinned in
//! scripts/interop/rsocket-js/package-lock.json and installed by scripts/setup-test-env with
//! `npm ci`), run with `node` against `bistream rpc serve --protocol rsocket --transport ws`.
//!
//! The checks live in scripts/interop/rsocket-js/interop.js: the four models, routing in both
//! composite forms, errors, REQUEST_N, CANCEL, a channel driven by our REQUEST_N grants, and a
//! 300 KiB request and reply fragmented both ways. Without node or the installed packages the
//! test fails with the setup hint, unless `BISTREAM_SKIP_JS_INTEROP=1` opts out (`BISTREAM_NODE`
//! picks the node binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use bistream_testkit::{workspace_root, Peer};
use tokio::process::Command;

const T: Duration = Duration::from_secs(60);
const BIN: &str = env!("CARGO_BIN_EXE_bistream");
/// Checks interop.js prints `ok` for (a new check there must bump this).
const CHECKS: usize = 14;

fn js_dir() -> PathBuf {
    workspace_root().join("scripts/interop/rsocket-js")
}

/// The node binary, or `None` when the test is opted out; panics with the setup hint otherwise.
fn node() -> Option<String> {
    if std::env::var("BISTREAM_SKIP_JS_INTEROP").as_deref() == Ok("1") {
        eprintln!("BISTREAM_SKIP_JS_INTEROP=1: JavaScript RSocket interop skipped");
        return None;
    }
    let node = std::env::var("BISTREAM_NODE").unwrap_or_else(|_| "node".into());
    let ok = std::process::Command::new(&node)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{node} --version` failed: install Node.js >= 18 with npm and run scripts/setup-test-env \
         (or set BISTREAM_NODE, or BISTREAM_SKIP_JS_INTEROP=1 to skip this test)"
    );
    let modules = js_dir().join("node_modules/rsocket-core");
    assert!(
        modules.exists(),
        "{} is missing: run scripts/setup-test-env (npm ci), or set BISTREAM_SKIP_JS_INTEROP=1",
        modules.display()
    );
    Some(node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_client_against_our_websocket_server() {
    let Some(node) = node() else { return };
    let mut cmd = Command::new(BIN);
    // A 64 KiB frame limit makes us fragment the 300 KiB reply (the client fragments its request
    // at 32 KiB).
    cmd.args([
        "rpc",
        "serve",
        "--protocol",
        "rsocket",
        "--transport",
        "ws",
        "--max-frame-bytes",
        "65536",
        "127.0.0.1:0",
    ]);
    let mut server = Peer::spawn(cmd).unwrap();
    let line = server.next_stdout_line(T).await.expect("address line");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ws://"))
        .unwrap_or_else(|| panic!("no ws:// address in {line:?}"))
        .trim_end_matches('/')
        .to_string();
    server.drain_stderr();

    let mut cmd = Command::new(node);
    cmd.current_dir(js_dir())
        .arg("interop.js")
        .arg(format!("ws://{addr}/"));
    let mut js = Peer::spawn(cmd).unwrap();
    let mut oks = Vec::new();
    let mut done = None;
    while let Some(line) = js.next_stdout_line(T).await {
        assert!(!line.starts_with("FAIL"), "{line}\n{}", js.output_tail());
        if let Some(n) = line.strip_prefix("done ") {
            done = Some(n.trim().parse::<usize>().unwrap());
        } else {
            assert!(line.starts_with("ok "), "{line}");
            oks.push(line);
        }
    }
    assert_eq!(done, Some(CHECKS), "{oks:?}\n{}", js.output_tail());
    assert_eq!(oks.len(), CHECKS, "{oks:?}");

    // The fire-and-forget reached the handler (the demo `log` prints it on stdout).
    let log = server.next_stdout_line(T).await.unwrap();
    assert_eq!(log.trim(), r#"{"operation":"log","from":"javascript"}"#);
}
