//! What templates read: a conversation's results and contact attributes,
//! and the engine's host values and secrets.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;

use super::Interpreter;
use crate::conversation::Conversation;
use crate::flow::{CompiledKind, CompiledStep};
use crate::http::Header;
use crate::secrets::Secret;
use crate::template::{Path, Root, Scope, Template, lookup};

/// Template values of one conversation: its own results and contact
/// attributes, and the engine's host values and secrets.
pub(crate) struct ConversationScope<'a> {
    pub(crate) interpreter: &'a Interpreter,
    pub(crate) conversation: &'a Conversation,
}

impl Scope for ConversationScope<'_> {
    fn resolve(&self, path: &Path) -> Option<Cow<'_, Value>> {
        match &path.root {
            Root::Step(name) => {
                lookup(self.conversation.steps.get(name.as_str())?, &path.segments).map(Cow::Borrowed)
            }
            Root::Contact => keyed(&self.conversation.contact, path),
            Root::Conversation => match path.segments.first().map(|s| s.key.as_str()) {
                Some("start_text") => Some(Cow::Owned(Value::String(self.conversation.start_text.clone()?))),
                Some("message") => {
                    lookup(self.conversation.message.as_ref()?, &path.segments[1..]).map(Cow::Borrowed)
                }
                _ => Some(Cow::Owned(Value::String(self.conversation.id.clone()))),
            },
            Root::Var | Root::Secret => resolve_host(&self.interpreter.vars, &self.interpreter.secrets, path),
        }
    }
}

/// The engine's host values and secrets alone: what a template that reads
/// nothing of a conversation renders from, once, when the engine is built.
pub(crate) struct HostScope<'a> {
    pub(crate) vars: &'a BTreeMap<String, Value>,
    pub(crate) secrets: &'a BTreeMap<String, Secret>,
}

impl Scope for HostScope<'_> {
    fn resolve(&self, path: &Path) -> Option<Cow<'_, Value>> {
        resolve_host(self.vars, self.secrets, path)
    }
}

/// A `var.*` or `secret.*` path's value, borrowed; `None` for other roots.
fn resolve_host<'a>(
    vars: &'a BTreeMap<String, Value>,
    secrets: &'a BTreeMap<String, Secret>,
    path: &Path,
) -> Option<Cow<'a, Value>> {
    match &path.root {
        Root::Var => keyed(vars, path),
        Root::Secret => {
            let secret = secrets.get(&path.segments.first()?.key)?;
            Some(Cow::Borrowed(secret.value()))
        }
        Root::Step(_) | Root::Contact | Root::Conversation => None,
    }
}

/// Looks up `path` in a map keyed by its first segment.
fn keyed<'a>(map: &'a BTreeMap<String, Value>, path: &Path) -> Option<Cow<'a, Value>> {
    let (first, rest) = path.segments.split_first()?;
    lookup(map.get(&first.key)?, rest).map(Cow::Borrowed)
}

/// Whether a template renders the same for every conversation of an engine:
/// it reads only host values and secrets, which are fixed when the engine is
/// built.
fn host_only(template: &Template) -> bool {
    template
        .paths()
        .all(|path| matches!(path.root, Root::Var | Root::Secret))
}

/// The headers of each step's requests, rendered once when the engine is
/// built, for the Api steps whose headers read only host values and
/// secrets (indexed like the program's steps; `None` for the others, and
/// for a header that does not render: each request then renders it and
/// reports the error as usual).
pub(crate) fn constant_headers(
    steps: &[CompiledStep],
    vars: &BTreeMap<String, Value>,
    secrets: &BTreeMap<String, Secret>,
) -> Vec<Option<Vec<Header>>> {
    let scope = HostScope { vars, secrets };
    steps
        .iter()
        .map(|step| {
            let CompiledKind::Api(api) = &step.kind else {
                return None;
            };
            if !api.headers.iter().all(|(_, template)| host_only(template)) {
                return None;
            }
            let mut headers = Vec::with_capacity(api.headers.len() + 1);
            for (name, template) in &api.headers {
                headers.push(Header {
                    name: name.clone(),
                    value: template.render_header(&scope).ok()?.into(),
                    sensitive: template.uses_secret(),
                });
            }
            if api.body.is_some() {
                super::api::add_content_type(&mut headers);
            }
            Some(headers)
        })
        .collect()
}
