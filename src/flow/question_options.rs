//! A Question's options: the choices a channel can show as buttons or a
//! list, how they are written in flow JSON, checked at load, and matched
//! against the user's answer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The most options a Question may offer. WhatsApp's list message holds 10
/// rows, the largest set any channel shows at once; more would be a menu
/// no channel can render, so it is refused when the flow loads.
pub const MAX_OPTIONS: usize = 10;

/// One option as written in flow JSON: a text (its id is the text itself)
/// or an object with an `id`, a `title` and an optional `description`.
///
/// Titles and descriptions are plain text, not templates: they are fixed
/// when the flow loads, so their limits are checked there and a channel
/// can match a tapped id without rendering anything.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum OptionSpec {
    /// A text: both the option's id and its title.
    Text(String),
    /// An option with its own id.
    Full(QuestionOption),
}

/// A Question's option: what the channel shows and the id the flow reads
/// as `step.<name>.option` when the user picks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct QuestionOption {
    /// What the flow branches on (`step.<name>.option`), and what a channel
    /// sends back when the button is tapped.
    pub id: String,
    /// The text shown on the button or row.
    pub title: String,
    /// A second line under the title (list rows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl QuestionOption {
    /// An option with this id and title, no description.
    pub fn new(id: impl Into<String>, title: impl Into<String>) -> Self {
        QuestionOption {
            id: id.into(),
            title: title.into(),
            description: None,
        }
    }

    /// Sets the description.
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }
}

// By hand rather than `untagged`: a bad object then says which field is
// wrong instead of "did not match any variant".
impl<'de> Deserialize<'de> for OptionSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(text) => Ok(OptionSpec::Text(text)),
            value @ serde_json::Value::Object(_) => QuestionOption::deserialize(value)
                .map(OptionSpec::Full)
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom(
                "an option is a text or an object with an `id`, a `title` and an optional `description`",
            )),
        }
    }
}

impl OptionSpec {
    /// The option it stands for.
    pub(crate) fn resolve(&self) -> QuestionOption {
        match self {
            OptionSpec::Text(text) => QuestionOption::new(text.clone(), text.clone()),
            OptionSpec::Full(option) => option.clone(),
        }
    }
}

/// Checks a Question's options; every problem is reported with the option's
/// position (`options[2].title`) and what is wrong.
pub(crate) fn check(specs: &[OptionSpec], mut problem: impl FnMut(String, String)) -> Vec<QuestionOption> {
    let options: Vec<QuestionOption> = specs.iter().map(OptionSpec::resolve).collect();
    if options.len() > MAX_OPTIONS {
        problem(
            "options".into(),
            format!(
                "has {} options; at most {MAX_OPTIONS} are allowed (the most any channel shows at once)",
                options.len()
            ),
        );
    }
    for (i, option) in options.iter().enumerate() {
        if option.id.trim().is_empty() {
            problem(
                format!("options[{i}].id"),
                "an option's id cannot be empty".into(),
            );
        }
        if option.title.trim().is_empty() {
            problem(
                format!("options[{i}].title"),
                "an option's title cannot be empty".into(),
            );
        }
        for (field, text) in [
            ("id", Some(&option.id)),
            ("title", Some(&option.title)),
            ("description", option.description.as_ref()),
        ] {
            if text.is_some_and(|t| t.contains("<<")) {
                problem(
                    format!("options[{i}].{field}"),
                    "options are plain text, not templates: `<<` is not allowed".into(),
                );
            }
        }
        if let Some(first) = options[..i]
            .iter()
            .position(|o| o.id.trim().eq_ignore_ascii_case(option.id.trim()))
        {
            problem(
                format!("options[{i}].id"),
                format!(
                    "`{}` is already the id of options[{first}] (ids are compared case-insensitively)",
                    option.id
                ),
            );
        }
    }
    options
}

/// The option an answer picks: its id, its title or its 1-based number,
/// trimmed and compared case-insensitively. Ids are tried first (a channel
/// sends the id of a tapped button), then titles, then numbers.
pub(crate) fn chosen<'o>(options: &'o [QuestionOption], answer: &str) -> Option<&'o QuestionOption> {
    let answer = answer.trim();
    if answer.is_empty() {
        return None;
    }
    let same = |text: &str| text.trim().to_lowercase() == answer.to_lowercase();
    options
        .iter()
        .find(|o| same(&o.id))
        .or_else(|| options.iter().find(|o| same(&o.title)))
        .or_else(|| {
            let number: usize = answer.parse().ok()?;
            options.get(number.checked_sub(1)?)
        })
}

/// The options of the Question a conversation waits at (empty when it
/// does not wait for a reply, or the Question offers none).
pub(crate) fn waiting(flow: &super::Flow, conversation: &crate::Conversation) -> Vec<QuestionOption> {
    if *conversation.status() != crate::Status::AwaitingReply {
        return Vec::new();
    }
    let step = conversation
        .cursor
        .as_ref()
        .and_then(|cursor| flow.program().steps.get(cursor.index));
    match step.map(|s| &s.kind) {
        Some(super::compile::CompiledKind::Question { options, .. }) => options.clone(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Vec<QuestionOption> {
        vec![
            QuestionOption::new("track", "Track an order"),
            QuestionOption::new("human", "Talk to a person"),
        ]
    }

    #[test]
    fn an_answer_picks_by_id_title_or_number() {
        let options = options();
        assert_eq!(chosen(&options, "track").map(|o| o.id.as_str()), Some("track"));
        assert_eq!(
            chosen(&options, "  TALK to a person ").map(|o| o.id.as_str()),
            Some("human")
        );
        assert_eq!(chosen(&options, "2").map(|o| o.id.as_str()), Some("human"));
        assert_eq!(chosen(&options, "0"), None);
        assert_eq!(chosen(&options, "3"), None);
        assert_eq!(chosen(&options, "where is my parcel"), None);
        assert_eq!(chosen(&options, " "), None);
    }

    proptest::proptest! {
        /// Whatever the options, an option's id (in any case, with spaces
        /// around) and its number pick it, and no answer panics.
        #[test]
        fn ids_and_numbers_pick_their_option(
            ids in proptest::collection::btree_set("[a-z]{1,8}", 1..=MAX_OPTIONS),
            pick in 0usize..MAX_OPTIONS,
            noise in "\\PC{0,12}",
        ) {
            let options: Vec<QuestionOption> =
                ids.iter().map(|id| QuestionOption::new(id.clone(), format!("{id} title"))).collect();
            let i = pick % options.len();
            let id = &options[i].id;
            let shouted = format!("  {} ", id.to_uppercase());
            proptest::prop_assert_eq!(chosen(&options, &shouted).map(|o| &o.id), Some(id));
            proptest::prop_assert_eq!(chosen(&options, &(i + 1).to_string()).map(|o| &o.id), Some(id));
            let _ = chosen(&options, &noise);
        }
    }

    #[test]
    fn an_id_wins_over_a_number() {
        let options = vec![
            QuestionOption::new("a", "First"),
            QuestionOption::new("1", "Second"),
        ];
        assert_eq!(chosen(&options, "1").map(|o| o.title.as_str()), Some("Second"));
    }
}
