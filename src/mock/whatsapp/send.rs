//! What the Cloud API makes of a `POST /{phone-number-id}/messages` body: a
//! mark-as-read request, or a message checked against the contract (Meta's
//! OpenAPI schema `Message`, with Prism's reading: `recipient_type` required,
//! unknown keys refused) and the documented limits. Any breach is a 400 with
//! code 100 naming the parameter, in Graph's `param['key'][0]` notation.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::error::GraphError;
use super::record::{SentKind, SentOption, SentTemplate};

type Object = Map<String, Value>;

/// Limits Meta documents for interactive messages and text.
pub(crate) const TEXT_BODY_MAX: usize = 4096;
const INTERACTIVE_BODY_MAX: usize = 1024;
const HEADER_FOOTER_MAX: usize = 60;
const BUTTONS_MAX: usize = 3;
const BUTTON_TITLE_MAX: usize = 20;
const BUTTON_ID_MAX: usize = 256;
const LIST_ROWS_MAX: usize = 10;
const LIST_SECTIONS_MAX: usize = 10;
const ROW_TITLE_MAX: usize = 24;
const ROW_DESCRIPTION_MAX: usize = 72;
const ROW_ID_MAX: usize = 200;
const SECTION_TITLE_MAX: usize = 24;
const MENU_BUTTON_MAX: usize = 20;
const CAPTION_MAX: usize = 1024;

/// A request body, understood.
pub(crate) enum Body {
    /// `{"messaging_product", "status": "read", "message_id"}`.
    Read {
        message_id: String,
        typing_indicator: bool,
    },
    /// A message to send.
    Send(Outgoing),
}

/// A message that passed every shape check.
pub(crate) struct Outgoing {
    pub to: String,
    pub wa_id: String,
    pub kind: SentKind,
    pub text: Option<String>,
    pub options: Vec<SentOption>,
    pub menu_button: Option<String>,
    pub template: Option<SentTemplate>,
    pub reply_to: Option<String>,
}

impl Outgoing {
    /// Only a template may reach a user outside the 24-hour window.
    pub fn needs_window(&self) -> bool {
        self.kind != SentKind::Template
    }
}

/// Parses the raw body into an object; what it is comes next ([`classify`]).
pub(crate) fn object(body: &[u8]) -> Result<Object, GraphError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(GraphError::invalid("The request body must be a JSON object.")),
        Err(_) => Err(GraphError::invalid(
            "The request body is not valid JSON (send Content-Type: application/json).",
        )),
    }
}

/// A body with `status` is a mark-as-read request; anything else a message.
pub(crate) fn is_read_request(object: &Object) -> bool {
    object.contains_key("status")
}

/// Checks a body already known to be an object.
pub(crate) fn classify(object: &Object) -> Result<Body, GraphError> {
    if is_read_request(object) {
        read(object)
    } else {
        message(object).map(Body::Send)
    }
}

fn read(obj: &Object) -> Result<Body, GraphError> {
    reject_unknown(
        obj,
        &["messaging_product", "status", "message_id", "typing_indicator"],
        "",
    )?;
    messaging_product(obj)?;
    let status = req_str(obj, "status", "")?;
    if status != "read" {
        return Err(GraphError::invalid(format!(
            "Param status must be 'read', got '{status}'."
        )));
    }
    let message_id = non_empty(obj, "message_id", "", usize::MAX)?;
    let typing_indicator = match obj.get("typing_indicator") {
        None | Some(Value::Null) => false,
        Some(Value::Object(typing)) => {
            reject_unknown(typing, &["type"], "typing_indicator")?;
            let kind = req_str(typing, "type", "typing_indicator")?;
            if kind != "text" {
                return Err(GraphError::invalid(format!(
                    "Param typing_indicator['type'] must be 'text', got '{kind}'."
                )));
            }
            true
        }
        Some(other) => return Err(wrong_type("typing_indicator", "an object", other)),
    };
    Ok(Body::Read {
        message_id,
        typing_indicator,
    })
}

/// The message types the mock accepts, and the key holding each one's object.
const TYPES: &[&str] = &[
    "text",
    "interactive",
    "template",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "reaction",
];

