//! The WhatsApp settings of the server: all four of Meta's values turn the
//! webhook routes and the channel on; some but not all is a startup error
//! naming the missing ones.

use std::sync::Arc;

use super::CliError;
use super::args::Args;
use crate::channel::Channel;
use crate::whatsapp::{WhatsAppChannel, WhatsAppSettings, check_flow};
use crate::{Clock, Flow};

/// The callback URL's path ([`crate::whatsapp::router`]'s), for the log.
const CALLBACK_PATH: &str = "/webhooks/whatsapp";

/// The four values the routes need, by their environment variable, in the
/// order they are named in messages.
pub(crate) const REQUIRED: [&str; 4] = [
    "WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_ACCESS_TOKEN",
    "WHATSAPP_PHONE_NUMBER_ID",
];

/// The WhatsApp settings, when the four are set: the three secrets from the
/// environment (`env`, where an empty value counts as unset), the phone
/// number id and the Graph API URL from the arguments (which fall back on
/// the environment). `None` when none of the four is set.
pub(crate) fn settings(
    args: &Args,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<WhatsAppSettings>, CliError> {
    let [verify_token, app_secret, access_token] = [REQUIRED[0], REQUIRED[1], REQUIRED[2]].map(&env);
    let phone_number_id = args
        .whatsapp_phone_number_id
        .clone()
        .filter(|id| !id.trim().is_empty());
    let given = [
        verify_token.is_some(),
        app_secret.is_some(),
        access_token.is_some(),
        phone_number_id.is_some(),
    ];
    match (verify_token, app_secret, access_token, phone_number_id) {
        (Some(verify_token), Some(app_secret), Some(access_token), Some(phone_number_id)) => {
            let settings = WhatsAppSettings::new(verify_token, app_secret, access_token, phone_number_id);
            Ok(Some(match &args.whatsapp_graph_url {
                Some(url) => settings.with_graph_url(url.as_str()),
                None => settings,
            }))
        }
        _ if given.iter().any(|set| *set) => Err(CliError::WhatsAppIncomplete {
            missing: REQUIRED
                .iter()
                .zip(given)
                .filter(|(_, set)| !set)
                .map(|(name, _)| *name)
                .collect(),
        }),
        _ => Ok(None),
    }
}

/// Refuses a flow WhatsApp cannot show (options over its limits, …), with
/// every problem named.
pub(crate) fn check(flow: &Flow) -> Result<(), CliError> {
    check_flow(flow).map_err(|e| CliError::WhatsAppFlow {
        flow: flow.name().to_string(),
        problems: e.problems.join("; "),
    })
}

/// The channel replies go out through, on its own HTTP client (the Graph
/// API's calls are not the flow's Api calls the metrics count) and the
/// engine's clock.
pub(crate) fn channel(
    settings: &WhatsAppSettings,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Channel>, CliError> {
    let channel = WhatsAppChannel::with_reqwest(settings.clone()).map_err(CliError::HttpClient)?;
    Ok(Arc::new(channel.with_clock(clock)))
}

/// Logs that the routes are on: the path, the number and the Graph API,
/// never the secrets.
pub(crate) fn announce(settings: &WhatsAppSettings) {
    tracing::info!(
        callback_path = CALLBACK_PATH,
        phone_number_id = settings.phone_number_id(),
        graph_url = settings.graph_url(),
        "WhatsApp webhooks on: give Meta https://<this host>{} as the callback URL",
        CALLBACK_PATH
    );
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["chatflow-server"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).expect("valid arguments")
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    }

    const SECRETS: &[(&str, &str)] = &[
        ("WHATSAPP_VERIFY_TOKEN", "verify-me"),
        ("WHATSAPP_APP_SECRET", "app-secret-42"),
        ("WHATSAPP_ACCESS_TOKEN", "EAAG-token-42"),
    ];

    #[test]
    fn none_of_the_four_leaves_whatsapp_off() {
        assert!(settings(&args(&[]), env_of(&[])).expect("no error").is_none());
    }

    #[test]
    fn all_four_turn_it_on_with_the_default_graph_url() {
        let on = settings(&args(&["--whatsapp-phone-number-id", "1234"]), env_of(SECRETS))
            .expect("no error")
            .expect("on");
        assert_eq!(on.phone_number_id(), "1234");
        assert_eq!(on.graph_url(), "https://graph.facebook.com/v23.0");
        let shown = format!("{on:?}");
        assert!(
            !shown.contains("app-secret-42") && !shown.contains("EAAG-token-42"),
            "{shown}"
        );
    }

    #[test]
    fn the_graph_url_can_point_at_a_mock() {
        let on = settings(
            &args(&[
                "--whatsapp-phone-number-id",
                "1234",
                "--whatsapp-graph-url",
                "http://127.0.0.1:9/v23.0/",
            ]),
            env_of(SECRETS),
        )
        .expect("no error")
        .expect("on");
        assert_eq!(on.graph_url(), "http://127.0.0.1:9/v23.0");
    }

    #[test]
    fn some_but_not_all_is_an_error_naming_the_missing_ones() {
        let e = settings(&args(&[]), env_of(&[("WHATSAPP_APP_SECRET", "app-secret-42")]))
            .expect_err("incomplete");
        let text = super::super::report(&e);
        assert!(
            text.contains("WHATSAPP_VERIFY_TOKEN, WHATSAPP_ACCESS_TOKEN, WHATSAPP_PHONE_NUMBER_ID"),
            "{text}"
        );
        assert!(!text.contains("app-secret-42"), "{text}");
        let e =
            settings(&args(&["--whatsapp-phone-number-id", "1234"]), env_of(&[])).expect_err("incomplete");
        assert!(matches!(&e, CliError::WhatsAppIncomplete { missing } if missing.len() == 3));
    }

    #[test]
    fn help_names_every_whatsapp_setting() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        for name in REQUIRED.iter().chain(&["WHATSAPP_GRAPH_URL"]) {
            assert!(help.contains(name), "{name} missing from --help:\n{help}");
        }
    }

    #[test]
    fn a_flow_whatsapp_cannot_show_is_refused_naming_the_step() {
        let flow = Flow::from_json(
            r#"{"name": "menu", "steps": [{"type": "question", "name": "Pick", "text": "Which?",
              "options": ["A title far longer than a list row allows", "Short"]}]}"#,
        )
        .expect("a valid flow");
        let e = check(&flow).expect_err("a row title over 24 characters");
        let text = super::super::report(&e);
        assert!(
            text.starts_with("the flow \"menu\" cannot run on WhatsApp"),
            "{text}"
        );
        assert!(text.contains("Pick"), "{text}");
        let shipped = Flow::from_json(super::super::DEFAULT_WHATSAPP_FLOW).expect("the shipped flow loads");
        assert!(check(&shipped).is_ok());
    }
}
