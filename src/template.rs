//! Templates: `<<path>>` (or the guide's `{{path}}`) placeholders, parsed once
//! when a flow loads and rendered against a conversation's context.
//!
//! Paths start at one of five roots:
//!
//! | path | value |
//! |---|---|
//! | `step.<name>.<field>...` | a step's result: `response`, `status`, `headers`, `error` |
//! | `contact.<attribute>...` | a contact attribute set by a ContactUpdate step |
//! | `conversation.id` | the conversation's id |
//! | `conversation.start_text` | the text of the message that started the conversation |
//! | `conversation.message.<field>...` | what the channel said about the latest user message: `type`, `wa_id`, `profile_name`, `media_id`, `caption`, `latitude`, … (WhatsApp: see `docs/whatsapp.md`); empty for a plain text message |
//! | `var.<name>...` | a value the host passes to the engine |
//! | `secret.<name>` | a secret the host passes in; never shown in logs or errors |
//!
//! Step names may contain spaces and dots, so `step.` paths are matched
//! against the flow's step names (longest first) rather than split on dots.
//! Later segments index objects by key and arrays by number: `data.0.role`
//! and `data[0].role` are the same path. A filter picks the first array
//! element with a given field: `output[type=message].content.0.text`.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// Why a template could not be parsed. `offset` is a character offset into
/// the template text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {offset})")]
pub struct TemplateError {
    /// What is wrong.
    pub message: String,
    /// Character offset of the problem in the template text.
    pub offset: usize,
}

/// Why a template could not be rendered for one conversation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A header value would contain a line break or another control
    /// character (header injection).
    #[error("`{path}` would put a line break or control character into a header value")]
    LineBreakInHeader {
        /// The placeholder's path.
        path: String,
    },
    /// A URL placeholder rendered to `.` or `..`, which would change the URL's path.
    #[error("`{path}` renders to `{value}`, which is not allowed in a URL")]
    DotSegmentInUrl {
        /// The placeholder's path.
        path: String,
        /// The offending value.
        value: String,
    },
}

/// The root a path starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Root {
    Step(String),
    Contact,
    Conversation,
    Var,
    Secret,
}

/// One segment after the root: an object key (usable as an array index
/// when numeric), or a filter `[key=value]` that picks the first array
/// element whose `key` is `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) key: String,
    pub(crate) index: Option<usize>,
    pub(crate) filter: Option<(String, String)>,
}

/// A parsed placeholder path, e.g. `step.Start GPT thread.response.id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Path {
    pub(crate) root: Root,
    pub(crate) segments: Vec<Segment>,
    source: String,
}

impl Path {
    /// The path as written, for messages.
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    pub(crate) fn is_secret(&self) -> bool {
        self.root == Root::Secret
    }

    /// The first segment after the root (the attribute, var or secret name).
    pub(crate) fn first_key(&self) -> Option<&str> {
        self.segments.first().map(|s| s.key.as_str())
    }