fn message(obj: &Object) -> Result<Outgoing, GraphError> {
    messaging_product(obj)?;
    let recipient_type = obj.get("recipient_type");
    match recipient_type {
        None | Some(Value::Null) => {
            return Err(GraphError::invalid(
                "The parameter recipient_type is required (\"individual\").",
            ));
        }
        Some(Value::String(value)) if value == "individual" => {}
        Some(Value::String(value)) => {
            return Err(GraphError::invalid(format!(
                "Param recipient_type must be 'individual' (the mock does not serve groups), got '{value}'."
            )));
        }
        Some(other) => return Err(wrong_type("recipient_type", "a string", other)),
    }
    let to = non_empty(obj, "to", "", usize::MAX)?;
    let wa_id = wa_id(&to)?;
    let kind = req_str(obj, "type", "")?;
    if !TYPES.contains(&kind.as_str()) {
        return Err(GraphError::invalid(format!(
            "Param type must be one of {{{}}}, got '{kind}' (the mock does not send location or contacts messages).",
            TYPES.join(", ")
        )));
    }
    let allowed = [
        "messaging_product",
        "recipient_type",
        "to",
        "type",
        "context",
        kind.as_str(),
    ];
    if kind != "template" {
        // The schema's TemplateMessage alone leaves extra keys open.
        reject_unknown(obj, &allowed, "")?;
    }
    let reply_to = context(obj)?;
    let content = match obj.get(kind.as_str()) {
        Some(Value::Object(content)) => content,
        None | Some(Value::Null) => {
            return Err(GraphError::invalid(format!(
                "The parameter {kind} is required for a message of type '{kind}'."
            )));
        }
        Some(other) => return Err(wrong_type(&kind, "an object", other)),
    };
    let mut out = Outgoing {
        to,
        wa_id,
        kind: SentKind::Text,
        text: None,
        options: Vec::new(),
        menu_button: None,
        template: None,
        reply_to,
    };
    match kind.as_str() {
        "text" => text(content, &mut out)?,
        "interactive" => interactive(content, &mut out)?,
        "template" => template(content, &mut out)?,
        "reaction" => reaction(content, &mut out)?,
        "sticker" => media(content, "sticker", SentKind::Sticker, false, &mut out)?,
        "image" => media(content, "image", SentKind::Image, true, &mut out)?,
        "audio" => media(content, "audio", SentKind::Audio, false, &mut out)?,
        "video" => media(content, "video", SentKind::Video, true, &mut out)?,
        _ => media(content, "document", SentKind::Document, true, &mut out)?,
    }
    Ok(out)
}

fn messaging_product(obj: &Object) -> Result<(), GraphError> {
    match obj.get("messaging_product") {
        None | Some(Value::Null) => Err(GraphError::invalid(
            "The parameter messaging_product is required.",
        )),
        Some(Value::String(value)) if value == "whatsapp" => Ok(()),
        Some(Value::String(value)) => Err(GraphError::invalid(format!(
            "Param messaging_product must be 'whatsapp', got '{value}'."
        ))),
        Some(other) => Err(wrong_type("messaging_product", "a string", other)),
    }
}

/// The digits of a phone number written with `+`, spaces, dashes or
/// parentheses: what WhatsApp calls the wa_id.
fn wa_id(to: &str) -> Result<String, GraphError> {
    let digits: String = to
        .chars()
        .filter(|c| !matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'))
        .collect();
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(GraphError::invalid(format!(
            "Param to must be a phone number of at most 15 digits (with an optional +, spaces, \
             dashes or parentheses), got '{to}'."
        )));
    }
    Ok(digits)
}

fn context(obj: &Object) -> Result<Option<String>, GraphError> {
    match obj.get("context") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(context)) => {
            reject_unknown(context, &["message_id"], "context")?;
            opt_str(context, "message_id", "context")
        }
        Some(other) => Err(wrong_type("context", "an object", other)),
    }
}

fn text(content: &Object, out: &mut Outgoing) -> Result<(), GraphError> {
    reject_unknown(content, &["body", "preview_url"], "text")?;
    if let Some(preview) = content.get("preview_url")
        && !preview.is_boolean()
    {
        return Err(wrong_type("text['preview_url']", "a boolean", preview));
    }
    out.kind = SentKind::Text;
    out.text = Some(non_empty(content, "body", "text", TEXT_BODY_MAX)?);
    Ok(())
}

