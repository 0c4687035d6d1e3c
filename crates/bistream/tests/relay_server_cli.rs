//! `bistream relay serve` as a process: the stdout contract, the ops endpoint, precedence of
//! flags > environment > config file, validation errors (exit 2), SIGINT, SIGHUP reload, and
//! the no-argument default (127.0.0.1:8700).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod relay_server_support;
use bistream_testkit::http_get;
use relay_server_support::*;

#[tokio::test]
async fn prints_address_lines_and_serves_health_and_metrics() {
    let mut s = serve(&["--metrics-addr", "127.0.0.1:0"]).await;
    s.peer.drain_stderr();
    let m = s.metrics.clone().unwrap();
    let (status, body) = http_get(&m, "/healthz").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let (status, body) = http_get(&m, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("relay_connections_open 0"), "{body}");
    signal(&s.peer, "INT");
    assert_eq!(exit_code(&mut s.peer).await, Some(0));
}

#[tokio::test]
async fn flags_override_env_override_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relay.toml");
    // The file asks for a port and host that cannot work here; env and flags win.
    std::fs::write(&cfg, "host = \"192.0.2.1\"\nport = 1\nmax_message_bytes = 100\n\n[logging]\ncurrent_client_interval = 0\n").unwrap();
    let mut s = serve_with(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--max-message-bytes",
            "4096",
        ],
        &[
            ("BISTREAM_RELAY_HOST", "256.256.256.256"),
            ("BISTREAM_RELAY_MAX_MESSAGE_BYTES", "10"),
        ],
    )
    .await;
    s.peer.drain_stderr();
    // --max-message-bytes 4096 (flag) beat 10 (env) and 100 (file): a ~2 KiB message passes,
    // and 4096+ closes 4003.
    python("oversize", &s.url, &["5000"]).await;

    // Env beats the file when no flag is given.
    let mut cmd = bistream();
    cmd.args(["relay", "serve", "--config", cfg.to_str().unwrap()])
        .env("BISTREAM_RELAY_HOST", "127.0.0.1")
        .env("BISTREAM_RELAY_PORT", "0");
    let mut p = bistream_testkit::Peer::spawn(cmd).unwrap();
    let line = p.next_stdout_line(T).await.unwrap();
    assert!(
        line.starts_with("relay listening on ws://127.0.0.1:"),
        "{line}"
    );
    signal(&p, "TERM");
    assert_eq!(exit_code(&mut p).await, Some(0));
}

/// Runs `relay serve ARGS` (`--port 0` added unless ARGS set the port) and expects exit 2.
async fn expect_config_error(args: &[&str], needle: &str) {
    let mut args = args.to_vec();
    if !args.contains(&"--port") {
        args.extend(["--port", "0"]);
    }
    let args = &args[..];
    let out = tokio::time::timeout(T, bistream().args(["relay", "serve"]).args(args).output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in {stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout on error");
}

#[tokio::test]
async fn bad_settings_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "max_mesage_bytes = 10\n").unwrap();
    let badauth = dir.path().join("auth.toml");
    std::fs::write(&badauth, "[auth]\nmethod = \"globus\"\n[auth.kwargs]\nclient_id = \"x\"\nclient_secret = \"y\"\nscopes = \"z\"\n").unwrap();
    let badtokens = dir.path().join("tokens.toml");
    std::fs::write(&badtokens, "[tokens]\n\"t\" = 1\n").unwrap();
    expect_config_error(&["--config", typo.to_str().unwrap()], "max_mesage_bytes").await;
    expect_config_error(&["--config", badauth.to_str().unwrap()], "scopes").await;
    expect_config_error(
        &["--config", "/nonexistent/relay.toml"],
        "cannot read config file",
    )
    .await;
    expect_config_error(&["--certfile", "/nonexistent/cert.pem"], "certfile").await;
    expect_config_error(&["--max-message-bytes", "0"], "max_message_bytes").await;
    expect_config_error(&["--auth-method", "kerberos"], "unknown auth method").await;
    expect_config_error(
        &[
            "--auth-method",
            "tokens",
            "--auth-tokens-file",
            badtokens.to_str().unwrap(),
        ],
        "not a string",
    )
    .await;
    expect_config_error(&["--host", "256.1.1.1"], "cannot listen").await;
    // clap rejects a bad port itself (exit 2 too).
    expect_config_error(&["--port", "70000"], "70000").await;
}

