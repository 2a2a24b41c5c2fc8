//! Notifications shaped exactly as `shared/whatsapp/NOTES.md` describes.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::*;

const WA_ID: &str = "15551234567";

/// A body with one change carrying these messages and statuses.
fn body(messages: Value, statuses: Value) -> Vec<u8> {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA_ID", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "PNID"},
            "contacts": [{"profile": {"name": "Ada"}, "wa_id": WA_ID}],
            "messages": messages,
            "statuses": statuses,
        }}]}]
    })
    .to_string()
    .into_bytes()
}

/// The one message of a body carrying `message` (with from/id/timestamp added).
fn one(kind: &str, content: Value) -> InboundWhatsApp {
    let mut message = json!({"from": WA_ID, "id": "wamid.A", "timestamp": "1767225600", "type": kind});
    message[kind] = content;
    let notification = parse_notification(&body(json!([message]), json!([]))).unwrap();
    assert_eq!(notification.messages.len(), 1, "{notification:?}");
    notification.messages.into_iter().next().unwrap()
}

#[test]
fn a_text_message() {
    let message = one("text", json!({"body": "Where is my order?"}));
    assert_eq!(message.wa_id, WA_ID);
    assert_eq!(message.profile_name.as_deref(), Some("Ada"));
    assert_eq!(message.message_id, "wamid.A");
    assert_eq!(
        message.timestamp,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    );
    assert_eq!(message.kind, "text");
    assert_eq!(message.text, "Where is my order?");
    assert!(message.answers);
    assert_eq!(message.conversation_id(), "whatsapp:15551234567");
    assert_eq!(message.details["type"], "text");
    assert_eq!(message.details["wa_id"], WA_ID);
    assert_eq!(message.details["profile_name"], "Ada");
    let inbound = message.as_inbound();
    assert_eq!(inbound.message_id, "wamid.A");
    assert_eq!(inbound.text, "Where is my order?");
    assert_eq!(inbound.details, Some(&message.details));
    assert!(inbound.answers);
}

#[test]
fn a_button_reply_reads_as_its_id() {
    let message = one(
        "interactive",
        json!({"type": "button_reply", "button_reply": {"id": "track", "title": "Track an order"}}),
    );
    assert_eq!(message.text, "track");
    assert!(message.answers);
    assert_eq!(message.details["reply_type"], "button_reply");
    assert_eq!(message.details["id"], "track");
    assert_eq!(message.details["title"], "Track an order");
}

#[test]
fn a_list_reply_reads_as_its_id() {
    let message = one(
        "interactive",
        json!({"type": "list_reply", "list_reply": {"id": "refund", "title": "Refund", "description": "Money back"}}),
    );
    assert_eq!(message.text, "refund");
    assert!(message.answers);
    assert_eq!(message.details["reply_type"], "list_reply");
    assert_eq!(message.details["description"], "Money back");
}

#[test]
fn an_unknown_interactive_reply_answers_nothing() {
    let message = one(
        "interactive",
        json!({"type": "nfm_reply", "nfm_reply": {"response_json": "{}"}}),
    );
    assert!(!message.answers);
    assert_eq!(message.details["interactive"]["type"], "nfm_reply");
}

#[test]
fn a_template_quick_reply_reads_as_its_payload_else_its_text() {
    let message = one(
        "button",
        json!({"payload": "STOP_PROMOS", "text": "Stop promotions"}),
    );
    assert_eq!(message.text, "STOP_PROMOS");
    assert_eq!(message.details["title"], "Stop promotions");
    assert!(message.answers);
    let message = one("button", json!({"payload": "", "text": "Yes"}));
    assert_eq!(message.text, "Yes");
}

