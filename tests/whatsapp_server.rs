//! The `chatflow-server` binary with WhatsApp's settings, as a process:
//! partial settings refuse to start, the secrets never print, and with the
//! four set the webhook routes answer beside `/chat`.
#![cfg(all(feature = "cli", feature = "whatsapp", feature = "mock"))]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig};
use serde_json::Value;

const SERVER: &str = env!("CARGO_BIN_EXE_chatflow-server");
const ADA: &str = "15551234567";
const VERIFY_TOKEN: &str = "verify-token-f00d";

/// The binary with a clean environment (no settings leak in from the
/// developer's shell).
fn command() -> Command {
    let mut command = Command::new(SERVER);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("WHATSAPP_")
            || name.starts_with("OPENAI_")
            || name.starts_with("CHATFLOW_")
            || name == "DATABASE_URL"
        {
            command.env_remove(name);
        }
    }
    command
        .env("DATABASE_URL", "memory")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    command
}

/// A log file in the target directory, unique per test.
fn log_file(name: &str) -> PathBuf {
    let dir: PathBuf = [env!("CARGO_TARGET_TMPDIR"), "whatsapp_server"].iter().collect();
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}-{}.log", std::process::id()))
}

#[test]
fn partial_settings_refuse_to_start_naming_the_missing_ones() {
    let output = command()
        .args(["--listen", "127.0.0.1:0", "--whatsapp-phone-number-id", "1234"])
        .env("WHATSAPP_APP_SECRET", "app-secret-c0ffee")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("missing: WHATSAPP_VERIFY_TOKEN, WHATSAPP_ACCESS_TOKEN"),
        "{stderr}"
    );
    assert!(!stderr.contains("app-secret-c0ffee"), "{stderr}");
    assert!(output.stdout.is_empty(), "it never listened");
}

#[test]
fn help_shows_the_settings_and_no_secret() {
    let output = command()
        .arg("--help")
        .env("WHATSAPP_VERIFY_TOKEN", "verify-token-f00d")
        .env("WHATSAPP_APP_SECRET", "app-secret-c0ffee")
        .env("WHATSAPP_ACCESS_TOKEN", "EAAG-token-beef")
        .env("WHATSAPP_PHONE_NUMBER_ID", "1234")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for name in [
        "WHATSAPP_VERIFY_TOKEN",
        "WHATSAPP_APP_SECRET",
        "WHATSAPP_ACCESS_TOKEN",
        "WHATSAPP_PHONE_NUMBER_ID",
        "WHATSAPP_GRAPH_URL",
    ] {
        assert!(help.contains(name), "{name}: {help}");
    }
    for secret in ["verify-token-f00d", "app-secret-c0ffee", "EAAG-token-beef"] {
        assert!(!help.contains(secret), "{secret} printed: {help}");
    }
}

/// A running server, killed on drop.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn start(mut command: Command, log: PathBuf) -> Server {
    command
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    let mut server = Server {
        child,
        base: String::new(),
        log,
    };
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(Ok(line))) => line,
        other => panic!("no listening line: {other:?}"),
    };
    let addr = line
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    server.base = format!("http://{addr}");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_four_settings_the_webhook_is_served_beside_chat() {
    let whatsapp = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
    let mut command = command();
    command
        .args(["--listen", "127.0.0.1:0"])
        .env("WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN)
        .env("WHATSAPP_APP_SECRET", whatsapp.app_secret())
        .env("WHATSAPP_ACCESS_TOKEN", whatsapp.access_token())
        .env("WHATSAPP_PHONE_NUMBER_ID", whatsapp.phone_number_id())
        .env("WHATSAPP_GRAPH_URL", whatsapp.uri());
    let log = log_file("on");
    let server = start(command, log.clone());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let handshake = client
        .get(format!(
            "{}/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=4242",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(handshake.status(), 200);
    assert_eq!(handshake.text().await.unwrap(), "4242");

    let url = format!("{}/webhooks/whatsapp", server.base);
    let posted = whatsapp.post_text(&url, ADA, "Ada", "hi").await.unwrap();
    assert_eq!(posted.status, 200, "{}", posted.body);

    // The built-in WhatsApp flow answers with its menu.
    let deadline = Instant::now() + Duration::from_secs(20);
    let transcript = loop {
        let response = client
            .get(format!("{}/conversations/whatsapp:{ADA}", server.base))
            .send()
            .await
            .unwrap();
        let got: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or_default();
        let has_menu = got["transcript"]
            .as_array()
            .is_some_and(|entries| entries.iter().any(|e| e["options"].is_array()));
        if has_menu {
            break got;
        }
        assert!(Instant::now() < deadline, "no menu: {got}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(
        transcript["transcript"][0]["message_id"],
        posted.message_ids[0].as_str()
    );

    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("WhatsApp webhooks on"), "{logs}");
    assert!(logs.contains("/webhooks/whatsapp"), "{logs}");
    for secret in [
        VERIFY_TOKEN.to_string(),
        whatsapp.app_secret(),
        whatsapp.access_token(),
    ] {
        assert!(!logs.contains(&secret), "a secret in the log: {logs}");
    }
    drop(server);
}