#[tokio::test]
async fn sighup_reloads_the_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, "[tokens]\n\"old-token\" = \"alice\"\n").unwrap();
    let mut s = serve(&[
        "--auth-method",
        "tokens",
        "--auth-tokens-file",
        tokens.to_str().unwrap(),
    ])
    .await;
    std::fs::write(
        &tokens,
        "[tokens]\n\"alice-token\" = \"alice\"\n\"eve-token\" = \"eve\"\n",
    )
    .unwrap();
    signal(&s.peer, "HUP");
    s.peer
        .wait_for_line("SIGHUP: authentication reloaded", T)
        .await;
    s.peer.drain_stderr();
    // The new tokens work (and the old one does not: the scenario's "bad token" is any other).
    python("auth", &s.url, &["alice-token", "eve-token"]).await;
    signal(&s.peer, "TERM");
    assert_eq!(exit_code(&mut s.peer).await, Some(0));
}

#[tokio::test]
async fn no_arguments_serves_on_127_0_0_1_8700() {
    let mut p = bistream_testkit::Peer::spawn(bistream()).unwrap();
    // Port 8700 may be taken on a busy machine: then the error names the same default address.
    let line = loop {
        let l = p.wait_for_line("127.0.0.1:8700", T).await;
        if l.starts_with("relay listening") || l.contains("cannot listen") {
            break l;
        }
    };
    assert!(
        line == "relay listening on ws://127.0.0.1:8700"
            || line.contains("cannot listen on 127.0.0.1:8700"),
        "{line}"
    );
    if line.starts_with("relay listening") {
        signal(&p, "TERM");
        assert_eq!(exit_code(&mut p).await, Some(0));
    }
}

#[tokio::test]
async fn logs_never_contain_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[tokens]\n\"alice-token\" = \"alice\"\n\"eve-token\" = \"eve\"\n",
    )
    .unwrap();
    let mut s = serve(&[
        "--log-level",
        "debug",
        "--auth-method",
        "tokens",
        "--auth-tokens-file",
        tokens.to_str().unwrap(),
    ])
    .await;
    // Registrations with good and bad tokens (the scenario also sends "Bearer wrong").
    let lines = tokio::join!(
        python("auth", &s.url, &["alice-token", "eve-token"]),
        async {
            // Read the server's log while the scenario runs, so its pipe never fills.
            s.peer
                .wait_for_line("ForbiddenError: The client UUID", T)
                .await
        }
    );
    drop(lines);
    signal(&s.peer, "TERM");
    s.peer.wait_for_line("relay server shutdown", T).await;
    let log = s.peer.transcript.join("\n");
    assert!(log.contains("authentication failed"), "{log}");
    for secret in ["alice-token", "eve-token", "Bearer wrong"] {
        assert!(!log.contains(secret), "the log contains {secret:?}:\n{log}");
    }
}

/// Issue 10: a bad value in an environment variable is reported under the variable's name.
#[tokio::test]
async fn a_bad_environment_variable_is_named() {
    let out = bistream()
        .args(["relay", "serve"])
        .env("BISTREAM_RELAY_PORT", "eighty")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("environment variable BISTREAM_RELAY_PORT"),
        "{stderr}"
    );
    // The flag itself still gets clap's usual message.
    let out = bistream()
        .args(["relay", "serve", "--port", "eighty"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'--port <PORT>'"), "{stderr}");
    assert!(!stderr.contains("environment variable"), "{stderr}");
}
