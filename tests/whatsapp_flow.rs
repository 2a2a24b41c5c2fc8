//! `flows/whatsapp_support.json` end to end, driven only through signed
//! webhooks: the crate's mock OpenAI answers, the crate's WhatsApp Cloud API
//! stand-in (`chatflow::mock::whatsapp`, which checks every send as the real
//! API does) builds and signs the notifications and takes the sends, and
//! the WhatsApp channel delivers through it. The conversation goes from the
//! menu to an answer of the assistant to a handoff, and every reply reaches
//! the stand-in exactly once.
#![cfg(all(feature = "whatsapp", feature = "mock"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chatflow::channel::DeliveryStatus;
use chatflow::http::ReqwestClient;
use chatflow::mock::MockOpenAi;
use chatflow::mock::whatsapp::{MockWhatsApp, MockWhatsAppConfig, Notification, SentKind};
use chatflow::store::{Direction, MemoryStore, TranscriptEntry};
use chatflow::whatsapp::{WhatsAppChannel, WhatsAppSettings, router};
use chatflow::{Runtime, Status, SystemClock};
use common::{mock_engine, scripted_reply, shipped_flow};
use serde_json::Value;
use tower::ServiceExt;

const ADA: &str = "15551234567";
const CONVERSATION: &str = "whatsapp:15551234567";

struct Setup {
    runtime: Runtime,
    app: Router,
    whatsapp: MockWhatsApp,
    openai: MockOpenAi,
}

impl Setup {
    async fn new() -> Setup {
        let openai = MockOpenAi::builder().reply_with(scripted_reply).start().await;
        let whatsapp = MockWhatsApp::start(MockWhatsAppConfig::new()).await;
        let settings = WhatsAppSettings::new(
            "verify-me",
            whatsapp.app_secret(),
            whatsapp.access_token(),
            whatsapp.phone_number_id(),
        )
        .with_graph_url(whatsapp.uri());
        let engine = mock_engine(
            shipped_flow("whatsapp_support.json"),
            &openai,
            Arc::new(SystemClock),
        );
        let http = Arc::new(ReqwestClient::new().unwrap());
        let runtime = Runtime::builder(engine, Arc::new(MemoryStore::new()))
            .channel("whatsapp", Arc::new(WhatsAppChannel::new(settings.clone(), http)))
            .build();
        Setup {
            app: router(runtime.clone(), settings),
            runtime,
            whatsapp,
            openai,
        }
    }

    /// Posts a notification the stand-in built and signed, as Meta would.
    async fn post(&self, notification: &Notification) -> Value {
        let request = Request::post("/webhooks/whatsapp")
            .header("content-type", "application/json")
            .header("x-hub-signature-256", notification.signature())
            .body(Body::from(notification.body().to_vec()))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// Posts `notification` and waits until the bot's entries up to one for
    /// which `last` holds are committed; then delivers them.
    async fn says(
        &self,
        notification: Notification,
        last: impl Fn(&TranscriptEntry) -> bool,
    ) -> Vec<TranscriptEntry> {
        let after = self.transcript().await.last().map_or(0, |e| e.seq);
        let mut replies = self.runtime.subscribe(CONVERSATION, after);
        assert_eq!(self.post(&notification).await["messages"], 1);
        let mut got = Vec::new();
        loop {
            let entry = tokio::time::timeout(Duration::from_secs(10), replies.next())
                .await
                .expect("the bot answers within 10 s")
                .unwrap();
            let done = last(&entry);
            got.push(entry);
            if done {
                break;
            }
        }
        self.runtime.deliver_due().await.unwrap();
        got
    }

    fn text(&self, text: &str) -> Notification {
        self.whatsapp.notification().text(ADA, text).build()
    }

    async fn transcript(&self) -> Vec<TranscriptEntry> {
        self.runtime.store().transcript(CONVERSATION, 0).await.unwrap()
    }
}

const HANDOFF_TEXT: &str = "I'm passing you to a member of our support team. They'll reply here shortly.";

#[tokio::test]
async fn a_conversation_driven_by_webhooks_reaches_an_answer_and_a_handoff() {
    let setup = Setup::new().await;

    // "hi" starts the flow: the menu, as reply buttons.
    let hi = setup.text("hi");
    let menu = setup.says(hi.clone(), |e| !e.options.is_empty()).await;
    assert_eq!(menu.len(), 1);
    let sent = setup.whatsapp.sent_to(ADA);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind, SentKind::ReplyButtons);
    assert_eq!(
        sent[0].text.as_deref(),
        Some("Hi! I'm the support assistant. How can I help you today?")
    );
    let buttons: Vec<(&str, &str)> = sent[0]
        .options
        .iter()
        .map(|o| (o.id.as_str(), o.title.as_str()))
        .collect();
    assert_eq!(
        buttons,
        [
            ("track_order", "Track an order"),
            ("human", "Talk to a person"),
            ("other", "Something else")
        ]
    );