fn interactive(content: &Object, out: &mut Outgoing) -> Result<(), GraphError> {
    let at = "interactive";
    reject_unknown(content, &["type", "header", "body", "footer", "action"], at)?;
    let kind = req_str(content, "type", at)?;
    let body = req_object(content, "body", at)?;
    reject_unknown(body, &["text"], "interactive['body']")?;
    out.text = Some(non_empty(
        body,
        "text",
        "interactive['body']",
        INTERACTIVE_BODY_MAX,
    )?);
    if let Some(header) = opt_object(content, "header", at)? {
        interactive_header(header)?;
    }
    if let Some(footer) = opt_object(content, "footer", at)? {
        reject_unknown(footer, &["text"], "interactive['footer']")?;
        non_empty(footer, "text", "interactive['footer']", HEADER_FOOTER_MAX)?;
    }
    let action = req_object(content, "action", at)?;
    match kind.as_str() {
        "button" => {
            out.kind = SentKind::ReplyButtons;
            out.options = buttons(action)?;
        }
        "list" => {
            out.kind = SentKind::List;
            let (button, rows) = list(action)?;
            out.menu_button = Some(button);
            out.options = rows;
        }
        other => {
            return Err(GraphError::invalid(format!(
                "Param interactive['type'] must be 'button' or 'list' for this mock, got '{other}'."
            )));
        }
    }
    Ok(())
}

fn interactive_header(header: &Object) -> Result<(), GraphError> {
    let at = "interactive['header']";
    reject_unknown(
        header,
        &["type", "text", "sub_text", "image", "video", "document"],
        at,
    )?;
    let kind = req_str(header, "type", at)?;
    match kind.as_str() {
        "text" => {
            non_empty(header, "text", at, HEADER_FOOTER_MAX)?;
            if header.contains_key("sub_text") {
                non_empty(header, "sub_text", at, HEADER_FOOTER_MAX)?;
            }
        }
        "image" | "video" | "document" => {
            let media_object = req_object(header, &kind, at)?;
            media_source(media_object, &format!("{at}['{kind}']"))?;
        }
        other => {
            return Err(GraphError::invalid(format!(
                "Param {at}['type'] must be one of text, image, video, document, got '{other}'."
            )));
        }
    }
    Ok(())
}

fn buttons(action: &Object) -> Result<Vec<SentOption>, GraphError> {
    let at = "interactive['action']";
    reject_unknown(action, &["buttons"], at)?;
    let buttons = req_array(action, "buttons", at)?;
    if buttons.is_empty() || buttons.len() > BUTTONS_MAX {
        return Err(GraphError::invalid(format!(
            "Param {at}['buttons'] must have between 1 and {BUTTONS_MAX} elements, got {}.",
            buttons.len()
        )));
    }
    let mut options = Vec::with_capacity(buttons.len());
    let (mut ids, mut titles) = (HashSet::new(), HashSet::new());
    for (i, button) in buttons.iter().enumerate() {
        let at = format!("{at}['buttons'][{i}]");
        let button = as_object(button, &at)?;
        reject_unknown(button, &["type", "reply"], &at)?;
        let kind = req_str(button, "type", &at)?;
        if kind != "reply" {
            return Err(GraphError::invalid(format!(
                "Param {at}['type'] must be 'reply', got '{kind}'."
            )));
        }
        let reply = req_object(button, "reply", &at)?;
        let at = format!("{at}['reply']");
        reject_unknown(reply, &["id", "title"], &at)?;
        let id = non_empty(reply, "id", &at, BUTTON_ID_MAX)?;
        if id.trim() != id {
            return Err(GraphError::invalid(format!(
                "Param {at}['id'] must not have leading or trailing spaces."
            )));
        }
        let title = non_empty(reply, "title", &at, BUTTON_TITLE_MAX)?;
        if !ids.insert(id.clone()) {
            return Err(GraphError::invalid(format!(
                "Button ids must be unique: '{id}' repeats."
            )));
        }
        if !titles.insert(title.clone()) {
            return Err(GraphError::invalid(format!(
                "Button titles must be unique: '{title}' repeats."
            )));
        }
        options.push(SentOption {
            id,
            title,
            description: None,
        });
    }
    Ok(options)
}