    /// Parses a path such as `contact.name` or `step.Welcome.response`.
    pub(crate) fn parse(text: &str, step_names: &[&str]) -> Result<Path, String> {
        let source = text.trim();
        let (root_name, rest) = match source.split_once('.') {
            Some((root, rest)) => (root, Some(rest)),
            None => (source, None),
        };
        let (root, rest) = match root_name {
            "step" => {
                let rest = rest.ok_or("`step` needs a step name: `step.<name>.response`")?;
                let name = step_names
                    .iter()
                    .filter(|name| {
                        rest.strip_prefix(**name)
                            .is_some_and(|after| after.is_empty() || after.starts_with(['.', '[']))
                    })
                    .max_by_key(|name| name.len())
                    .ok_or_else(|| format!("`{source}` names no step: {}", guess_step(rest)))?;
                let after = &rest[name.len()..];
                (
                    Root::Step((*name).to_string()),
                    after.strip_prefix('.').unwrap_or(after),
                )
            }
            "contact" | "var" | "secret" | "conversation" => {
                let rest = rest
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| format!("`{root_name}` needs a name after it, e.g. `{root_name}.name`"))?;
                let root = match root_name {
                    "contact" => Root::Contact,
                    "var" => Root::Var,
                    "secret" => Root::Secret,
                    _ => Root::Conversation,
                };
                (root, rest)
            }
            "" => return Err("empty placeholder".into()),
            other => {
                return Err(format!(
                    "unknown root `{other}` in `{source}`: a path starts with step, contact, conversation, var or secret"
                ));
            }
        };
        let segments = parse_segments(rest).map_err(|e| format!("{e} in `{source}`"))?;
        match root {
            Root::Step(ref name)
                if segments
                    .first()
                    .is_some_and(|s| !STEP_FIELDS.contains(&s.key.as_str())) =>
            {
                return Err(format!(
                    "`{source}`: a step's result has {} (after `step.{name}.`)",
                    STEP_FIELDS.map(|f| format!("`{f}`")).join(", ")
                ));
            }
            Root::Conversation if !conversation_path(&segments) => {
                return Err(format!(
                    "`{source}`: the conversation fields are `conversation.id`, `conversation.start_text` and `conversation.message.<field>`"
                ));
            }
            Root::Secret if segments.len() != 1 => {
                return Err(format!(
                    "`{source}`: a secret is one name, e.g. `secret.OPENAI_API_KEY`"
                ));
            }
            _ => {}
        }
        Ok(Path {
            root,
            segments,
            source: source.to_string(),
        })
    }
}

/// The fields of a step's result.
const STEP_FIELDS: [&str; 5] = ["response", "option", "status", "headers", "error"];

/// What `conversation.` may be followed by alone: the id, and the text of
/// the message that started the conversation (see `StartMode`). A path
/// into `conversation.message.` reads the latest message's details.
const CONVERSATION_FIELDS: [&str; 2] = ["id", "start_text"];

/// Whether `conversation.` followed by these segments names something: a
/// field, or a path into the latest message's details.
fn conversation_path(segments: &[Segment]) -> bool {
    match segments {
        [field] => CONVERSATION_FIELDS.contains(&field.key.as_str()),
        [first, _, ..] => first.key == "message",
        [] => false,
    }
}

/// For an unknown step path, the part that was probably meant as the name.
fn guess_step(rest: &str) -> String {
    let cut = [".response", ".status", ".error", ".headers"]
        .iter()
        .filter_map(|field| rest.find(field))
        .min()
        .unwrap_or(rest.len());
    format!("there is no step named `{}`", &rest[..cut])
}

fn parse_segments(rest: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    if rest.is_empty() {
        return Ok(segments);
    }
    for piece in rest.split('.') {
        // `data[0][1]` → `data`, `0`, `1`
        let (head, mut brackets) = match piece.find('[') {
            Some(i) => (&piece[..i], &piece[i..]),
            None => (piece, ""),
        };
        if head.is_empty() && brackets.is_empty() {
            return Err("empty segment (two dots in a row?)".into());
        }
        if !head.is_empty() {
            segments.push(Segment::new(head));
        }
        while !brackets.is_empty() {
            let close = brackets.find(']').ok_or("`[` without a matching `]`")?;
            let inner = &brackets[1..close];
            if let Some((key, value)) = inner.split_once('=') {
                let (key, value) = (key.trim(), value.trim());
                if key.is_empty() {
                    return Err(format!("`[{inner}]` needs a key before `=`"));
                }
                segments.push(Segment {
                    key: inner.to_string(),
                    index: None,
                    filter: Some((key.to_string(), value.to_string())),
                });
            } else if inner.parse::<usize>().is_ok() {
                segments.push(Segment::new(inner));
            } else {
                return Err(format!(
                    "`[{inner}]` is neither an array index nor a filter like `[type=message]`"
                ));
            }
            brackets = &brackets[close + 1..];
            if !brackets.is_empty() && !brackets.starts_with('[') {
                return Err(format!("unexpected `{brackets}` after `]`"));
            }
        }
    }
    Ok(segments)
}

