//! The conversation test files of tests/conversations/, run by the runner
//! users call from their own tests; and the runner's own failures: what it
//! says when a conversation goes otherwise than its file, or the file is bad.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chatflow::Status;
use chatflow::testing::{TestError, run_dir, run_file, run_yaml};

fn conversations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conversations")
}

#[test]
fn every_shipped_conversation_file_passes() {
    let reports = match run_dir(conversations()) {
        Ok(reports) => reports,
        Err(error) => panic!("{error}"),
    };
    assert!(reports.len() >= 10, "{} files", reports.len());
    for flow in [
        "openai_assistant_",
        "openai_assistant_streaming_",
        "openai_responses_",
        "openai_responses_streaming_",
    ] {
        assert!(
            reports.iter().any(|r| r
                .path
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(flow))),
            "no conversation file for {flow}*"
        );
    }
}

#[test]
fn a_report_tells_what_ran() {
    let report = run_file(conversations().join("openai_assistant_polling_then_handoff.yaml")).unwrap();
    assert_eq!(
        report.name,
        "Assistants API, polling for an answer, then a handoff"
    );
    assert_eq!(report.turns, 3);
    assert_eq!(report.api_calls, 11);
    assert_eq!(report.elapsed, Duration::from_millis(750));
    assert!(
        matches!(report.status, Status::HandedOff { .. }),
        "{:?}",
        report.status
    );
}

#[tokio::test]
async fn the_runner_works_inside_a_tokio_runtime_too() {
    run_file(conversations().join("openai_responses_rate_limited.yaml")).unwrap();
}

/// An order bot: the header carries a secret, the URL too.
const ORDERS: &str = r#"
flow:
  name: orders
  steps:
    - {type: question, name: Ask order, text: "Your order number?"}
    - type: api
      name: Look up order
      method: GET
      url: "https://shop.example/<<secret.SHOP_KEY>>/orders/<<step.Ask order.response>>"
    - {type: contact_update, name: Save, set: {state: "<<step.Look up order.response.state>>"}}
    - {type: message, name: Tell, text: "Order <<step.Ask order.response>> is <<contact.state>>."}
secrets: {SHOP_KEY: sk-very-secret}
"#;

fn orders(rest: &str) -> Result<chatflow::testing::Report, TestError> {
    run_yaml(&format!("{ORDERS}{rest}"), ".")
}

const SHIPPED: &str = r#"
stubs:
  - step: Look up order
    response: {body: {state: shipped}}
"#;

#[test]
fn the_orders_bot_passes_as_written() {
    let report = orders(&format!(
        "{SHIPPED}
turns:
  - bot: Your order number?
  - user: '42'
    bot: Order 42 is shipped.
expect:
  status: finished
  contact: {{state: shipped}}
"
    ))
    .unwrap();
    assert_eq!(report.path, Path::new("<yaml>"));
    assert_eq!(report.status, Status::Finished);
}

