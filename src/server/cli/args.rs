//! The command line, each setting with its environment fallback.

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

/// The arguments of `chatflow-server` (and of the `support_server` example).
///
/// Secrets are read from the environment only, never from arguments (which
/// other users of the machine can see): `OPENAI_API_KEY` (without it the
/// built-in mock OpenAI answers) and `CHATFLOW_API_TOKEN` (when set, `/chat`
/// and `/conversations` need `Authorization: Bearer <token>`).
#[derive(Clone, Parser)]
#[command(
    name = "chatflow-server",
    version,
    about = "Serve a chatflow flow over HTTP: POST /chat, GET /conversations/{id}, GET /healthz, GET /metrics, \
             and with WhatsApp set up GET/POST /webhooks/whatsapp",
    after_help = "Secrets come from the environment only: OPENAI_API_KEY (unset: a built-in mock \
                  OpenAI answers), CHATFLOW_API_TOKEN (set: /chat and /conversations need \
                  `Authorization: Bearer <token>`), and WhatsApp's WHATSAPP_VERIFY_TOKEN, \
                  WHATSAPP_APP_SECRET and WHATSAPP_ACCESS_TOKEN: with these three and \
                  WHATSAPP_PHONE_NUMBER_ID set, the WhatsApp webhook routes \
                  (/webhooks/whatsapp) and channel are on; some but not all of the four is an \
                  error. RUST_LOG sets the log filter (default info)."
)]
#[non_exhaustive]
pub struct Args {
    /// The flow file (default: the shipped OpenAI assistant flow, built in).
    #[arg(long, value_name = "PATH")]
    pub flow: Option<PathBuf>,

    /// The address to listen on; port 0 picks a free port. The bound address
    /// is printed on stdout as `listening on http://ADDR`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// The text in an assistant's answer that hands the conversation off
    /// (the flow's `var.handoff_marker`).
    #[arg(long, value_name = "TEXT")]
    pub handoff_marker: Option<String>,

    /// Where conversations are kept: `sqlite://FILE`, `postgres://…` or `memory`.
    #[arg(
        long,
        value_name = "URL",
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://chatflow.db"
    )]
    pub database_url: String,

    /// How long `POST /chat` waits for an answer before a 504, in seconds;
    /// the turn goes on in the background.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "CHATFLOW_TURN_TIMEOUT_SECS",
        default_value = "60",
        value_parser = parse_seconds
    )]
    pub turn_timeout_secs: Duration,

    /// How long a shutdown waits for turns still running, in seconds (a
    /// second signal stops waiting).
    #[arg(
        long,
        value_name = "SECONDS",
        env = "CHATFLOW_SHUTDOWN_GRACE_SECS",
        default_value = "30",
        value_parser = parse_seconds
    )]
    pub shutdown_grace_secs: Duration,

    /// The OpenAI API's base URL (the flow's `var.openai_base_url`).
    #[arg(long, value_name = "URL", env = "OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,

    /// The assistant to run (the flow's `var.assistant_id`).
    #[arg(long, value_name = "ID", env = "OPENAI_ASSISTANT_ID")]
    pub openai_assistant_id: Option<String>,

    /// The model (the flow's `var.model`).
    #[arg(long, value_name = "NAME", env = "OPENAI_MODEL")]
    pub openai_model: Option<String>,

    /// The assistant's instructions (the flow's `var.instructions`).
    #[arg(long, value_name = "TEXT", env = "OPENAI_INSTRUCTIONS")]
    pub openai_instructions: Option<String>,

    /// The WhatsApp Business phone number id replies are sent from (with
    /// WHATSAPP_VERIFY_TOKEN, WHATSAPP_APP_SECRET and WHATSAPP_ACCESS_TOKEN
    /// in the environment, it turns WhatsApp on).
    #[arg(long, value_name = "ID", env = "WHATSAPP_PHONE_NUMBER_ID")]
    pub whatsapp_phone_number_id: Option<String>,

    /// The Graph API's base URL, with its version (default
    /// `https://graph.facebook.com/v23.0`; tests point it at a mock).
    #[arg(long, value_name = "URL", env = "WHATSAPP_GRAPH_URL")]
    pub whatsapp_graph_url: Option<String>,
}

// Written out so that `{:?}` never shows a database password.
impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("flow", &self.flow)
            .field("listen", &self.listen)
            .field("handoff_marker", &self.handoff_marker)
            .field("database_url", &super::store::redact_url(&self.database_url))
            .field("turn_timeout_secs", &self.turn_timeout_secs)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("openai_base_url", &self.openai_base_url)
            .field("openai_assistant_id", &self.openai_assistant_id)
            .field("openai_model", &self.openai_model)
            .field("openai_instructions", &self.openai_instructions)
            .field("whatsapp_phone_number_id", &self.whatsapp_phone_number_id)
            .field("whatsapp_graph_url", &self.whatsapp_graph_url)
            .finish()
    }
}

/// A duration in (fractional) seconds.
fn parse_seconds(raw: &str) -> Result<Duration, String> {
    raw.trim()
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("`{raw}` is not a number of seconds"))
}

impl Args {
    /// This process's arguments and environment; exits with a usage message
    /// when they are wrong, or after `--help` and `--version`. A variable
    /// set to the empty string counts as unset.
    pub fn from_command_line() -> Args {
        let command = Args::command().mut_args(|arg| {
            let empty = arg
                .get_env()
                .and_then(std::env::var_os)
                .is_some_and(|value| value.is_empty());
            if empty { arg.env(None::<&'static str>) } else { arg }
        });
        Args::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
    }

    /// The flow variables the OpenAI arguments set, by name.
    pub(crate) fn openai_vars(&self) -> [(&'static str, Option<&str>); 4] {
        [
            ("openai_base_url", self.openai_base_url.as_deref()),
            ("assistant_id", self.openai_assistant_id.as_deref()),
            ("model", self.openai_model.as_deref()),
            ("instructions", self.openai_instructions.as_deref()),
        ]
    }
}

/// Flow variable ← environment variable, to name what a flow misses.
pub(crate) const ENV_OF_VAR: &[(&str, &str)] = &[
    ("openai_base_url", "OPENAI_BASE_URL"),
    ("assistant_id", "OPENAI_ASSISTANT_ID"),
    ("model", "OPENAI_MODEL"),
    ("instructions", "OPENAI_INSTRUCTIONS"),
];

#[cfg(test)]
mod debug_tests {
    use clap::Parser;

    use super::Args;

    #[test]
    fn debug_hides_the_database_password() {
        let args = Args::try_parse_from([
            "chatflow-server",
            "--database-url",
            "postgres://bot:hunter2@db/chat",
        ])
        .expect("valid arguments");
        let shown = format!("{args:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://bot:***@db/chat"), "{shown}");
    }
}
