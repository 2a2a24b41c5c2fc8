//! Conditions: rules of the form `left` – operator – `right`, combined with
//! `all` or `any`.
//!
//! A path that does not exist counts as empty: while an assistant is still
//! writing, the newest message's content list is empty and
//! `step.X.response.data.0.content.0.text.value` simply does not exist yet.
//!
//! `matches` takes a regular expression in `right` (the `regex` crate's
//! syntax). It is compiled once, when the flow loads, and matched in linear
//! time, so no pattern and no reply can make a turn hang.

use std::borrow::Cow;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::template::{Scope, Template, TemplateError, value_to_text};

/// How a rule compares its two operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Operator {
    /// Same text (or the same number, when both sides are numbers).
    Equals,
    /// Not [`Operator::Equals`].
    NotEquals,
    /// The text contains `right`; an array contains an element equal to `right`.
    Contains,
    /// Not [`Operator::Contains`].
    NotContains,
    /// The text starts with `right`.
    StartsWith,
    /// The text ends with `right`.
    EndsWith,
    /// Missing, `null`, blank text, `[]` or `{}`.
    IsEmpty,
    /// Not [`Operator::IsEmpty`].
    IsNotEmpty,
    /// Both sides are numbers and left > right.
    GreaterThan,
    /// Both sides are numbers and left ≥ right.
    GreaterOrEqual,
    /// Both sides are numbers and left < right.
    LessThan,
    /// Both sides are numbers and left ≤ right.
    LessOrEqual,
    /// The text matches the regular expression `right` somewhere (anchor it
    /// with `^…$` to match the whole text). `ignore_case` applies.
    Matches,
    /// The value is a number, or text that reads as one (`" 42 "`, `-1.5`).
    IsNumber,
}

impl Operator {
    /// The operator's name in flow JSON (`"not_equals"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "equals",
            Operator::NotEquals => "not_equals",
            Operator::Contains => "contains",
            Operator::NotContains => "not_contains",
            Operator::StartsWith => "starts_with",
            Operator::EndsWith => "ends_with",
            Operator::IsEmpty => "is_empty",
            Operator::IsNotEmpty => "is_not_empty",
            Operator::GreaterThan => "greater_than",
            Operator::GreaterOrEqual => "greater_or_equal",
            Operator::LessThan => "less_than",
            Operator::LessOrEqual => "less_or_equal",
            Operator::Matches => "matches",
            Operator::IsNumber => "is_number",
        }
    }

    /// Whether the operator compares against a `right` operand.
    pub fn takes_right(self) -> bool {
        !matches!(
            self,
            Operator::IsEmpty | Operator::IsNotEmpty | Operator::IsNumber
        )
    }
}

/// An operand as written in a flow: text (a template), a number or a boolean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Operand {
    /// A template such as `assistant` or `<<contact.plan>>`.
    Text(String),
    /// A number such as `404`.
    Number(serde_json::Number),
    /// `true` or `false`.
    Bool(bool),
}

impl Operand {
    fn to_template_text(&self) -> Cow<'_, str> {
        match self {
            Operand::Text(text) => Cow::Borrowed(text),
            Operand::Number(n) => Cow::Owned(n.to_string()),
            Operand::Bool(b) => Cow::Owned(b.to_string()),
        }
    }
}

/// One comparison.
///
/// ```json
/// {"left": "<<step.Poll.response.data.0.role>>", "op": "equals", "right": "assistant"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The value tested: usually one placeholder.
    pub left: String,
    /// The comparison.
    pub op: Operator,
    /// What `left` is compared with (not used by `is_empty` / `is_not_empty`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right: Option<Operand>,
    /// Compare text without regard to case.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
}

/// A rule with its templates parsed (and its pattern compiled, for `matches`).
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    left: Template,
    op: Operator,
    right: Option<Template>,
    /// The `matches` pattern, compiled once at load.
    pattern: Option<Regex>,
    ignore_case: bool,
}

/// Which field of a rule a template error is in.
pub(crate) enum RuleField {
    Left,
    Right,
}

/// Why a rule could not be compiled.
pub(crate) enum RuleProblem {
    /// A template in `left` or `right` does not parse.
    Template(RuleField, TemplateError),
    /// The `matches` pattern in `right` is not usable; the message says why.
    Pattern(String),
}

/// The largest compiled pattern accepted: far beyond any sensible flow
/// pattern, small enough that loading a flow stays cheap.
const PATTERN_SIZE_LIMIT: usize = 256 * 1024;