fn list(action: &Object) -> Result<(String, Vec<SentOption>), GraphError> {
    let at = "interactive['action']";
    reject_unknown(action, &["button", "sections"], at)?;
    let button = non_empty(action, "button", at, MENU_BUTTON_MAX)?;
    let sections = req_array(action, "sections", at)?;
    if sections.is_empty() || sections.len() > LIST_SECTIONS_MAX {
        return Err(GraphError::invalid(format!(
            "Param {at}['sections'] must have between 1 and {LIST_SECTIONS_MAX} elements, got {}.",
            sections.len()
        )));
    }
    let mut rows_out = Vec::new();
    let mut ids = HashSet::new();
    for (s, section) in sections.iter().enumerate() {
        let at = format!("{at}['sections'][{s}]");
        let section = as_object(section, &at)?;
        reject_unknown(section, &["title", "rows"], &at)?;
        if sections.len() > 1 || section.contains_key("title") {
            // A title is required once there are several sections.
            non_empty(section, "title", &at, SECTION_TITLE_MAX)?;
        }
        let rows = req_array(section, "rows", &at)?;
        if rows.is_empty() {
            return Err(GraphError::invalid(format!(
                "Param {at}['rows'] must have at least 1 element."
            )));
        }
        for (r, row) in rows.iter().enumerate() {
            let at = format!("{at}['rows'][{r}]");
            let row = as_object(row, &at)?;
            reject_unknown(row, &["id", "title", "description"], &at)?;
            let id = non_empty(row, "id", &at, ROW_ID_MAX)?;
            let title = non_empty(row, "title", &at, ROW_TITLE_MAX)?;
            let description = opt_str(row, "description", &at)?;
            if let Some(description) = &description {
                check_len(description, &format!("{at}['description']"), ROW_DESCRIPTION_MAX)?;
            }
            if !ids.insert(id.clone()) {
                return Err(GraphError::invalid(format!(
                    "Row ids must be unique: '{id}' repeats."
                )));
            }
            rows_out.push(SentOption {
                id,
                title,
                description,
            });
        }
    }
    if rows_out.len() > LIST_ROWS_MAX {
        return Err(GraphError::invalid(format!(
            "A list message may have at most {LIST_ROWS_MAX} rows in all its sections, got {}.",
            rows_out.len()
        )));
    }
    Ok((button, rows_out))
}

fn template(content: &Object, out: &mut Outgoing) -> Result<(), GraphError> {
    let at = "template";
    reject_unknown(content, &["name", "language", "components"], at)?;
    let name = non_empty(content, "name", at, 512)?;
    let language = match content.get("language") {
        Some(Value::Object(language)) => language,
        None | Some(Value::Null) => {
            return Err(GraphError::invalid(
                "The parameter template['language'] is required.",
            ));
        }
        Some(other) => return Err(wrong_type("template['language']", "an object", other)),
    };
    let at_language = "template['language']";
    reject_unknown(language, &["code", "policy"], at_language)?;
    let code = non_empty(language, "code", at_language, 16)?;
    // Meta's schema (and so Prism) requires the policy; "deterministic" is its only value.
    let policy = req_str(language, "policy", at_language)?;
    if policy != "deterministic" {
        return Err(GraphError::invalid(format!(
            "Param template['language']['policy'] must be 'deterministic', got '{policy}'."
        )));
    }
    if let Some(components) = content.get("components") {
        let Value::Array(components) = components else {
            return Err(wrong_type("template['components']", "an array", components));
        };
        for (i, component) in components.iter().enumerate() {
            template_component(component, &format!("template['components'][{i}]"))?;
        }
    }
    out.kind = SentKind::Template;
    out.template = Some(SentTemplate { name, language: code });
    Ok(())
}

fn template_component(component: &Value, at: &str) -> Result<(), GraphError> {
    let component = as_object(component, at)?;
    let kind = req_str(component, "type", at)?;
    match kind.as_str() {
        "header" | "body" => {}
        "button" => {
            let sub_type = req_str(component, "sub_type", at)?;
            if !["quick_reply", "url", "catalog"].contains(&sub_type.as_str()) {
                return Err(GraphError::invalid(format!(
                    "Param {at}['sub_type'] must be one of quick_reply, url, catalog, got '{sub_type}'."
                )));
            }
            req_str(component, "index", at)?;
        }
        other => {
            return Err(GraphError::invalid(format!(
                "Param {at}['type'] must be one of header, body, button, got '{other}'."
            )));
        }
    }
    if let Some(parameters) = component.get("parameters")
        && !parameters.is_array()
    {
        return Err(wrong_type(&format!("{at}['parameters']"), "an array", parameters));
    }
    Ok(())
}

fn reaction(content: &Object, out: &mut Outgoing) -> Result<(), GraphError> {
    reject_unknown(content, &["message_id", "emoji"], "reaction")?;
    out.reply_to = Some(non_empty(content, "message_id", "reaction", usize::MAX)?);
    // An empty emoji removes a reaction.
    out.text = Some(req_str(content, "emoji", "reaction")?);
    out.kind = SentKind::Reaction;
    Ok(())
}

