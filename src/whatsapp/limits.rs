//! WhatsApp's limits on what a message may hold, and how a Question's
//! options are shown within them: reply buttons when they fit, else a list.

use crate::Flow;
use crate::flow::{QuestionOption, StepKind};

/// The most characters in one text message.
pub const MAX_TEXT_CHARS: usize = 4096;
/// The most characters in an interactive message's body.
pub const MAX_BODY_CHARS: usize = 1024;
/// The most reply buttons in one message.
pub const MAX_BUTTONS: usize = 3;
/// The most characters in a reply button's title.
pub const MAX_BUTTON_TITLE_CHARS: usize = 20;
/// The most characters in a reply button's id.
pub const MAX_BUTTON_ID_CHARS: usize = 256;
/// The most rows in a list message.
pub const MAX_LIST_ROWS: usize = 10;
/// The most characters in a list row's title.
pub const MAX_ROW_TITLE_CHARS: usize = 24;
/// The most characters in a list row's description.
pub const MAX_ROW_DESCRIPTION_CHARS: usize = 72;
/// The most characters in a list row's id.
pub const MAX_ROW_ID_CHARS: usize = 200;
/// The most characters in a list's menu button label.
pub const MAX_LIST_BUTTON_CHARS: usize = 20;

/// How a Question's options are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Reply buttons: at most 3, short titles, no descriptions (buttons
    /// cannot show them).
    Buttons,
    /// A list message.
    List,
    /// Neither fits (a flow loaded without [`check_flow`]): the options go
    /// as numbered lines of text, which the user answers by number or title.
    Text,
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

/// Buttons when the options fit them, else a list when they fit it.
pub(crate) fn layout(options: &[QuestionOption]) -> Layout {
    if fit_buttons(options) {
        Layout::Buttons
    } else if list_problems(options).next().is_none() {
        Layout::List
    } else {
        Layout::Text
    }
}

/// Whether the options fit reply buttons (whose titles must also differ).
fn fit_buttons(options: &[QuestionOption]) -> bool {
    options.len() <= MAX_BUTTONS
        && options.iter().enumerate().all(|(i, o)| {
            o.description.is_none()
                && chars(&o.title) <= MAX_BUTTON_TITLE_CHARS
                && chars(&o.id) <= MAX_BUTTON_ID_CHARS
                && options[..i].iter().all(|earlier| earlier.title != o.title)
        })
}

/// Why these options do not fit a list message (the larger of the two
/// layouts), one line each: `option 2 ("…")` and the limit.
fn list_problems(options: &[QuestionOption]) -> impl Iterator<Item = String> + '_ {
    let count = (options.len() > MAX_LIST_ROWS).then(|| {
        format!(
            "has {} options; a WhatsApp list shows at most {MAX_LIST_ROWS}",
            options.len()
        )
    });
    let per_option = options.iter().enumerate().flat_map(|(i, option)| {
        let name = format!("option {} ({:?})", i + 1, option.title);
        let too_long = |what: &str, text: &str, max: usize| {
            let n = chars(text);
            (n > max).then(|| {
                format!("{name}: its {what} has {n} characters; a WhatsApp list row allows at most {max}")
            })
        };
        [
            too_long("title", &option.title, MAX_ROW_TITLE_CHARS),
            option
                .description
                .as_deref()
                .and_then(|d| too_long("description", d, MAX_ROW_DESCRIPTION_CHARS)),
            too_long("id", &option.id, MAX_ROW_ID_CHARS),
        ]
        .into_iter()
        .flatten()
    });
    count.into_iter().chain(per_option)
}

/// The Question options of a flow that WhatsApp cannot show ([`check_flow`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WhatsApp cannot show these options:\n  {}", problems.join("\n  "))]
#[non_exhaustive]
pub struct FlowLimitError {
    /// One line per problem, naming the step, the option (number and
    /// title) and the limit.
    pub problems: Vec<String>,
}