#[test]
fn media_read_as_caption_or_a_placeholder_with_details() {
    for kind in ["image", "audio", "video", "document", "sticker"] {
        let message = one(
            kind,
            json!({"id": "MEDIA_1", "mime_type": "x/y", "sha256": "abc"}),
        );
        assert_eq!(message.text, format!("[{kind}]"));
        assert!(message.answers);
        assert_eq!(message.details["type"], kind);
        assert_eq!(message.details["media_id"], "MEDIA_1");
        assert_eq!(message.details["mime_type"], "x/y");
        assert!(message.details.get("caption").is_none());
    }
    let message = one(
        "image",
        json!({"id": "MEDIA_2", "mime_type": "image/jpeg", "sha256": "abc", "caption": "my broken parcel"}),
    );
    assert_eq!(message.text, "my broken parcel");
    assert_eq!(message.details["caption"], "my broken parcel");
    let message = one(
        "document",
        json!({"id": "MEDIA_3", "mime_type": "application/pdf", "sha256": "abc", "filename": "invoice.pdf"}),
    );
    assert_eq!(message.text, "[document: invoice.pdf]");
    assert_eq!(message.details["filename"], "invoice.pdf");
}

#[test]
fn a_location_reads_as_text_with_coordinates() {
    let message = one(
        "location",
        json!({"latitude": 52.52, "longitude": 13.405, "name": "Depot", "address": "1 Main St"}),
    );
    assert_eq!(message.text, "Location: Depot, 1 Main St, (52.52, 13.405)");
    assert!(message.answers);
    assert_eq!(message.details["latitude"], 52.52);
    assert_eq!(message.details["longitude"], 13.405);
    assert_eq!(message.details["name"], "Depot");
    assert_eq!(message.details["address"], "1 Main St");
    let bare = one("location", json!({"latitude": 1.5, "longitude": -2}));
    assert_eq!(bare.text, "Location: (1.5, -2)");
    assert!(bare.details.get("name").is_none());
}

#[test]
fn reactions_system_unsupported_contacts_and_orders_answer_nothing() {
    let reaction = one("reaction", json!({"message_id": "wamid.BOT", "emoji": "👍"}));
    assert_eq!(reaction.text, "[reaction 👍]");
    assert_eq!(reaction.details["reacted_to"], "wamid.BOT");
    assert!(!reaction.answers);
    let system = one(
        "system",
        json!({"body": "User changed number", "type": "user_changed_number"}),
    );
    assert_eq!(system.text, "User changed number");
    assert!(!system.answers);
    for kind in ["contacts", "order"] {
        let message = one(kind, json!([{"name": {"formatted_name": "Bob"}}]));
        assert_eq!(message.text, format!("[{kind}]"));
        assert!(!message.answers);
        assert!(message.details[kind].is_array());
    }
    let mut unsupported = json!({"from": WA_ID, "id": "wamid.U", "timestamp": "1", "type": "unsupported",
        "errors": [{"code": 131051, "title": "Message type unknown"}]});
    unsupported["unsupported"] = json!({});
    let notification = parse_notification(&body(json!([unsupported]), json!([]))).unwrap();
    let message = &notification.messages[0];
    assert!(!message.answers);
    assert_eq!(message.details["unsupported"][0]["code"], 131051);
    assert!(notification.skipped.is_empty());
}

#[test]
fn an_unknown_type_is_kept_without_answering_and_noted() {
    let message = json!({"from": WA_ID, "id": "wamid.N", "timestamp": "1", "type": "hologram",
        "hologram": {"depth": 3}});
    let notification = parse_notification(&body(json!([message]), json!([]))).unwrap();
    let message = &notification.messages[0];
    assert_eq!(message.text, "[hologram]");
    assert!(!message.answers);
    assert_eq!(message.details["content"]["depth"], 3);
    assert_eq!(notification.skipped.len(), 1);
    assert!(
        notification.skipped[0].contains("hologram"),
        "{:?}",
        notification.skipped
    );
}

#[test]
fn a_reply_keeps_its_context() {
    let message = json!({"from": WA_ID, "id": "wamid.C", "timestamp": "1", "type": "text",
        "text": {"body": "yes"}, "context": {"from": "15550000000", "id": "wamid.BOT"}});
    let notification = parse_notification(&body(json!([message]), json!([]))).unwrap();
    assert_eq!(notification.messages[0].details["context_id"], "wamid.BOT");
}