fn media(
    content: &Object,
    at: &str,
    kind: SentKind,
    captioned: bool,
    out: &mut Outgoing,
) -> Result<(), GraphError> {
    let allowed: &[&str] = match (captioned, kind) {
        (true, SentKind::Document) => &["id", "link", "caption", "filename"],
        (true, _) => &["id", "link", "caption"],
        (false, _) => &["id", "link"],
    };
    reject_unknown(content, allowed, at)?;
    media_source(content, at)?;
    if let Some(caption) = opt_str(content, "caption", at)? {
        check_len(&caption, &format!("{at}['caption']"), CAPTION_MAX)?;
        out.text = Some(caption);
    }
    out.kind = kind;
    Ok(())
}

/// Exactly one of `id` (an uploaded media) or `link` (an http(s) URL).
fn media_source(content: &Object, at: &str) -> Result<(), GraphError> {
    let id = opt_str(content, "id", at)?;
    let link = opt_str(content, "link", at)?;
    match (id, link) {
        (Some(id), None) if !id.is_empty() => Ok(()),
        (None, Some(link)) if link.starts_with("https://") || link.starts_with("http://") => Ok(()),
        (None, Some(_)) => Err(GraphError::invalid(format!(
            "Param {at}['link'] must be an http(s) URL."
        ))),
        (Some(_), Some(_)) => Err(GraphError::invalid(format!(
            "Param {at} must have either 'id' or 'link', not both."
        ))),
        _ => Err(GraphError::invalid(format!(
            "Param {at} requires a non-empty 'id' or 'link'."
        ))),
    }
}

// --- Field helpers: each error names the parameter, Graph-style. -------------

/// `prefix['key']`, or `key` at the top level.
fn param(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}['{key}']")
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(param: &str, expected: &str, got: &Value) -> GraphError {
    GraphError::invalid(format!(
        "Param {param} must be {expected}, got {}.",
        json_type(got)
    ))
}

fn missing(param: &str) -> GraphError {
    GraphError::invalid(format!("The parameter {param} is required."))
}

/// Unknown keys are refused, as Meta's schema's `additionalProperties: false` does.
fn reject_unknown(obj: &Object, allowed: &[&str], prefix: &str) -> Result<(), GraphError> {
    match obj.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(GraphError::invalid(format!(
            "Unexpected key \"{key}\" on param \"{}\".",
            if prefix.is_empty() { "message" } else { prefix }
        ))),
        None => Ok(()),
    }
}

fn as_object<'v>(value: &'v Value, at: &str) -> Result<&'v Object, GraphError> {
    match value {
        Value::Object(obj) => Ok(obj),
        other => Err(wrong_type(at, "an object", other)),
    }
}

fn opt_object<'v>(obj: &'v Object, key: &str, prefix: &str) -> Result<Option<&'v Object>, GraphError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => as_object(value, &param(prefix, key)).map(Some),
    }
}

fn req_object<'v>(obj: &'v Object, key: &str, prefix: &str) -> Result<&'v Object, GraphError> {
    opt_object(obj, key, prefix)?.ok_or_else(|| missing(&param(prefix, key)))
}

fn req_array<'v>(obj: &'v Object, key: &str, prefix: &str) -> Result<&'v Vec<Value>, GraphError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(missing(&param(prefix, key))),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(wrong_type(&param(prefix, key), "an array", other)),
    }
}

fn opt_str(obj: &Object, key: &str, prefix: &str) -> Result<Option<String>, GraphError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(&param(prefix, key), "a string", other)),
    }
}

fn req_str(obj: &Object, key: &str, prefix: &str) -> Result<String, GraphError> {
    opt_str(obj, key, prefix)?.ok_or_else(|| missing(&param(prefix, key)))
}

/// A required string, not blank, at most `max` characters.
fn non_empty(obj: &Object, key: &str, prefix: &str, max: usize) -> Result<String, GraphError> {
    let value = req_str(obj, key, prefix)?;
    let at = param(prefix, key);
    if value.trim().is_empty() {
        return Err(GraphError::invalid(format!(
            "Param {at} must be a non-empty string."
        )));
    }
    check_len(&value, &at, max)?;
    Ok(value)
}

/// Counted in characters, as Meta counts.
fn check_len(value: &str, at: &str, max: usize) -> Result<(), GraphError> {
    let length = value.chars().count();
    if length > max {
        return Err(GraphError::invalid(format!(
            "Param {at} must be at most {max} characters long, got {length}."
        )));
    }
    Ok(())
}
