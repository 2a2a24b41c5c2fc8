//! Flow diagrams: every step and every edge a conversation can take, with the
//! edge's kind, as Mermaid text (for a GitHub comment) or as SVG (for a page,
//! rendered here: no network, no graphviz).

use std::fmt::Write as _;

use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::style::StyleAttr;
use layout::std_shapes::render::get_shape_size;
use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use layout::topo::layout::VisualGraph;

use super::{CompiledKind, Program};

/// Why one step can go to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EdgeKind {
    /// The default successor: the `next` field, or the following step.
    Next,
    /// A Condition's rules held.
    Then,
    /// A Condition's rules did not hold.
    Else,
    /// An Api step failed.
    OnError,
    /// A GoTo's jump.
    GoTo,
    /// A GoTo's `max_visits` is spent.
    Fallback,
}

impl EdgeKind {
    fn label(self) -> &'static str {
        match self {
            EdgeKind::Next => "next",
            EdgeKind::Then => "then",
            EdgeKind::Else => "else",
            EdgeKind::OnError => "on_error",
            EdgeKind::GoTo => "goto",
            EdgeKind::Fallback => "fallback",
        }
    }
}

/// One edge: from a step's index to another's, or to the end (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edge {
    pub(crate) from: usize,
    pub(crate) to: Option<usize>,
    pub(crate) kind: EdgeKind,
}

/// Every edge of the flow, in step order.
pub(crate) fn edges(program: &Program) -> Vec<Edge> {
    let mut out = Vec::new();
    for (from, step) in program.steps.iter().enumerate() {
        let mut edge = |to, kind| out.push(Edge { from, to, kind });
        match &step.kind {
            CompiledKind::Question { .. }
            | CompiledKind::Message { .. }
            | CompiledKind::ContactUpdate { .. }
            | CompiledKind::Delay { .. } => edge(step.next, EdgeKind::Next),
            CompiledKind::Api(api) => {
                edge(step.next, EdgeKind::Next);
                if let Some(on_error) = api.on_error {
                    edge(Some(on_error), EdgeKind::OnError);
                }
            }
            CompiledKind::Condition { then, otherwise, .. } => {
                edge(then.or(step.next), EdgeKind::Then);
                edge(otherwise.or(step.next), EdgeKind::Else);
            }
            CompiledKind::GoTo { target, fallback, .. } => {
                edge(Some(*target), EdgeKind::GoTo);
                if let Some(fallback) = fallback {
                    edge(Some(*fallback), EdgeKind::Fallback);
                }
            }
            // A handoff ends the bot's part of the conversation.
            CompiledKind::Assign { .. } => {}
        }
    }
    out
}

/// The flow as a Mermaid `flowchart`: one node per step (its name and type,
/// and a Question's numbered options), one labelled arrow per edge, and an
/// `end` node when a path ends the conversation.
pub(crate) fn mermaid(program: &Program) -> String {
    let mut out = String::from("flowchart TD\n");
    for (i, step) in program.steps.iter().enumerate() {
        let mut label = format!(
            "{}<br/><i>{}</i>",
            mermaid_text(&step.name),
            step.kind.type_name()
        );
        // A Question's options, numbered as a user may answer them.
        if let CompiledKind::Question { options, .. } = &step.kind {
            for (n, option) in options.iter().enumerate() {
                let _ = write!(label, "<br/>{}. {}", n + 1, mermaid_text(&option.title));
            }
        }
        let (open, close) = match step.kind {
            CompiledKind::Condition { .. } => ("{", "}"),
            CompiledKind::Question { .. } => ("([", "])"),
            CompiledKind::Assign { .. } => ("[[", "]]"),
            _ => ("[", "]"),
        };
        let _ = writeln!(out, "    s{i}{open}\"{label}\"{close}");
    }
    let edges = edges(program);
    if edges.iter().any(|e| e.to.is_none()) {
        out.push_str("    done((\"end\"))\n");
    }
    for edge in &edges {
        let to = edge.to.map_or_else(|| "done".to_string(), |t| format!("s{t}"));
        let _ = writeln!(out, "    s{} -->|{}| {to}", edge.from, edge.kind.label());
    }
    out
}