impl CompiledRule {
    pub(crate) fn compile(rule: &Rule, step_names: &[&str]) -> Result<CompiledRule, RuleProblem> {
        let left =
            Template::parse(&rule.left, step_names).map_err(|e| RuleProblem::Template(RuleField::Left, e))?;
        if rule.op == Operator::Matches {
            let pattern = rule
                .right
                .as_ref()
                .map(|r| compile_pattern(&r.to_template_text(), rule.ignore_case, step_names))
                .transpose()?;
            return Ok(CompiledRule {
                left,
                op: rule.op,
                right: None,
                pattern,
                ignore_case: rule.ignore_case,
            });
        }
        let right = rule
            .right
            .as_ref()
            .map(|r| Template::parse(&r.to_template_text(), step_names))
            .transpose()
            .map_err(|e| RuleProblem::Template(RuleField::Right, e))?;
        Ok(CompiledRule {
            left,
            op: rule.op,
            right,
            pattern: None,
            ignore_case: rule.ignore_case,
        })
    }

    pub(crate) fn templates(&self) -> impl Iterator<Item = &Template> {
        std::iter::once(&self.left).chain(self.right.as_ref())
    }

    pub(crate) fn evaluate(&self, scope: &dyn Scope) -> bool {
        let left = match self.left.as_single_placeholder() {
            Some(path) => scope.resolve(path),
            None => Some(Cow::Owned(Value::String(
                self.left.render(scope, crate::template::Secrets::Reveal),
            ))),
        };
        if let Some(pattern) = &self.pattern {
            return pattern.is_match(&text(left.as_deref().unwrap_or(&Value::Null)));
        }
        let right = match &self.right {
            Some(right) => right.render_text(scope, crate::template::Secrets::Reveal),
            None => Cow::Borrowed(""),
        };
        evaluate(left.as_deref(), self.op, &right, self.ignore_case)
    }
}

/// Compiles a `matches` pattern, size-limited, or says why it cannot be used.
///
/// The pattern is taken as written: it is compiled once, so it cannot hold
/// placeholders (compare with `equals`/`contains` for values that change).
fn compile_pattern(pattern: &str, ignore_case: bool, step_names: &[&str]) -> Result<Regex, RuleProblem> {
    let has_placeholder = Template::parse(pattern, step_names).is_ok_and(|t| t.paths().next().is_some());
    if has_placeholder {
        return Err(RuleProblem::Pattern(format!(
            "`{pattern}` holds a placeholder: a `matches` pattern is compiled once, when the flow loads, so it must be written out"
        )));
    }
    RegexBuilder::new(pattern)
        .case_insensitive(ignore_case)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            RuleProblem::Pattern(match e {
                regex::Error::CompiledTooBig(limit) => format!(
                    "`{pattern}` is too large: it compiles to more than {limit} bytes; write a simpler pattern"
                ),
                // A syntax error is several lines (the pattern, a caret, the
                // reason): diagnostics are one line, so keep the reason.
                other => {
                    let text = other.to_string();
                    let why = text
                        .lines()
                        .rev()
                        .find_map(|l| l.trim().strip_prefix("error: "))
                        .map_or_else(|| text.replace('\n', " "), str::to_string);
                    format!("`{pattern}` is not a valid regular expression: {why}")
                }
            })
        })
}

/// Applies `op` to a left value (`None` when its path does not exist) and right text.
///
/// Compares in place: neither side is copied or case-folded into a new string.
pub(crate) fn evaluate(left: Option<&Value>, op: Operator, right: &str, ignore_case: bool) -> bool {
    let left = left.unwrap_or(&Value::Null);
    let right_number = || right.trim().parse::<f64>().ok();
    let numbers = || Some((number(left)?, right_number()?));
    let equals = |value: &Value| match (number(value), right_number()) {
        (Some(l), Some(r)) => l == r,
        _ => {
            let text = text(value);
            if ignore_case {
                folded(&text).eq(folded(right))
            } else {
                *text == *right
            }
        }
    };
    match op {
        Operator::Equals => equals(left),
        Operator::NotEquals => !equals(left),
        Operator::Contains | Operator::NotContains => {
            let found = match left {
                Value::Array(items) => items.iter().any(equals),
                other => contains(&text(other), right, ignore_case),
            };
            found == (op == Operator::Contains)
        }
        Operator::StartsWith if ignore_case => is_prefix(folded(&text(left)), folded(right)),
        Operator::StartsWith => text(left).starts_with(right),
        Operator::EndsWith if ignore_case => is_prefix(folded(&text(left)).rev(), folded(right).rev()),
        Operator::EndsWith => text(left).ends_with(right),
        Operator::IsEmpty => is_empty(left),
        Operator::IsNotEmpty => !is_empty(left),
        Operator::GreaterThan => numbers().is_some_and(|(l, r)| l > r),
        Operator::GreaterOrEqual => numbers().is_some_and(|(l, r)| l >= r),
        Operator::LessThan => numbers().is_some_and(|(l, r)| l < r),
        Operator::LessOrEqual => numbers().is_some_and(|(l, r)| l <= r),
        Operator::IsNumber => number(left).is_some(),
        // Matched by the compiled rule, which holds the pattern; a pattern
        // given as plain text would have to be compiled on every call.
        Operator::Matches => false,
    }
}

