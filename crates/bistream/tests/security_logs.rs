//! Security (issue 15): bearer tokens never reach a log or an error message, checked on the
//! processes users run. `bistream relay serve` with static tokens at `--log-level trace`
//! (every target, dependencies included) and the `bistream relay listen` client at `trace`
//! too, once with a good token and once with an unknown one; every line either process
//! writes (stdout and stderr) is searched for both tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Stdio;
use std::time::Duration;

use bistream_testkit::{send_signal, LoggedChild};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bistream");
const T: Duration = Duration::from_secs(30);
const GOOD: &str = "tok-good-5f0e2d9c";
const BAD: &str = "tok-unknown-81b7aa43";

/// `bistream ARGS` at trace level to completion: (exit code, stdout + stderr).
async fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::time::timeout(
        T,
        Command::new(BIN)
            .args(args)
            .env("BISTREAM_LOG_LEVEL", "trace")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the client finished")
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn assert_no_token(who: &str, text: &str) {
    for t in [GOOD, BAD] {
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(t)).collect();
        assert!(leaks.is_empty(), "{who} wrote a token: {leaks:#?}");
    }
}

#[tokio::test]
async fn tokens_stay_out_of_server_and_client_logs_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, format!("[tokens]\n\"{GOOD}\" = \"alice\"\n")).unwrap();
    let log = dir.path().join("server.log");
    let mut cmd = Command::new(BIN);
    cmd.args(["relay", "serve", "--host", "127.0.0.1", "--port", "0"])
        .args(["--auth-method", "tokens", "--auth-tokens-file"])
        .arg(&tokens)
        .args(["--log-level", "trace"])
        .env("NO_COLOR", "1");
    let LoggedChild {
        child: mut server,
        first_line: first,
        stdout: mut lines,
    } = LoggedChild::spawn(cmd, &log, T).await.unwrap();
    let url = first
        .trim()
        .strip_prefix("relay listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let mut server_out = String::new();

    let (code, text) = run(&[
        "relay",
        "listen",
        &url,
        "--count",
        "0",
        "--header",
        &format!("Authorization: Bearer {GOOD}"),
    ])
    .await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("TRACE"),
        "the client logged nothing at trace: {text}"
    );
    assert_no_token("the client (good token)", &text);

    let (code, text) = run(&[
        "relay",
        "listen",
        &url,
        "--count",
        "0",
        "--header",
        &format!("Authorization: Bearer {BAD}"),
    ])
    .await;
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("4002"), "{text}");
    assert_no_token("the client (unknown token)", &text);

    assert!(send_signal(server.id().unwrap(), "TERM"));
    tokio::time::timeout(T, server.wait())
        .await
        .expect("the relay stopped")
        .unwrap();
    while let Ok(Some(l)) = lines.next_line().await {
        server_out.push_str(&l);
        server_out.push('\n');
    }
    server_out.push_str(&std::fs::read_to_string(&log).unwrap());
    assert!(
        server_out.contains("TRACE"),
        "the server's trace log is missing: {server_out}"
    );
    assert_no_token("the server", &server_out);
}