impl Segment {
    fn new(key: &str) -> Segment {
        Segment {
            key: key.to_string(),
            index: key.parse().ok(),
            filter: None,
        }
    }
}

/// Follows `segments` into `value`; `None` when any step is missing.
pub(crate) fn lookup<'v>(value: &'v Value, segments: &[Segment]) -> Option<&'v Value> {
    segments
        .iter()
        .try_fold(value, |current, segment| match (current, &segment.filter) {
            (Value::Array(items), Some((key, wanted))) => items
                .iter()
                .find(|item| item.get(key).and_then(Value::as_str) == Some(wanted.as_str())),
            (_, Some(_)) => None,
            (Value::Object(map), None) => map.get(&segment.key),
            (Value::Array(items), None) => segment.index.and_then(|i| items.get(i)),
            _ => None,
        })
}

/// Where placeholder values come from: implemented by the engine over a
/// conversation and the host's values.
pub(crate) trait Scope {
    /// The value at `path`, or `None` when it does not exist.
    fn resolve(&self, path: &Path) -> Option<Cow<'_, Value>>;
}

/// A value as text: strings as they are, `null` as nothing, other values as JSON.
pub(crate) fn value_to_text(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => out.push_str(s),
        Value::Null => {}
        // Serialized straight into `out`, without a temporary string.
        other => {
            let _ = fmt::Write::write_fmt(out, format_args!("{other}"));
        }
    }
}

/// The length of [`value_to_text`]'s output, without building it.
fn text_len(value: &Value) -> usize {
    struct Count(usize);
    impl fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    match value {
        Value::String(s) => s.len(),
        Value::Null => 0,
        other => {
            let mut count = Count(0);
            let _ = fmt::Write::write_fmt(&mut count, format_args!("{other}"));
            count.0
        }
    }
}

/// Placeholders [`Template::render`] resolves up front to allocate its
/// output once; a template with more renders by growing its output.
const RESOLVED_INLINE: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Placeholder(Path),
}

/// A parsed text template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

/// Characters left as they are in a URL placeholder's value: RFC 3986's
/// unreserved set. Everything else, `/ ? # & =` included, is encoded so a
/// value cannot change the URL's structure.
const URL_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `value` percent-encoded as a URL placeholder's value is.
pub(crate) fn url_encode(value: &str) -> String {
    utf8_percent_encode(value, URL_VALUE).to_string()
}

/// How secrets are treated while rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrets {
    /// Insert secret values (for the wire).
    Reveal,
    /// Insert `***` instead (for logs and errors).
    Mask,
}

