//! Flow diagrams: Mermaid text (snapshots of the shipped flows) and SVG.

use chatflow::Flow;

fn load(text: &str) -> Flow {
    Flow::from_json(text).unwrap_or_else(|e| panic!("{e}"))
}

/// Every edge kind once: next, then/else, on_error, goto, fallback, and the end.
const EVERY_EDGE: &str = r#"{"name": "edges", "steps": [
  {"type": "question", "name": "Ask", "text": "Order?"},
  {"type": "api", "name": "Lookup", "method": "GET", "url": "https://shop.example/o", "on_error": "Sorry"},
  {"type": "condition", "name": "Found?", "all": [{"left": "<<step.Lookup.status>>", "op": "equals", "right": 200}],
   "then": "Done", "else": "Wait"},
  {"type": "delay", "name": "Wait", "seconds": 1},
  {"type": "goto", "name": "Again", "target": "Lookup", "max_visits": 2, "fallback": "Handoff"},
  {"type": "message", "name": "Done", "text": "Found it"},
  {"type": "message", "name": "Sorry", "text": "Sorry", "next": "Handoff"},
  {"type": "assign", "name": "Handoff", "team": "support"}
]}"#;

#[test]
fn shipped_flows_as_mermaid() {
    insta::glob!("../flows", "*.json", |path| {
        let flow = Flow::from_path(path).unwrap_or_else(|e| panic!("{e}"));
        insta::assert_snapshot!(flow.to_mermaid());
    });
}

#[test]
fn mermaid_labels_every_edge_with_its_kind() {
    let mermaid = load(EVERY_EDGE).to_mermaid();
    let edges: Vec<&str> = mermaid
        .lines()
        .filter(|l| l.contains("-->"))
        .map(str::trim)
        .collect();
    assert_eq!(
        edges,
        [
            "s0 -->|next| s1",
            "s1 -->|next| s2",
            "s1 -->|on_error| s6",
            "s2 -->|then| s5",
            "s2 -->|else| s3",
            "s3 -->|next| s4",
            "s4 -->|goto| s1",
            "s4 -->|fallback| s7",
            "s5 -->|next| s6",
            "s6 -->|next| s7",
        ],
        "{mermaid}"
    );
    assert!(mermaid.starts_with("flowchart TD\n"), "{mermaid}");
    assert!(
        mermaid.contains("s2{\"Found?<br/><i>condition</i>\"}"),
        "{mermaid}"
    );

    // A condition without `else` at the end of the flow, and a last message, end the conversation.
    let ends = load(
        r#"{"name": "f", "steps": [
          {"type": "question", "name": "Q", "text": "?"},
          {"type": "condition", "name": "C", "any": [{"left": "<<step.Q.response>>", "op": "is_number"}], "then": "Q"}
        ]}"#,
    )
    .to_mermaid();
    assert!(ends.contains("    done((\"end\"))\n"), "{ends}");
    assert!(ends.contains("s1 -->|then| s0"), "{ends}");
    assert!(ends.contains("s1 -->|else| done"), "{ends}");
}

const HOSTILE: &str = r#"</text><script>alert("x")</script> [a] {b} #1 & café 🚀"#;

fn hostile_flow() -> Flow {
    let name = serde_json::to_string(HOSTILE).expect("a string");
    load(&format!(
        r#"{{"name": "f", "steps": [
          {{"type": "question", "name": {name}, "text": "?"}},
          {{"type": "message", "name": "Plain", "text": "ok"}}
        ]}}"#
    ))
}

#[test]
fn mermaid_escapes_step_names() {
    let mermaid = hostile_flow().to_mermaid();
    let node = mermaid.lines().nth(1).expect("the first node");
    // Only the label's own quotes, and no markup, survive.
    assert_eq!(node.matches('"').count(), 2, "{node}");
    for raw in ["<script", "</text", "&", "é", "🚀"] {
        assert!(!node.contains(raw), "{raw} in {node}");
    }
    assert!(node.contains("#60;script#62;"), "{node}");
    assert!(node.contains("caf#233; #128640;"), "{node}");
}