/// A value as text ([`value_to_text`]), borrowed when it is a string.
fn text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        other => {
            let mut out = String::new();
            value_to_text(other, &mut out);
            Cow::Owned(out)
        }
    }
}

/// Lower case, char by char: `str::to_lowercase` applies context rules
/// (Greek final sigma) that would make a prefix stop matching its word.
fn folded(text: &str) -> impl DoubleEndedIterator<Item = char> + Clone + '_ {
    text.chars().flat_map(char::to_lowercase)
}

/// Whether `text` starts with `prefix`.
fn is_prefix(mut text: impl Iterator<Item = char>, prefix: impl Iterator<Item = char>) -> bool {
    let mut prefix = prefix;
    prefix.all(|c| text.next() == Some(c))
}

/// Whether `text` contains `part`, optionally ignoring case (compared
/// after folding both, as [`folded`] does).
fn contains(text: &str, part: &str, ignore_case: bool) -> bool {
    if !ignore_case {
        return text.contains(part);
    }
    if part.is_empty() {
        return true;
    }
    if text.is_ascii() && part.is_ascii() {
        return text
            .as_bytes()
            .windows(part.len())
            .any(|window| window.eq_ignore_ascii_case(part.as_bytes()));
    }
    // A match may start inside a character's folding ("İ" folds to two).
    let mut rest = folded(text);
    loop {
        if is_prefix(rest.clone(), folded(part)) {
            return true;
        }
        if rest.next().is_none() {
            return false;
        }
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(left: Option<Value>, op: Operator, right: &str) -> bool {
        evaluate(left.as_ref(), op, right, false)
    }

    #[test]
    fn table() {
        use Operator::*;
        let cases: &[(Option<Value>, Operator, &str, bool)] = &[
            (Some(json!("assistant")), Equals, "assistant", true),
            (Some(json!("Assistant")), Equals, "assistant", false),
            (Some(json!(404)), Equals, "404", true),
            (Some(json!("1.0")), Equals, "1", true),
            (Some(json!(200)), NotEquals, "404", true),
            (None, Equals, "", true),
            (None, Equals, "assistant", false),
            (Some(json!("please HANDOFF now")), Contains, "HANDOFF", true),
            (Some(json!("please")), NotContains, "HANDOFF", true),
            (Some(json!(["a", "vip"])), Contains, "vip", true),
            (Some(json!(["a", "vipx"])), Contains, "vip", false),
            (Some(json!("HANDOFF: bye")), StartsWith, "HANDOFF", true),
            (Some(json!("bye.")), EndsWith, ".", true),
            (None, IsEmpty, "", true),
            (Some(json!(null)), IsEmpty, "", true),
            (Some(json!("  ")), IsEmpty, "", true),
            (Some(json!([])), IsEmpty, "", true),
            (Some(json!({})), IsEmpty, "", true),
            (Some(json!(0)), IsEmpty, "", false),
            (Some(json!("x")), IsNotEmpty, "", true),
            (Some(json!([{"type": "text"}])), IsNotEmpty, "", true),
            (Some(json!(5)), GreaterThan, "3", true),
            (Some(json!("5")), GreaterThan, "30", false),
            (Some(json!("abc")), GreaterThan, "3", false),
            (None, LessThan, "3", false),
            (Some(json!(3)), LessOrEqual, "3", true),
            (Some(json!(3)), GreaterOrEqual, "3.5", false),
        ];
        for (left, op, right, expected) in cases {
            assert_eq!(
                check(left.clone(), *op, right),
                *expected,
                "{left:?} {op:?} {right:?}"
            );
        }
    }

    #[test]
    fn is_number_accepts_numbers_and_numeric_text() {
        for (value, expected) in [
            (json!(42), true),
            (json!(-1.5), true),
            (json!(" 42 "), true),
            (json!("1e3"), true),
            (json!("42 apples"), false),
            (json!("NaN"), false),
            (json!("inf"), false),
            (json!(""), false),
            (json!(true), false),
            (json!(null), false),
            (json!([1]), false),
        ] {
            assert_eq!(
                check(Some(value.clone()), Operator::IsNumber, ""),
                expected,
                "{value}"
            );
        }
        assert!(!check(None, Operator::IsNumber, ""));
    }

    fn matches_rule(pattern: &str, ignore_case: bool) -> CompiledRule {
        let rule = Rule {
            left: "<<contact.text>>".into(),
            op: Operator::Matches,
            right: Some(Operand::Text(pattern.into())),
            ignore_case,
        };
        CompiledRule::compile(&rule, &[]).unwrap_or_else(|_| panic!("{pattern} compiles"))
    }

    struct Contact(Value);

    impl Scope for Contact {
        fn resolve(&self, _path: &crate::template::Path) -> Option<Cow<'_, Value>> {
            Some(Cow::Borrowed(&self.0))
        }
    }

    #[test]
    fn matches_tests_the_compiled_pattern_anywhere_in_the_text() {
        let order = matches_rule(r"^A-\d{6}$", false);
        assert!(order.evaluate(&Contact(json!("A-123456"))));
        assert!(!order.evaluate(&Contact(json!("A-12345"))));
        assert!(!order.evaluate(&Contact(json!("a-123456"))));
        assert!(matches_rule(r"^A-\d{6}$", true).evaluate(&Contact(json!("a-123456"))));
        // Unanchored: anywhere in the text; numbers are matched as their text.
        assert!(matches_rule("refund", false).evaluate(&Contact(json!("I want a refund now"))));
        assert!(matches_rule(r"^\d+$", false).evaluate(&Contact(json!(404))));
        assert!(matches_rule("^$", false).evaluate(&Contact(json!(null))));
    }

    #[test]
    fn a_pathological_pattern_runs_in_linear_time() {
        // A backtracking engine takes exponential time on this pair.
        let rule = matches_rule("^(a+)+$", false);
        let text = format!("{}!", "a".repeat(50_000));
        let started = std::time::Instant::now();
        assert!(!rule.evaluate(&Contact(Value::String(text))));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        let problem = |pattern: &str| {
            let rule = Rule {
                left: "x".into(),
                op: Operator::Matches,
                right: Some(Operand::Text(pattern.into())),
                ignore_case: false,
            };
            match CompiledRule::compile(&rule, &[]) {
                Err(RuleProblem::Pattern(message)) => message,
                _ => panic!("{pattern} should be refused"),
            }
        };
        assert_eq!(
            problem("(abc"),
            "`(abc` is not a valid regular expression: unclosed group"
        );
        assert!(problem(r"(\w{100}){100}").contains("compiles to more than"));
        assert!(problem("^<<contact.x>>$").contains("holds a placeholder"));
    }

    #[test]
    fn ignore_case() {
        assert!(evaluate(
            Some(&json!("Assistant")),
            Operator::Equals,
            "ASSISTANT",
            true
        ));
        assert!(evaluate(
            Some(&json!("say Handoff")),
            Operator::Contains,
            "HANDOFF",
            true
        ));
        assert!(!evaluate(
            Some(&json!("say Handoff")),
            Operator::Contains,
            "HANDOFF",
            false
        ));
    }

    /// Folding in place agrees with comparing folded copies.
    #[test]
    fn ignore_case_matches_folded_copies() {
        fn fold_case(text: &str) -> String {
            text.chars().flat_map(char::to_lowercase).collect()
        }
        let texts = [
            "",
            "a",
            "A",
            "Ada",
            "please HANDOFF now",
            "handoff",
            "ΟΔΟΣ",
            "οδος",
            "Σ",
            "ς",
            "İstanbul",
            "i\u{307}",
            "\u{307}",
            "\u{212A}elvin",
            "kelvin",
            "Straße",
            "STRASSE",
            "ß",
            "ǅ",
            "ǆ",
            "x İ y",
        ];
        for text in texts {
            for part in texts {
                let (t, p) = (fold_case(text), fold_case(part));
                let case = format!("{text:?} / {part:?}");
                assert_eq!(contains(text, part, true), t.contains(&p), "contains {case}");
                assert_eq!(
                    contains(text, part, false),
                    text.contains(part),
                    "contains {case}"
                );
                let left = Value::String(text.to_string());
                let check = |op| evaluate(Some(&left), op, part, true);
                assert_eq!(check(Operator::Equals), t == p, "equals {case}");
                assert_eq!(
                    check(Operator::StartsWith),
                    t.starts_with(&p),
                    "starts_with {case}"
                );
                assert_eq!(check(Operator::EndsWith), t.ends_with(&p), "ends_with {case}");
            }
        }
    }

    #[test]
    fn rules_deserialize_with_numbers_and_reject_unknown_fields() {
        let rule: Rule =
            serde_json::from_value(json!({"left": "<<step.A.status>>", "op": "equals", "right": 404}))
                .unwrap();
        assert_eq!(rule.right, Some(Operand::Number(404.into())));
        let err =
            serde_json::from_value::<Rule>(json!({"left": "x", "op": "equals", "rigth": 1})).unwrap_err();
        assert!(err.to_string().contains("unknown field `rigth`"), "{err}");
        let err = serde_json::from_value::<Rule>(json!({"left": "x", "op": "eq"})).unwrap_err();
        assert!(err.to_string().contains("expected one of"), "{err}");
    }
}