impl Template {
    /// Parses `text`, resolving `step.` paths against `step_names`.
    pub(crate) fn parse(text: &str, step_names: &[&str]) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut consumed_chars = 0;
        while let Some((start, close)) = find_opener(rest) {
            literal.push_str(&rest[..start]);
            let inner_start = start + 2;
            let offset = consumed_chars + rest[..start].chars().count();
            let Some(len) = rest[inner_start..].find(close) else {
                return Err(TemplateError {
                    message: format!(
                        "`{}` is never closed by `{close}` (placeholders look like <<contact.name>>)",
                        &rest[start..inner_start]
                    ),
                    offset,
                });
            };
            let inner = &rest[inner_start..inner_start + len];
            let path = Path::parse(inner, step_names).map_err(|message| TemplateError { message, offset })?;
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Placeholder(path));
            let end = inner_start + len + close.len();
            consumed_chars += rest[..end].chars().count();
            rest = &rest[end..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The placeholder, when the template is exactly one and nothing else.
    pub(crate) fn as_single_placeholder(&self) -> Option<&Path> {
        match self.parts.as_slice() {
            [Part::Placeholder(path)] => Some(path),
            _ => None,
        }
    }

    /// Every path the template refers to.
    pub(crate) fn paths(&self) -> impl Iterator<Item = &Path> {
        self.parts.iter().filter_map(|part| match part {
            Part::Placeholder(path) => Some(path),
            Part::Text(_) => None,
        })
    }

    /// Whether any placeholder is a secret.
    pub(crate) fn uses_secret(&self) -> bool {
        self.paths().any(Path::is_secret)
    }

    /// Renders as text: strings verbatim, missing values as nothing, other
    /// values as JSON. Values are inserted, never re-read as templates.
    ///
    /// Each placeholder is resolved once, before the output is allocated at
    /// its final size: one allocation per rendering.
    pub(crate) fn render(&self, scope: &dyn Scope, secrets: Secrets) -> String {
        let mut values: [Option<Cow<'_, Value>>; RESOLVED_INLINE] = Default::default();
        let mut len = 0;
        let mut resolved = 0;
        for part in &self.parts {
            match part {
                Part::Text(text) => len += text.len(),
                Part::Placeholder(path) if path.is_secret() && secrets == Secrets::Mask => len += 3,
                Part::Placeholder(path) => {
                    let Some(slot) = values.get_mut(resolved) else {
                        return self.render_growing(scope, secrets);
                    };
                    resolved += 1;
                    *slot = scope.resolve(path);
                    len += slot.as_deref().map_or(0, text_len);
                }
            }
        }
        let mut out = String::with_capacity(len);
        let mut values = values.into_iter();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Placeholder(path) if path.is_secret() && secrets == Secrets::Mask => {
                    out.push_str("***")
                }
                Part::Placeholder(_) => {
                    if let Some(Some(value)) = values.next() {
                        value_to_text(&value, &mut out);
                    }
                }
            }
        }
        out
    }

    /// Like [`Template::render`], for text only read: a template that is one
    /// literal, or one placeholder holding a string, is borrowed, not copied.
    pub(crate) fn render_text<'a>(&'a self, scope: &'a dyn Scope, secrets: Secrets) -> Cow<'a, str> {
        match self.parts.as_slice() {
            [] => Cow::Borrowed(""),
            [Part::Text(text)] => Cow::Borrowed(text),
            [Part::Placeholder(path)] if !(path.is_secret() && secrets == Secrets::Mask) => {
                match scope.resolve(path) {
                    None => Cow::Borrowed(""),
                    Some(Cow::Borrowed(Value::String(text))) => Cow::Borrowed(text),
                    Some(value) => {
                        let mut out = String::new();
                        value_to_text(&value, &mut out);
                        Cow::Owned(out)
                    }
                }
            }
            _ => Cow::Owned(self.render(scope, secrets)),
        }
    }