/// Text for inside a quoted Mermaid label: every character that Mermaid,
/// HTML or Markdown could read as syntax, and everything outside printable
/// ASCII, becomes an entity code (`#34;`), which Mermaid turns back into
/// the character.
fn mermaid_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || " .,:;!?()[]{}_-+/*=@$%^~'".contains(c) {
            out.push(c);
        } else {
            let _ = write!(out, "#{};", u32::from(c));
        }
    }
    out
}

/// The flow as an SVG image, laid out here (layout-rs, a Sugiyama layout in
/// pure Rust): boxes for steps, labelled arrows for edges. Text is escaped,
/// so a step name cannot inject markup.
///
/// layout-rs asserts on some graphs (found by the property test in
/// `tests/flow_diagram.rs`): a flow is user input, so a failed layout is
/// caught and tried again without its crossing optimisation, then without
/// placement, and at worst drawn as a plain list of steps and edges.
pub(crate) fn svg(program: &Program) -> String {
    for (disable_opt, disable_layout) in [(false, false), (true, false), (true, true)] {
        let drawn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut graph = graph(program);
            let mut writer = SVGWriter::new();
            graph.do_it(false, disable_opt, disable_layout, &mut writer);
            writer.finalize()
        }));
        match drawn {
            Ok(svg) => return svg,
            Err(_) => tracing::warn!(
                disable_opt,
                disable_layout,
                "the flow's diagram layout failed; trying a simpler one"
            ),
        }
    }
    svg_list(program)
}

/// The steps and their edges as a layout-rs graph.
fn graph(program: &Program) -> VisualGraph {
    let look = StyleAttr::simple();
    let mut graph = VisualGraph::new(Orientation::TopToBottom);
    let node = |shape: ShapeKind| {
        let size = get_shape_size(Orientation::TopToBottom, &shape, look.font_size, false);
        Element::create(shape, look.clone(), Orientation::TopToBottom, size)
    };
    let handles: Vec<_> = program
        .steps
        .iter()
        .map(|step| {
            let label = format!("{}\n({})", svg_text(&step.name), step.kind.type_name());
            graph.add_node(node(ShapeKind::new_box(&label)))
        })
        .collect();
    let edges = edges(program);
    let end = edges
        .iter()
        .any(|e| e.to.is_none())
        .then(|| graph.add_node(node(ShapeKind::new_circle("end"))));
    for edge in &edges {
        let to = match edge.to {
            Some(to) => handles.get(to).copied(),
            None => end,
        };
        if let (Some(&from), Some(to)) = (handles.get(edge.from), to) {
            graph.add_edge(Arrow::simple(edge.kind.label()), from, to);
        }
    }
    graph
}

/// The last resort: one line per step and per edge, as SVG text.
fn svg_list(program: &Program) -> String {
    let mut lines: Vec<String> = program
        .steps
        .iter()
        .map(|step| format!("{} ({})", step.name, step.kind.type_name()))
        .collect();
    for edge in edges(program) {
        let from = program.steps.get(edge.from).map_or("?", |s| &*s.name);
        let to = edge
            .to
            .and_then(|to| program.steps.get(to))
            .map_or("end", |s| &*s.name);
        lines.push(format!("{from} → {to} ({})", edge.kind.label()));
    }
    let height = 20 * lines.len() + 20;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"14\">\n"
    );
    for (i, line) in lines.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{}\">{}</text>",
            20 * (i + 1),
            xml_escape(&svg_text(line))
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Text as XML character data.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A step name as SVG text: layout-rs escapes markup characters; control
/// characters (not allowed in XML) become spaces.
fn svg_text(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::Flow;

    #[test]
    fn the_plain_list_escapes_names_and_lists_every_step_and_edge() {
        let flow = Flow::from_json(
            r#"{"name": "f", "steps": [
              {"type": "question", "name": "<script>alert('x')</script> & \"q\"", "text": "?"},
              {"type": "message", "name": "Bye", "text": "!"}
            ]}"#,
        )
        .expect("a valid flow");
        let svg = super::svg_list(flow.program());
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(
            svg.contains("&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt; &amp; &quot;q&quot;"),
            "{svg}"
        );
        assert!(
            svg.contains("Bye (message)") && svg.contains("→ Bye (next)") && svg.contains("Bye → end"),
            "{svg}"
        );
    }
}