#[test]
fn statuses_become_receipts() {
    let statuses = json!([
        {"id": "wamid.S1", "status": "sent", "timestamp": "1767225601", "recipient_id": WA_ID},
        {"id": "wamid.S1", "status": "delivered", "timestamp": "1767225602", "recipient_id": WA_ID},
        {"id": "wamid.S1", "status": "read", "timestamp": "1767225603", "recipient_id": WA_ID},
        {"id": "wamid.S2", "status": "failed", "timestamp": "1767225604", "recipient_id": WA_ID,
         "errors": [{"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
                     "error_data": {"details": "Message failed to send because more than 24 hours have passed"}}]},
        {"id": "wamid.S3", "status": "deleted", "timestamp": "1767225605", "recipient_id": WA_ID},
        {"status": "sent", "timestamp": "1767225606"},
    ]);
    let notification = parse_notification(&body(json!([]), statuses)).unwrap();
    let got: Vec<(&str, ReceiptStatus, u64)> = notification
        .statuses
        .iter()
        .map(|s| (s.message_id.as_str(), s.receipt.status, s.receipt.at_ms))
        .collect();
    assert_eq!(
        got,
        [
            ("wamid.S1", ReceiptStatus::Sent, 1_767_225_601_000),
            ("wamid.S1", ReceiptStatus::Delivered, 1_767_225_602_000),
            ("wamid.S1", ReceiptStatus::Read, 1_767_225_603_000),
            ("wamid.S2", ReceiptStatus::Failed, 1_767_225_604_000),
        ]
    );
    assert_eq!(notification.statuses[0].recipient, WA_ID);
    assert_eq!(notification.statuses[0].receipt.detail, None);
    assert_eq!(
        notification.statuses[3].receipt.detail.as_deref(),
        Some("131047 Re-engagement message")
    );
    // The unknown status and the one without an id are noted, not errors.
    assert_eq!(notification.skipped.len(), 2, "{:?}", notification.skipped);
    assert!(notification.skipped[0].contains("deleted"));
}