    /// [`Template::render`] for templates with many placeholders.
    fn render_growing(&self, scope: &dyn Scope, secrets: Secrets) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Placeholder(path) if path.is_secret() && secrets == Secrets::Mask => {
                    out.push_str("***")
                }
                Part::Placeholder(path) => {
                    if let Some(value) = scope.resolve(path) {
                        value_to_text(&value, &mut out);
                    }
                }
            }
        }
        out
    }

    /// Renders a header value, refusing line breaks (header injection).
    pub(crate) fn render_header(&self, scope: &dyn Scope) -> Result<String, RenderError> {
        let value = self.render(scope, Secrets::Reveal);
        if value.chars().any(|c| c.is_control() && c != '\t') {
            let path = self
                .paths()
                .map(|p| p.as_str().to_string())
                .next()
                .unwrap_or_default();
            return Err(RenderError::LineBreakInHeader { path });
        }
        Ok(value)
    }

    /// Renders a URL. A `var.*` placeholder at the very start (the base URL,
    /// e.g. `<<var.openai_base_url>>/threads`) is inserted as it is; every
    /// other placeholder is percent-encoded, so a value cannot change the
    /// host, path or query.
    pub(crate) fn render_url(&self, scope: &dyn Scope, secrets: Secrets) -> Result<String, RenderError> {
        // Room for the literal parts and a few ids: one allocation for the
        // usual URL instead of a string growing part by part.
        let literal: usize = self
            .parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.len(),
                Part::Placeholder(_) => 0,
            })
            .sum();
        let mut out = String::with_capacity(literal + 128);
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Placeholder(path) if path.is_secret() && secrets == Secrets::Mask => {
                    out.push_str("***")
                }
                Part::Placeholder(path) => {
                    let resolved = scope.resolve(path);
                    // A string value (the usual case) is read in place.
                    let value: Cow<'_, str> = match resolved.as_deref() {
                        None | Some(Value::Null) => Cow::Borrowed(""),
                        Some(Value::String(s)) => Cow::Borrowed(s),
                        Some(other) => {
                            let mut text = String::new();
                            value_to_text(other, &mut text);
                            Cow::Owned(text)
                        }
                    };
                    // Only a host value may supply the scheme and host: a
                    // user's reply there could send the request, and its
                    // secrets, anywhere.
                    if i == 0 && path.root == Root::Var {
                        out.push_str(&value);
                    } else if value == "." || value == ".." {
                        return Err(RenderError::DotSegmentInUrl {
                            path: path.as_str().to_string(),
                            value: value.into_owned(),
                        });
                    } else {
                        out.extend(utf8_percent_encode(&value, URL_VALUE));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Renders to a JSON value: a template that is exactly one placeholder
    /// yields the referenced value as it is (missing → `null`); anything else
    /// yields a string.
    pub(crate) fn render_value(&self, scope: &dyn Scope) -> Value {
        match self.as_single_placeholder() {
            Some(path) => scope.resolve(path).map(Cow::into_owned).unwrap_or(Value::Null),
            None => Value::String(self.render(scope, Secrets::Reveal)),
        }
    }
}

/// The first `<<` or `{{` in `text`, with the closer it needs.
fn find_opener(text: &str) -> Option<(usize, &'static str)> {
    let angle = text.find("<<").map(|i| (i, ">>"));
    let brace = text.find("{{").map(|i| (i, "}}"));
    match (angle, brace) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// A JSON value whose strings are templates, rendered structurally: a string
/// that is exactly one placeholder takes the referenced JSON value; other
/// strings are interpolated and then JSON-escaped by serialization.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JsonTemplate {
    Literal(Value),
    String(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    /// Parses every string in `value` as a template; errors carry the JSON
    /// pointer of the string (e.g. `/messages/0/content`).
    pub(crate) fn parse(value: &Value, step_names: &[&str]) -> Result<JsonTemplate, (String, TemplateError)> {
        Self::parse_at(value, step_names, &mut String::new())
    }

    fn parse_at(
        value: &Value,
        step_names: &[&str],
        pointer: &mut String,
    ) -> Result<JsonTemplate, (String, TemplateError)> {
        Ok(match value {
            Value::String(text) => {
                let template = Template::parse(text, step_names).map_err(|e| (pointer.clone(), e))?;
                match template.parts.as_slice() {
                    [] | [Part::Text(_)] => JsonTemplate::Literal(value.clone()),
                    _ => JsonTemplate::String(template),
                }
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = pointer.len();
                    pointer.push_str(&format!("/{i}"));
                    out.push(Self::parse_at(item, step_names, pointer)?);
                    pointer.truncate(len);
                }
                JsonTemplate::Array(out)
            }
            Value::Object(map) => {
                let mut out = Vec::with_capacity(map.len());
                for (key, item) in map {
                    let len = pointer.len();
                    pointer.push('/');
                    pointer.push_str(key);
                    out.push((key.clone(), Self::parse_at(item, step_names, pointer)?));
                    pointer.truncate(len);
                }
                JsonTemplate::Object(out)
            }
            other => JsonTemplate::Literal(other.clone()),
        })
    }

    /// Every template inside.
    pub(crate) fn templates(&self) -> Vec<&Template> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Template>) {
        match self {
            JsonTemplate::Literal(_) => {}
            JsonTemplate::String(t) => out.push(t),
            JsonTemplate::Array(items) => items.iter().for_each(|i| i.collect(out)),
            JsonTemplate::Object(entries) => entries.iter().for_each(|(_, i)| i.collect(out)),
        }
    }

    /// Renders into a JSON value.
    pub(crate) fn render(&self, scope: &dyn Scope) -> Value {
        match self {
            JsonTemplate::Literal(value) => value.clone(),
            JsonTemplate::String(template) => template.render_value(scope),
            JsonTemplate::Array(items) => Value::Array(items.iter().map(|i| i.render(scope)).collect()),
            JsonTemplate::Object(entries) => {
                // Inserted one by one: collecting would first gather the
                // entries in a temporary vector.
                let mut map = serde_json::Map::new();
                for (key, item) in entries {
                    map.insert(key.clone(), item.render(scope));
                }
                Value::Object(map)
            }
        }
    }

    /// Renders straight to JSON text: the same bytes as
    /// `serde_json::to_vec(&self.render(scope))`, without building the value
    /// (a request body is rendered for every call).
    pub(crate) fn render_json(&self, scope: &dyn Scope) -> Vec<u8> {
        serde_json::to_vec(&Rendering {
            template: self,
            scope,
        })
        .unwrap_or_default()
    }
}