#[test]
fn a_different_bot_message_names_the_turn_and_shows_a_diff() {
    let error = orders(&format!(
        "{SHIPPED}
turns:
  - bot: Your order number?
  - user: '42'
    bot: Order 42 is lost.
expect: {{status: finished}}
"
    ))
    .unwrap_err();
    let TestError::Mismatch { turn, what, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!((*turn, what.as_str()), (Some(2), "bot messages"));
    let shown = error.to_string();
    assert!(
        shown.starts_with("<yaml>, turn 2: unexpected bot messages"),
        "{shown}"
    );
    assert!(shown.contains("--- expected\n+++ got"), "{shown}");
    assert!(
        shown.contains("-\"Order 42 is lost.\"\n+\"Order 42 is shipped.\""),
        "{shown}"
    );
}

#[test]
fn a_missing_message_is_a_failure_too() {
    let error = orders(&format!(
        "{SHIPPED}
turns:
  - user: '42'
    bot: Order 42 is shipped.
expect: {{status: finished}}
"
    ))
    .unwrap_err();
    assert!(
        error.to_string().contains("+\"Your order number?\""),
        "the unexpected question is shown: {error}"
    );
}

#[test]
fn an_unstubbed_call_names_the_step_and_the_masked_url() {
    let error = orders(
        "
turns:
  - bot: Your order number?
  - user: '42'
    bot: Order 42 is shipped.
",
    )
    .unwrap_err();
    let TestError::Unstubbed { turn, step, url, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!((*turn, step.as_deref()), (2, Some("Look up order")));
    assert_eq!(url, "https://shop.example/***/orders/42");
    let shown = error.to_string();
    assert!(
        shown.contains("no stub answers step \"Look up order\": GET https://shop.example/***/orders/42"),
        "{shown}"
    );
    assert!(!shown.contains("sk-very-secret"), "{shown}");
}

#[test]
fn stubs_match_by_method_and_url_ending_with_masked_secrets() {
    orders(
        "
stubs:
  - {method: POST, url: /orders/42, response: {body: {state: wrong method}}}
  - {method: GET, url: /orders/7, response: {body: {state: wrong order}}}
  - {method: GET, url: /***/orders/42, response: {body: {state: packed}}}
turns:
  - user: '42'
    bot: [Your order number?, Order 42 is packed.]
    status: finished
",
    )
    .unwrap();
}

#[test]
fn an_unexpected_failure_shows_the_engines_error_in_the_status_diff() {
    let error = orders(
        "
stubs:
  - step: Look up order
    response: {status: 404, body: {error: {message: no such order}}}
turns:
  - user: '42'
    bot: Your order number?
",
    )
    .unwrap_err();
    let shown = error.to_string();
    assert!(shown.contains("turn 1: unexpected status"), "{shown}");
    assert!(shown.contains("-awaiting_reply"), "{shown}");
    assert!(
        shown.contains("+failed: step \"Look up order\": GET https://shop.example/***/orders/42 answered 404: no such order"),
        "{shown}"
    );
    assert!(!shown.contains("sk-very-secret"), "{shown}");
}

#[test]
fn virtual_time_is_checked_per_turn() {
    // A GET answered 503 is retried after retry-after; the slow answer adds its delay.
    let rest = |elapsed: &str| {
        format!(
            "
stubs:
  - step: Look up order
    responses:
      - {{status: 503, headers: {{Retry-After: '4'}}}}
      - {{body: {{state: shipped}}, delay: 1.5s}}
turns:
  - wait: 1h
    user: '42'
    bot: [Your order number?, Order 42 is shipped.]
    calls: [Look up order, Look up order]
    elapsed: {elapsed}
expect: {{status: finished}}
"
        )
    };
    let report = orders(&rest("5.5s")).unwrap();
    assert_eq!(report.elapsed, Duration::from_millis(3_600_000 + 5_500));
    let error = orders(&rest("5s")).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("turn 1: unexpected virtual time\n--- expected\n+++ got\n@@ -1 +1 @@\n-5s\n+5.5s"),
        "{error}"
    );
}

#[test]
fn a_stub_slower_than_the_timeout_times_out() {
    let error = orders(
        "
stubs:
  - step: Look up order
    response: {body: {state: shipped}, delay: 1m}
turns:
  - user: '42'
    bot: Your order number?
    elapsed: 90s
expect: {error: timed out}
",
    )
    .unwrap_err();
    // GET is retried after a timeout: three attempts of 30 s, plus the
    // jittered backoff: more than 90 s.
    assert!(error.to_string().contains("unexpected virtual time"), "{error}");
}

#[test]
fn the_end_checks_handoff_error_and_contact() {
    let handoff_flow = r#"
flow:
  name: handoff
  steps:
    - {type: question, name: Ask, text: "What's wrong?"}
    - {type: contact_update, name: Save, set: {issue: "<<step.Ask.response>>", tier: gold}}
    - {type: assign, name: Hand off, team: billing, note: "<<contact.issue>>"}
turns:
  - user: charged twice
    bot: What's wrong?
"#;
    let run = |expect: &str| run_yaml(&format!("{handoff_flow}expect:\n{expect}"), ".");
    run("  handoff: {team: billing, note: charged twice}\n  contact: {tier: gold}\n").unwrap();

    let error = run("  handoff: {team: support}\n").unwrap_err();
    let shown = error.to_string();
    assert!(shown.contains("at the end: unexpected handoff.team"), "{shown}");
    assert!(shown.contains("-\"support\"\n+\"billing\""), "{shown}");

    let error = run("  status: handed_off\n  contact: {tier: silver, issue: charged twice}\n").unwrap_err();
    let shown = error.to_string();
    assert!(
        shown.contains("at the end: unexpected contact attributes (first: tier)"),
        "{shown}"
    );
    assert!(
        shown.contains("-  \"tier\": \"silver\"\n+  \"tier\": \"gold\""),
        "{shown}"
    );

    let error = run("  status: finished\n").unwrap_err();
    assert!(error.to_string().contains("-finished\n+handed_off"), "{error}");

    let error = run("  error: boom\n").unwrap_err();
    assert!(error.to_string().contains("turn 1: unexpected status"), "{error}");
}

#[test]
fn yaml_errors_say_line_and_column() {
    let error = run_yaml("flow: x.json\nturns:\n  - user: [unclosed\n", ".").unwrap_err();
    let TestError::Yaml { line, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(*line >= 3, "{error}");

    let error = run_yaml("flow: x.json\nturns:\n  - user: hi\n    bott: hello\n", ".").unwrap_err();
    let TestError::Yaml {
        line,
        column,
        message,
        ..
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!((*line, *column), (4, 5), "{error}");
    assert!(message.contains("bott"), "{message}");
    assert!(error.to_string().starts_with("<yaml>:4:5: "), "{error}");

    let error = run_yaml("flow: x.json\nturns:\n  - wait: soon\n", ".").unwrap_err();
    assert!(
        matches!(&error, TestError::Yaml { line: 3, message, .. } if message.contains("not a duration")),
        "{error:?}"
    );
}

#[test]
fn impossible_files_are_errors_not_panics() {
    let cases = [
        ("flow: 3\nturns: [{user: hi}]\n", "`flow` is the path"),
        (
            "flow: nowhere.json\nturns: [{user: hi}]\n",
            "the flow does not load",
        ),
        (&format!("{ORDERS}turns: []\n"), "`turns` is empty"),
        (
            &format!("{ORDERS}stubs: [{{step: Look up order}}]\nturns: [{{user: hi}}]\n"),
            "stubs[0]: give either",
        ),
        (
            &format!("{ORDERS}stubs: [{{response: {{}}}}]\nturns: [{{user: hi}}]\n"),
            "stubs[0]: say what it answers",
        ),
        (
            &format!("{ORDERS}stubs: [{{step: Nope, response: {{}}}}]\nturns: [{{user: hi}}]\n"),
            "no step \"Nope\"",
        ),
        ("", "<yaml>"),
        ("- a list\n", "<yaml>"),
    ];
    for (yaml, says) in cases {
        let error = run_yaml(yaml, ".").unwrap_err();
        assert!(error.to_string().contains(says), "{yaml:?}: {error}");
    }
    let no_secret = ORDERS.replace("secrets: {SHOP_KEY: sk-very-secret}", "");
    let error = run_yaml(&format!("{no_secret}turns: [{{user: hi}}]\n"), ".").unwrap_err();
    assert!(matches!(error, TestError::Build { .. }), "{error:?}");
}

#[test]
fn a_folder_runs_every_file_and_reports_every_failure() {
    let dir = std::env::temp_dir().join(format!("chatflow-conversations-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let error = run_dir(&dir).unwrap_err();
    assert!(
        error.to_string().contains("no conversation test files"),
        "{error}"
    );

    let flow = conversations().join("../../flows/openai_responses.json");
    let good = std::fs::read_to_string(conversations().join("openai_responses_rate_limited.yaml"))
        .unwrap()
        .replace("../../flows/openai_responses.json", &flow.display().to_string());
    std::fs::write(dir.join("a_good.yaml"), &good).unwrap();
    std::fs::write(
        dir.join("b_bad.yml"),
        good.replace("- Opening hours are 9 to 5.", "- Opening hours are 8 to 4."),
    )
    .unwrap();
    std::fs::write(dir.join("c_broken.yaml"), "turns: [").unwrap();
    std::fs::write(dir.join("notes.txt"), "not a test").unwrap();
    let error = run_dir(&dir).unwrap_err();
    let TestError::Failed { failures, total } = &error else {
        panic!("{error:?}")
    };
    assert_eq!((failures.len(), *total), (2, 3));
    let shown = error.to_string();
    assert!(shown.starts_with("2 of 3 conversation tests failed"), "{shown}");
    assert!(
        shown.contains("b_bad.yml, turn 1: unexpected bot messages"),
        "{shown}"
    );
    assert!(shown.contains("c_broken.yaml:"), "{shown}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn request_bodies_are_checked_and_shown_with_secrets_masked() {
    let flow = r#"
flow:
  name: tickets
  steps:
    - {type: question, name: Ask, text: "What happened?"}
    - type: api
      name: Open ticket
      method: POST
      url: https://desk.example/tickets
      body: {text: "<<step.Ask.response>>", token: "<<secret.DESK_KEY>>", tags: [bot, web]}
    - {type: message, name: Done, text: "Ticket <<step.Open ticket.response.id>> opened."}
secrets: {DESK_KEY: "dk-\"quoted\"-secret"}
"#;
    let run = |request_body: &str| {
        run_yaml(
            &format!(
                "{flow}
stubs:
  - step: Open ticket
    request_body: {request_body}
    response: {{status: 201, body: {{id: T-1}}}}
turns:
  - user: the printer is on fire
    bot: [What happened?, Ticket T-1 opened.]
    status: finished
"
            ),
            ".",
        )
    };
    run("{text: the printer is on fire}").unwrap();
    run("{tags: [bot, web]}").unwrap();

    let error = run("{text: the printer is fine}").unwrap_err();
    let shown = error.to_string();
    assert!(
        shown.contains("turn 1: unexpected request body of Open ticket"),
        "{shown}"
    );
    assert!(shown.contains("-  \"text\": \"the printer is fine\""), "{shown}");
    assert!(
        shown.contains("+  \"text\": \"the printer is on fire\""),
        "{shown}"
    );
    assert!(shown.contains("\"token\": \"***\""), "{shown}");
    assert!(!shown.contains("quoted"), "{shown}");

    let error = run("{tags: [bot]}").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("unexpected request body of Open ticket"),
        "{error}"
    );
}