#[test]
fn several_entries_changes_and_messages_all_come_through_in_order() {
    let text = |id: &str, from: &str, body: &str| json!({"from": from, "id": id, "timestamp": "1", "type": "text", "text": {"body": body}});
    let body = json!({"object": "whatsapp_business_account", "entry": [
        {"id": "W1", "changes": [
            {"field": "messages", "value": {
                "contacts": [{"profile": {"name": "Ada"}, "wa_id": "111"}, {"profile": {"name": "Bob"}, "wa_id": "222"}],
                "messages": [text("wamid.1", "111", "one"), text("wamid.2", "222", "two")]}},
            {"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}},
            {"field": "messages", "value": {
                "statuses": [{"id": "wamid.X", "status": "read", "timestamp": "2", "recipient_id": "111"}]}},
        ]},
        {"id": "W2", "changes": [
            {"field": "messages", "value": {"messages": [text("wamid.3", "333", "three")]}},
        ]},
    ]});
    let notification = parse_notification(body.to_string().as_bytes()).unwrap();
    let got: Vec<(&str, &str, Option<&str>)> = notification
        .messages
        .iter()
        .map(|m| (m.message_id.as_str(), m.text.as_str(), m.profile_name.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("wamid.1", "one", Some("Ada")),
            ("wamid.2", "two", Some("Bob")),
            ("wamid.3", "three", None),
        ]
    );
    assert!(notification.messages[2].details.get("profile_name").is_none());
    assert_eq!(notification.statuses.len(), 1);
    assert_eq!(notification.skipped.len(), 1);
    assert!(notification.skipped[0].contains("account_update"));
}

#[test]
fn unknown_fields_are_ignored() {
    let body = json!({"object": "whatsapp_business_account", "new_top": 1, "entry": [{"id": "W", "time": 5,
        "changes": [{"field": "messages", "extra": true, "value": {"brand_new": [1],
            "messages": [{"from": "1", "id": "wamid.F", "timestamp": "1", "type": "text",
                          "text": {"body": "hi", "future": "x"}, "future": {"a": 1}}]}}]}]});
    let notification = parse_notification(body.to_string().as_bytes()).unwrap();
    assert_eq!(notification.messages[0].text, "hi");
    assert!(notification.skipped.is_empty());
}

#[test]
fn malformed_json_says_where() {
    let error = parse_notification(b"{\n  \"object\": \"whatsapp_business_account\",\n  \"entry\": [,]\n}")
        .unwrap_err();
    match error {
        NotificationError::Malformed { line, column, .. } => assert_eq!((line, column), (3, 13)),
        other => panic!("{other:?}"),
    }
    for bad in [&b""[..], b"not json", b"{\"object\": \"whats", b"\xff\xfe"] {
        assert!(matches!(
            parse_notification(bad),
            Err(NotificationError::Malformed { .. })
        ));
    }
}

#[test]
fn json_that_is_not_a_notification_is_an_error() {
    for bad in [
        json!([]),
        json!("text"),
        json!({}),
        json!({"object": "page", "entry": []}),
        json!({"object": "whatsapp_business_account"}),
        json!({"object": "whatsapp_business_account", "entry": {"id": "1"}}),
        json!({"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {}}]}]}),
    ] {
        let error = parse_notification(bad.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(error, NotificationError::NotANotification { .. }),
            "{bad}: {error:?}"
        );
    }
}

#[test]
fn odd_messages_are_skipped_or_kept_never_an_error() {
    let messages = json!([
        {"id": "wamid.no-from", "type": "text", "text": {"body": "x"}},
        {"from": WA_ID, "type": "text", "text": {"body": "no id"}},
        {"from": WA_ID, "id": "wamid.no-type"},
        {"from": WA_ID, "id": "wamid.bad-ts", "timestamp": "yesterday", "type": "text", "text": {"body": "t"}},
        {"from": WA_ID, "id": "wamid.huge-ts", "timestamp": "18446744073709551615", "type": "text"},
        {"from": WA_ID, "id": "wamid.odd", "type": "interactive", "interactive": "button"},
        "a string",
        {"from": WA_ID, "id": "wamid.wa_id", "type": "wa_id", "wa_id": "evil"},
    ]);
    let notification = parse_notification(&body(messages, json!(["x", 1, null]))).unwrap();
    let kept: Vec<&str> = notification
        .messages
        .iter()
        .map(|m| m.message_id.as_str())
        .collect();
    assert_eq!(
        kept,
        [
            "wamid.no-type",
            "wamid.bad-ts",
            "wamid.huge-ts",
            "wamid.odd",
            "wamid.wa_id"
        ]
    );
    assert_eq!(notification.messages[1].timestamp, SystemTime::UNIX_EPOCH);
    assert_eq!(notification.messages[2].timestamp, SystemTime::UNIX_EPOCH);
    assert_eq!(notification.messages[2].text, "");
    assert!(!notification.messages[3].answers);
    // A type named like a details key does not overwrite the sender.
    assert_eq!(notification.messages[4].details["wa_id"], WA_ID);
    // no-from, no-id, the string, the unknown types and three bad statuses.
    assert!(notification.skipped.len() >= 8, "{:?}", notification.skipped);
}

#[test]
fn a_change_with_an_unreadable_value_is_skipped() {
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [
        {"field": "messages", "value": {"messages": "not a list"}},
        {"field": "messages", "value": {"messages": [{"from": "1", "id": "wamid.OK", "type": "text", "text": {"body": "ok"}}]}},
    ]}]});
    let notification = parse_notification(body.to_string().as_bytes()).unwrap();
    assert_eq!(notification.messages.len(), 1);
    assert_eq!(notification.skipped.len(), 1);
}

proptest::proptest! {
    /// No input makes the parser panic.
    #[test]
    fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
        let _ = parse_notification(&bytes);
    }
}