/// A [`JsonTemplate`] serialized as it renders against a scope.
struct Rendering<'a> {
    template: &'a JsonTemplate,
    scope: &'a dyn Scope,
}

impl serde::Serialize for Rendering<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        let scope = self.scope;
        match self.template {
            JsonTemplate::Literal(value) => value.serialize(serializer),
            JsonTemplate::String(template) => match template.as_single_placeholder() {
                // The referenced value, borrowed where it lives.
                Some(path) => match scope.resolve(path) {
                    Some(value) => value.serialize(serializer),
                    None => serializer.serialize_unit(),
                },
                None => serializer.serialize_str(&template.render(scope, Secrets::Reveal)),
            },
            JsonTemplate::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for template in items {
                    seq.serialize_element(&Rendering { template, scope })?;
                }
                seq.end()
            }
            JsonTemplate::Object(entries) => {
                // Entries come from a JSON object: unique keys, in its order.
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, template) in entries {
                    map.serialize_entry(key, &Rendering { template, scope })?;
                }
                map.end()
            }
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct TestScope(Value);

    impl Scope for TestScope {
        fn resolve(&self, path: &Path) -> Option<Cow<'_, Value>> {
            let root = match &path.root {
                Root::Step(name) => self.0.get("step")?.get(name)?,
                Root::Contact => self.0.get("contact")?,
                Root::Conversation => self.0.get("conversation")?,
                Root::Var => self.0.get("var")?,
                Root::Secret => self.0.get("secret")?,
            };
            lookup(root, &path.segments).map(Cow::Borrowed)
        }
    }

    const NAMES: &[&str] = &["Start GPT thread", "Welcome", "Start", "a.b"];

    fn scope() -> TestScope {
        TestScope(json!({
            "step": {
                "Start GPT thread": {"response": {"id": "thread_1", "data": [{"role": "assistant"}]}, "status": 200},
                "Start": {"response": "short"},
                "Welcome": {"response": "hi \"there\"\n<<secret.KEY>>"},
                "a.b": {"response": 1}
            },
            "contact": {"gpt_response": "Where is my order?", "n": 3, "tags": ["a", "b"]},
            "conversation": {"id": "c-1"},
            "var": {"base": "http://x/v1"},
            "secret": {"KEY": "sk-secret"}
        }))
    }

    fn render(text: &str) -> String {
        Template::parse(text, NAMES)
            .unwrap()
            .render(&scope(), Secrets::Reveal)
    }

    #[test]
    fn step_names_with_spaces_resolve_longest_first() {
        assert_eq!(render("<<step.Start GPT thread.response.id>>"), "thread_1");
        assert_eq!(render("<<step.Start.response>>"), "short");
        assert_eq!(render("{{step.a.b.response}}"), "1");
    }

    #[test]
    fn both_syntaxes_and_indexes() {
        assert_eq!(
            render(
                "{{ step.Start GPT thread.response.data.0.role }}/<<step.Start GPT thread.response.data[0].role>>"
            ),
            "assistant/assistant"
        );
        assert_eq!(render("<<contact.tags.1>>"), "b");
        let s = TestScope(
            json!({"contact": {"out": [{"type": "reasoning"}, {"type": "message", "text": "hi"}]}}),
        );
        let t = Template::parse(
            "<<contact.out[type=message].text>>|<<contact.out[type=x].text>>",
            NAMES,
        )
        .unwrap();
        assert_eq!(t.render(&s, Secrets::Reveal), "hi|");
        assert_eq!(render("n=<<contact.n>> <<conversation.id>>"), "n=3 c-1");
    }

    #[test]
    fn many_placeholders_and_non_strings_render_in_full() {
        let text = "<<contact.n>>,".repeat(RESOLVED_INLINE + 3) + "<<contact.tags>> <<contact.nope>>.";
        let expected = "3,".repeat(RESOLVED_INLINE + 3) + r#"["a","b"] ."#;
        assert_eq!(render(&text), expected);
        let t = Template::parse("<<contact.n>> <<contact.tags>> <<secret.KEY>>", NAMES).unwrap();
        let out = t.render(&scope(), Secrets::Mask);
        assert_eq!(out, r#"3 ["a","b"] ***"#);
        assert_eq!(out.capacity(), out.len(), "allocated at its final size");
    }

    #[test]
    fn text_for_reading_is_borrowed_when_it_can_be() {
        let s = scope();
        let text = |t: &str| Template::parse(t, NAMES).unwrap();
        let (literal, string, number, mixed, secret) = (
            text("plain"),
            text("<<contact.gpt_response>>"),
            text("<<contact.n>>"),
            text("n=<<contact.n>>"),
            text("<<secret.KEY>>"),
        );
        assert!(matches!(
            literal.render_text(&s, Secrets::Reveal),
            Cow::Borrowed("plain")
        ));
        assert!(matches!(
            string.render_text(&s, Secrets::Reveal),
            Cow::Borrowed("Where is my order?")
        ));
        assert_eq!(number.render_text(&s, Secrets::Reveal), "3");
        assert_eq!(mixed.render_text(&s, Secrets::Reveal), "n=3");
        assert_eq!(secret.render_text(&s, Secrets::Mask), "***");
        assert_eq!(text("<<contact.nope>>").render_text(&s, Secrets::Reveal), "");
    }

    #[test]
    fn missing_values_render_empty() {
        assert_eq!(
            render("[<<contact.nope>>][<<step.Start GPT thread.response.data.9.role>>]"),
            "[][]"
        );
    }

    #[test]
    fn objects_render_as_json() {
        assert_eq!(render("<<contact.tags>>"), r#"["a","b"]"#);
    }

    #[test]
    fn values_are_never_reparsed() {
        // The welcome answer contains a placeholder-looking text: it stays literal.
        assert_eq!(
            render("<<step.Welcome.response>>"),
            "hi \"there\"\n<<secret.KEY>>"
        );
    }

    #[test]
    fn parse_errors_say_what_and_where() {
        let err = Template::parse("Hello <<contact.name", NAMES).unwrap_err();
        assert_eq!(err.offset, 6);
        assert!(err.message.contains("never closed"), "{err}");
        let err = Template::parse("é <<step.Start GPT thred.response.id>>", NAMES).unwrap_err();
        assert_eq!(err.offset, 2);
        assert!(err.message.contains("no step named `Start GPT thred`"), "{err}");
        let err = Template::parse("<<user.name>>", NAMES).unwrap_err();
        assert!(err.message.contains("unknown root `user`"), "{err}");
        assert!(Template::parse("<<>>", NAMES).is_err());
        assert!(Template::parse("<<contact.a..b>>", NAMES).is_err());
        assert!(Template::parse("<<contact.a[x]>>", NAMES).is_err());
        assert!(Template::parse("<<contact.a[=x]>>", NAMES).is_err());
        assert!(Template::parse("<<conversation.status>>", NAMES).is_err());
        assert!(Template::parse("<<conversation.start_text>>", NAMES).is_ok());
        assert!(Template::parse("<<conversation.start_text.x>>", NAMES).is_err());
        assert!(Template::parse("<<secret.A.b>>", NAMES).is_err());
    }

    #[test]
    fn secrets_are_masked_on_request() {
        let t = Template::parse("Bearer <<secret.KEY>>", NAMES).unwrap();
        assert!(t.uses_secret());
        assert_eq!(t.render(&scope(), Secrets::Mask), "Bearer ***");
        assert_eq!(t.render(&scope(), Secrets::Reveal), "Bearer sk-secret");
    }

    #[test]
    fn url_placeholders_are_encoded_except_the_base() {
        let t = Template::parse(
            "<<var.base>>/threads/<<contact.gpt_response>>?q=<<contact.gpt_response>>",
            NAMES,
        )
        .unwrap();
        assert_eq!(
            t.render_url(&scope(), Secrets::Reveal).unwrap(),
            "http://x/v1/threads/Where%20is%20my%20order%3F?q=Where%20is%20my%20order%3F"
        );
        let s = TestScope(json!({"contact": {"x": "../../admin?x=1"}}));
        let t = Template::parse("http://h/a/<<contact.x>>", NAMES).unwrap();
        assert_eq!(
            t.render_url(&s, Secrets::Reveal).unwrap(),
            "http://h/a/..%2F..%2Fadmin%3Fx%3D1"
        );
        // Only a var may supply the start of a URL: anything else is encoded.
        let s = TestScope(json!({"contact": {"x": "http://attacker/steal?"}}));
        let t = Template::parse("<<contact.x>>/orders", NAMES).unwrap();
        assert_eq!(
            t.render_url(&s, Secrets::Reveal).unwrap(),
            "http%3A%2F%2Fattacker%2Fsteal%3F/orders"
        );
        let t = Template::parse("http://h/a/<<contact.x>>", NAMES).unwrap();
        let s = TestScope(json!({"contact": {"x": ".."}}));
        assert!(matches!(
            t.render_url(&s, Secrets::Reveal),
            Err(RenderError::DotSegmentInUrl { .. })
        ));
    }

    #[test]
    fn header_line_breaks_are_refused() {
        let t = Template::parse("x <<step.Welcome.response>>", NAMES).unwrap();
        assert!(matches!(
            t.render_header(&scope()),
            Err(RenderError::LineBreakInHeader { .. })
        ));
    }

    #[test]
    fn json_bodies_are_templated_structurally() {
        let body = json!({
            "role": "user",
            "content": "<<step.Welcome.response>>",
            "n": "<<contact.n>>",
            "tags": "<<contact.tags>>",
            "missing": "<<contact.nope>>",
            "mixed": "n is <<contact.n>>",
            "list": [1, "<<conversation.id>>"]
        });
        let t = JsonTemplate::parse(&body, NAMES).unwrap();
        let out = t.render(&scope());
        assert_eq!(
            out,
            json!({
                "role": "user",
                "content": "hi \"there\"\n<<secret.KEY>>",
                "n": 3,
                "tags": ["a", "b"],
                "missing": null,
                "mixed": "n is 3",
                "list": [1, "c-1"]
            })
        );
        // Rendered straight to text, the body is byte for byte the value's.
        assert_eq!(t.render_json(&scope()), serde_json::to_vec(&out).unwrap());
        let nested = json!({"b": {"z": ["<<contact.tags>>", {"k": "<<contact.n>>"}], "a": {}}, "a": []});
        let t = JsonTemplate::parse(&nested, NAMES).unwrap();
        assert_eq!(
            t.render_json(&scope()),
            serde_json::to_vec(&t.render(&scope())).unwrap()
        );
        let err = JsonTemplate::parse(&json!({"a": [0, "<<nope.x>>"]}), NAMES).unwrap_err();
        assert_eq!(err.0, "/a/1");
    }
}