    // Tapping "Something else" (the channel gives the button's id), then a question.
    let tap = setup
        .whatsapp
        .notification()
        .button_reply(ADA, "other", "Something else")
        .build();
    let asked = setup.says(tap, |e| e.text == "What can I help you with?").await;
    assert_eq!(asked.len(), 1);
    let answer = setup
        .says(setup.text("Where is my parcel?"), |e| {
            e.text.starts_with("Answer to:")
        })
        .await;
    assert_eq!(answer.last().unwrap().text, "Answer to: Where is my parcel?");

    // The assistant says HANDOFF: the handoff message, then the handoff.
    let handoff = setup
        .says(setup.text("I want a human please"), |e| {
            e.direction == Direction::Handoff
        })
        .await;
    assert_eq!(handoff[0].text, HANDOFF_TEXT);
    let conversation = setup.runtime.store().load(CONVERSATION).await.unwrap().unwrap();
    assert!(
        matches!(conversation.status(), Status::HandedOff { .. }),
        "{:?}",
        conversation.status()
    );

    // A redelivered webhook changes nothing and sends nothing.
    assert_eq!(setup.post(&hi).await["duplicates"], 1);
    setup.runtime.deliver_due().await.unwrap();

    // Every bot message was sent once, in order, and recorded as accepted
    // with the stand-in's message id.
    let transcript = setup.transcript().await;
    let out: Vec<&TranscriptEntry> = transcript
        .iter()
        .filter(|e| e.direction == Direction::Out)
        .collect();
    let sent = setup.whatsapp.sent_to(ADA);
    let sent_texts: Vec<&str> = sent.iter().map(|s| s.text.as_deref().unwrap_or("")).collect();
    let out_texts: Vec<&str> = out.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(
        out_texts,
        [
            "Hi! I'm the support assistant. How can I help you today?",
            "What can I help you with?",
            "Answer to: Where is my parcel?",
            HANDOFF_TEXT,
        ]
    );
    // A handoff notice, if the channel sends one, comes last.
    assert_eq!(sent_texts[..out_texts.len()], out_texts[..], "{sent:#?}");
    assert!(sent.len() <= out_texts.len() + 1, "{sent:#?}");
    for (entry, send) in out.iter().zip(&sent) {
        let delivery = entry
            .delivery
            .as_ref()
            .expect("a WhatsApp reply has a delivery state");
        assert_eq!(delivery.status, DeliveryStatus::Accepted, "{entry:?}");
        assert_eq!(delivery.channel_message_id.as_deref(), Some(send.wamid.as_str()));
    }
    // The customer's messages were marked read as the bot answered them.
    let read: Vec<String> = setup.whatsapp.reads().into_iter().map(|r| r.message_id).collect();
    assert!(read.contains(&hi.message_ids()[0]), "{read:?}");
    // Nothing the stand-in refused.
    assert!(
        setup.whatsapp.requests().iter().all(|r| r.status == 200),
        "{:#?}",
        setup.whatsapp.requests()
    );
}

#[tokio::test]
async fn talk_to_a_person_hands_off_at_once() {
    let setup = Setup::new().await;
    setup.says(setup.text("hello"), |e| !e.options.is_empty()).await;
    // Typed, not tapped: the option's title picks it too.
    let handoff = setup
        .says(setup.text("talk to a person"), |e| {
            e.direction == Direction::Handoff
        })
        .await;
    assert_eq!(handoff[0].text, HANDOFF_TEXT);
    assert_eq!(setup.whatsapp.texts_to(ADA)[1], HANDOFF_TEXT);
    // The assistant was never asked.
    assert!(setup.openai.requests().is_empty());
}

#[tokio::test]
async fn tracking_an_order_asks_for_its_number_then_the_assistant() {
    let setup = Setup::new().await;
    setup.says(setup.text("hello"), |e| !e.options.is_empty()).await;
    let tap = setup
        .whatsapp
        .notification()
        .button_reply(ADA, "track_order", "Track an order")
        .build();
    setup
        .says(tap, |e| e.text == "Sure. What is your order number?")
        .await;
    let answer = setup
        .says(setup.text("#4521"), |e| e.text.starts_with("Answer to:"))
        .await;
    assert_eq!(answer.last().unwrap().text, "Answer to: Where is my order #4521?");
    assert_eq!(
        setup.whatsapp.texts_to(ADA),
        [
            "Hi! I'm the support assistant. How can I help you today?",
            "Sure. What is your order number?",
            "Answer to: Where is my order #4521?",
        ]
    );
}