/// Checks that WhatsApp can show every Question's options: as reply buttons
/// (at most 3, distinct titles of at most 20 characters, no descriptions) or else as
/// a list (at most 10 rows, titles of at most 24 characters, descriptions
/// of at most 72, ids of at most 200). A server with WhatsApp on runs it
/// when it loads a flow.
///
/// ```
/// use chatflow::Flow;
/// use chatflow::whatsapp::check_flow;
///
/// let fits = Flow::from_json(r#"{"name": "f", "steps": [
///   {"type": "question", "name": "Menu", "text": "How can I help?",
///    "options": ["Track an order", "Talk to a person"]}
/// ]}"#)?;
/// assert!(check_flow(&fits).is_ok());
///
/// let too_long = Flow::from_json(r#"{"name": "f", "steps": [
///   {"type": "question", "name": "Menu", "text": "How can I help?",
///    "options": ["Track an order", "Tell me everything about my last invoice"]}
/// ]}"#)?;
/// let error = check_flow(&too_long).unwrap_err();
/// assert_eq!(error.problems, [
///     "step `Menu`: option 2 (\"Tell me everything about my last invoice\"): its title has 40 characters; \
///      a WhatsApp list row allows at most 24"
/// ]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check_flow(flow: &Flow) -> Result<(), FlowLimitError> {
    let mut problems = Vec::new();
    for step in flow.steps() {
        let StepKind::Question(question) = &step.kind else {
            continue;
        };
        let options: Vec<QuestionOption> = question
            .options
            .iter()
            .flatten()
            .map(crate::flow::OptionSpec::resolve)
            .collect();
        if !fit_buttons(&options) {
            problems.extend(list_problems(&options).map(|p| format!("step `{}`: {p}", step.name)));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(FlowLimitError { problems })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(id: &str, title: &str) -> QuestionOption {
        QuestionOption::new(id, title)
    }

    #[test]
    fn up_to_three_short_options_are_buttons() {
        let options = vec![option("a", "Track an order"), option("b", "Talk to a person")];
        assert_eq!(layout(&options), Layout::Buttons);
        let twenty = "x".repeat(20);
        assert_eq!(layout(&[option("a", &twenty)]), Layout::Buttons);
    }

    #[test]
    fn more_options_longer_titles_or_descriptions_make_a_list() {
        let four: Vec<_> = (1..=4).map(|i| option(&i.to_string(), "Short")).collect();
        assert_eq!(layout(&four), Layout::List);
        assert_eq!(layout(&[option("a", &"x".repeat(21))]), Layout::List);
        assert_eq!(layout(&[option("a", "A").with_description("why")]), Layout::List);
        assert_eq!(layout(&[option("a", "Same"), option("b", "Same")]), Layout::List);
        // An id too long for a row but not for a button.
        assert_eq!(layout(&[option(&"i".repeat(256), "A")]), Layout::Buttons);
        assert_eq!(layout(&[option(&"i".repeat(257), "A")]), Layout::Text);
    }

    #[test]
    fn what_no_list_holds_goes_as_text() {
        let eleven: Vec<_> = (1..=11).map(|i| option(&i.to_string(), "Short")).collect();
        assert_eq!(layout(&eleven), Layout::Text);
        assert_eq!(layout(&[option("a", &"x".repeat(25))]), Layout::Text);
        assert_eq!(
            layout(&[option("a", "A").with_description("d".repeat(73))]),
            Layout::Text
        );
    }

    #[test]
    fn characters_not_bytes_are_counted() {
        // 20 two-byte characters fit a button.
        assert_eq!(layout(&[option("a", &"é".repeat(20))]), Layout::Buttons);
    }

    #[test]
    fn check_flow_names_step_option_and_limit() {
        let flow = Flow::from_json(
            r#"{"name": "f", "steps": [
              {"type": "message", "name": "Hi", "text": "Hello"},
              {"type": "question", "name": "Free", "text": "Anything?"},
              {"type": "question", "name": "Menu", "text": "Pick", "options": [
                "Fine",
                {"id": "long", "title": "A title far beyond twenty-four", "description": "ok"},
                {"id": "desc", "title": "Ok", "description": "This description is much longer than the seventy-two characters a row allows"}
              ]}
            ]}"#,
        )
        .unwrap();
        let error = check_flow(&flow).unwrap_err();
        assert_eq!(error.problems.len(), 2, "{error}");
        assert!(error.problems[0].starts_with(
            "step `Menu`: option 2 (\"A title far beyond twenty-four\"): its title has 30 characters"
        ));
        assert!(error.problems[0].ends_with("at most 24"));
        assert!(error.problems[1].starts_with("step `Menu`: option 3 (\"Ok\"): its description has"));
        assert!(error.problems[1].ends_with("at most 72"));
        assert!(error.to_string().contains("WhatsApp cannot show"));
    }
}