#[test]
fn svg_is_well_formed_and_shows_every_step() {
    for flow in [load(EVERY_EDGE), hostile_flow()] {
        let svg = flow.to_svg();
        let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("not XML: {e}\n{svg}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        assert!(
            doc.descendants().all(|n| n.tag_name().name() != "script"),
            "{svg}"
        );
        let text: String = doc
            .descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .collect::<Vec<_>>()
            .join("\n");
        for step in flow.steps() {
            assert!(text.contains(&step.name), "{} missing from\n{text}", step.name);
        }
        if flow.name() == "edges" {
            for label in ["next", "then", "else", "on_error", "goto", "fallback"] {
                assert!(text.contains(label), "{label} missing from\n{text}");
            }
        }
    }
}

mod random_flows {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// Step `i` of `n`, of kind `kind % 4`, going to targets picked by `a`
    /// and `b`. Only Questions (which wait) and bounded GoTos jump back, so
    /// the flow has no loop without a pause and always loads.
    pub(super) fn step(i: usize, kind: u8, a: usize, b: usize, n: usize) -> Value {
        let name = |j: usize| Value::from(format!("S{j}"));
        // A later step, or null (the end of the flow) past the last one.
        let forward = |j: usize| {
            let to = i + 1 + j % (n - i);
            if to < n { name(to) } else { Value::Null }
        };
        match kind % 4 {
            0 => json!({"type": "question", "name": name(i), "text": "?", "next": name(a % n)}),
            1 => json!({"type": "message", "name": name(i), "text": "!", "next": forward(a)}),
            2 => json!({"type": "condition", "name": name(i),
                        "all": [{"left": "<<contact.x>>", "op": "is_number"}],
                        "then": forward(a), "else": forward(b)}),
            // The last step ends the flow, so a GoTo always has a later fallback.
            _ if i + 1 == n => json!({"type": "message", "name": name(i), "text": "!"}),
            _ => {
                let target = if a % n == i { (a + 1) % n } else { a % n };
                let fallback = i + 1 + b % (n - 1 - i);
                json!({"type": "goto", "name": name(i), "target": name(target),
                       "max_visits": 2, "fallback": name(fallback)})
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the graph (self edges, back edges, crossings), the
        /// layout finishes and the SVG is XML showing every step.
        #[test]
        fn any_valid_flow_draws(shape in prop::collection::vec((any::<u8>(), 0usize..40, 0usize..40), 1..14)) {
            let n = shape.len();
            let steps: Vec<Value> = shape
                .iter()
                .enumerate()
                .map(|(i, &(kind, a, b))| step(i, kind, a, b, n))
                .collect();
            let flow = Flow::from_json(&json!({"name": "random", "steps": steps}).to_string())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let svg = flow.to_svg();
            let doc = roxmltree::Document::parse(&svg).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let text: String = doc.descendants().filter_map(|n| n.text()).collect();
            for step in flow.steps() {
                prop_assert!(text.contains(&step.name));
            }
            prop_assert!(flow.to_mermaid().lines().count() > n);
        }
    }
}

/// A flow whose layout tripped an assertion inside layout-rs (found by
/// `random_flows`): drawing it must not panic.
#[test]
fn a_flow_that_tripped_the_layout_still_draws() {
    use serde_json::{Value, json};
    let shape: [(u8, usize, usize); 8] = [
        (107, 5, 4),
        (44, 6, 0),
        (0, 0, 0),
        (0, 0, 0),
        (62, 5, 30),
        (10, 1, 8),
        (43, 6, 0),
        (0, 2, 0),
    ];
    let n = shape.len();
    let steps: Vec<Value> = shape
        .iter()
        .enumerate()
        .map(|(i, &(kind, a, b))| random_flows::step(i, kind, a, b, n))
        .collect();
    let flow = Flow::from_json(&json!({"name": "random", "steps": steps}).to_string()).unwrap();
    let svg = flow.to_svg();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let text: String = doc.descendants().filter_map(|n| n.text()).collect();
    for step in flow.steps() {
        assert!(text.contains(&step.name), "{} missing", step.name);
    }
}

#[test]
fn a_questions_node_lists_its_options_numbered_and_escaped() {
    let flow = load(
        r#"{"name": "menu", "steps": [
          {"type": "question", "name": "Menu", "text": "Pick", "options": [
            {"id": "track", "title": "Track an order"}, "Talk to a <person>"]}
        ]}"#,
    );
    let mermaid = flow.to_mermaid();
    let node = mermaid.lines().nth(1).expect("the first node");
    assert_eq!(
        node,
        r#"    s0(["Menu<br/><i>question</i><br/>1. Track an order<br/>2. Talk to a #60;person#62;"])"#
    );
}
