use proptest::prelude::*;
use serde_json::json;

use super::*;

fn wording() -> Wording {
    Wording {
        handoff: "A person will answer you here shortly.".into(),
        list_button: "Options".into(),
        choose: "Choose one:".into(),
    }
}

fn bodies(entry: &TranscriptEntry) -> Vec<Value> {
    let wording = wording();
    messages_for(entry, "15551234567", &wording)
        .iter()
        .map(|m| serde_json::to_value(m).unwrap())
        .collect()
}

fn question(text: &str, options: Vec<QuestionOption>) -> TranscriptEntry {
    let mut entry = TranscriptEntry::new(2, Direction::Out, text, 0);
    entry.options = options;
    entry
}

#[test]
fn a_text_entry_is_one_text_message() {
    let entry = TranscriptEntry::new(2, Direction::Out, "Hello!", 0);
    assert_eq!(
        bodies(&entry),
        [
            json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "15551234567",
                "type": "text", "text": {"preview_url": false, "body": "Hello!"}})
        ]
    );
}

#[test]
fn a_long_text_goes_in_parts() {
    let text = format!(
        "{}\n{}",
        "a ".repeat(2000).trim_end(),
        "b ".repeat(2000).trim_end()
    );
    let parts = bodies(&TranscriptEntry::new(2, Direction::Out, text, 0));
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["text"]["body"], "a ".repeat(2000).trim_end());
    assert_eq!(parts[1]["text"]["body"], "b ".repeat(2000).trim_end());
}

#[test]
fn a_handoff_sends_the_handoff_wording() {
    let entry = TranscriptEntry::new(2, Direction::Handoff, "team: billing", 0);
    let sent = bodies(&entry);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["text"]["body"], "A person will answer you here shortly.");
}

#[test]
fn two_options_are_reply_buttons() {
    let entry = question(
        "How can I help?",
        vec![
            QuestionOption::new("track", "Track an order"),
            QuestionOption::new("human", "Talk to a person"),
        ],
    );
    assert_eq!(
        bodies(&entry),
        [
            json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "15551234567",
            "type": "interactive", "interactive": {"type": "button", "body": {"text": "How can I help?"},
            "action": {"buttons": [
                {"type": "reply", "reply": {"id": "track", "title": "Track an order"}},
                {"type": "reply", "reply": {"id": "human", "title": "Talk to a person"}}]}}})
        ]
    );
}

#[test]
fn ids_and_titles_go_trimmed() {
    let sent = bodies(&question("Pick", vec![QuestionOption::new(" a ", " Yes ")]));
    assert_eq!(
        sent[0]["interactive"]["action"]["buttons"][0]["reply"],
        json!({"id": "a", "title": "Yes"})
    );
}

#[test]
fn four_options_are_a_list() {
    let mut options: Vec<_> = (1..=3)
        .map(|i| QuestionOption::new(format!("o{i}"), format!("Option {i}")))
        .collect();
    options.push(QuestionOption::new("o4", "Option 4").with_description("The last one"));
    let sent = bodies(&question("Pick one", options));
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0]["interactive"],
        json!({"type": "list", "body": {"text": "Pick one"}, "action": {"button": "Options", "sections": [{"rows": [
            {"id": "o1", "title": "Option 1"}, {"id": "o2", "title": "Option 2"}, {"id": "o3", "title": "Option 3"},
            {"id": "o4", "title": "Option 4", "description": "The last one"}]}]}})
    );
}

#[test]
fn options_no_list_holds_go_as_numbered_text() {
    let entry = question(
        "Pick",
        vec![
            QuestionOption::new("a", "x".repeat(30)),
            QuestionOption::new("b", "Short"),
        ],
    );
    let sent = bodies(&entry);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0]["text"]["body"],
        format!("Pick\n\n1. {}\n2. Short", "x".repeat(30))
    );
}

#[test]
fn a_long_question_goes_first_as_text_and_its_end_stays_with_the_buttons() {
    let intro = "word ".repeat(400); // 2,000 characters
    let text = format!("{intro}\nWhich one?");
    let sent = bodies(&question(&text, vec![QuestionOption::new("a", "A")]));
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["type"], "text");
    assert_eq!(sent[1]["type"], "interactive");
    let body = sent[1]["interactive"]["body"]["text"].as_str().unwrap();
    assert!(body.chars().count() <= MAX_BODY_CHARS);
    assert!(body.ends_with("Which one?"));
    let first = sent[0]["text"]["body"].as_str().unwrap();
    assert_eq!(
        format!("{first} {body}").split_whitespace().collect::<Vec<_>>(),
        text.split_whitespace().collect::<Vec<_>>()
    );
}

#[test]
fn a_question_without_text_gets_a_body() {
    let sent = bodies(&question(" ", vec![QuestionOption::new("a", "A")]));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["interactive"]["body"]["text"], "Choose one:");
}

#[test]
fn an_empty_text_sends_nothing() {
    assert!(bodies(&TranscriptEntry::new(2, Direction::Out, "  \n", 0)).is_empty());
}

#[test]
fn templates_are_read_from_details() {
    let template = Template::from_details(&json!({"name": "order_update", "language": "en_US"})).unwrap();
    assert_eq!(
        serde_json::to_value(OutgoingMessage::template("1", template)).unwrap(),
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "1", "type": "template",
               "template": {"name": "order_update", "language": {"policy": "deterministic", "code": "en_US"}}})
    );
    let components = json!([{"type": "body", "parameters": [{"type": "text", "text": "Ada"}]}]);
    let template = Template::from_details(
        &json!({"name": "hello", "language": {"code": "de"}, "components": components}),
    )
    .unwrap();
    let body = serde_json::to_value(OutgoingMessage::template("1", template)).unwrap();
    assert_eq!(body["template"]["components"], components);
    assert_eq!(body["template"]["language"]["code"], "de");
    for bad in [
        json!({}),
        json!({"name": "x"}),
        json!({"name": "", "language": "en"}),
        json!({"name": "x", "language": {"policy": "deterministic"}}),
        json!({"name": "x", "language": "en", "components": {}}),
        json!("order_update"),
    ] {
        assert!(Template::from_details(&bad).is_err(), "{bad}");
    }
}

#[test]
fn mark_read_has_the_documented_shape() {
    assert_eq!(
        serde_json::to_value(MarkRead::new("wamid.IN")).unwrap(),
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN"})
    );
}

#[test]
fn a_word_longer_than_the_limit_is_cut_between_characters() {
    assert_eq!(split_text("ééééé", 2), ["éé", "éé", "é"]);
    assert_eq!(split_text("ab cdefgh", 4), ["ab", "cdef", "gh"]);
}

#[test]
fn a_line_break_in_the_second_half_wins_over_a_later_space() {
    assert_eq!(split_text("aaaa bbb\ncc dd ee", 12), ["aaaa bbb", "cc dd ee"]);
    // Too early a line break: the last space is used.
    assert_eq!(split_text("a\nbbbb cccc dddd", 12), ["a\nbbbb cccc", "dddd"]);
}

/// `text` is `parts` joined by whitespace (any, at the cuts; none at a cut
/// inside a word), with whitespace allowed at both ends.
fn rejoins(text: &str, parts: &[&str]) -> bool {
    let mut rest = text.trim_start();
    for part in parts {
        match rest.strip_prefix(part) {
            Some(after) => rest = after.trim_start(),
            None => return false,
        }
    }
    rest.trim().is_empty()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn parts_fit_are_not_empty_and_rejoin_into_the_text(
        text in "(\\PC{0,12}[ \n]{0,3}){0,60}",
        max in 1usize..40,
    ) {
        let parts = split_text(&text, max);
        for part in &parts {
            prop_assert!(part.chars().count() <= max, "{part:?} is over {max}");
            prop_assert!(!part.trim().is_empty(), "an empty part in {parts:?}");
        }
        prop_assert!(rejoins(&text, &parts), "{text:?} -> {parts:?}");
    }

    #[test]
    fn real_sized_texts_split_at_4096(words in proptest::collection::vec("[a-zé]{1,12}", 0..1200)) {
        let text = words.join(" ");
        let parts = split_text(&text, MAX_TEXT_CHARS);
        for part in &parts {
            prop_assert!(part.chars().count() <= MAX_TEXT_CHARS);
            prop_assert!(!part.is_empty());
        }
        // Only whole words: cuts fall on spaces.
        prop_assert_eq!(parts.join(" "), text);
    }
}
