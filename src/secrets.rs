//! Secrets in one place: the values hosts give ([`Secret`]), the forms they
//! take in text ([`SecretForms`]), and masking them out of everything a
//! conversation keeps or shows ([`Redactor`]): errors, stored Api results,
//! response headers, logs.
//!
//! A secret is sent only where the flow says (a header, a URL, a body) and is
//! `***` everywhere else, `Debug` included.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::http::HttpError;

/// A secret value: never printed, not even by `Debug`. Kept as a JSON
/// string so that rendering a request borrows it instead of copying it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(Value);

impl Secret {
    pub(crate) fn new(value: String) -> Secret {
        Secret(Value::String(value))
    }

    /// The secret as a template value.
    pub(crate) fn value(&self) -> &Value {
        &self.0
    }

    pub(crate) fn as_str(&self) -> &str {
        self.0.as_str().unwrap_or_default()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The forms secrets take in text, each with its searcher built once:
/// masking looks for every form in every kept string and key long enough
/// to hold one, and in numbers when a form could be written as one.
pub(crate) struct SecretForms {
    forms: Vec<(String, memchr::memmem::Finder<'static>)>,
    /// Whether some form could occur in a number's text; when none can,
    /// numbers need no look.
    numeric: bool,
    /// The shortest form's length: a shorter text (most keys, many values)
    /// holds no form.
    shortest: usize,
}

impl SecretForms {
    fn new(forms: Vec<String>) -> SecretForms {
        // A JSON number's text (serde_json's, any precision) has no other bytes.
        let numeric = forms
            .iter()
            .any(|f| f.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)));
        let shortest = forms.iter().map(String::len).min().unwrap_or(0);
        let forms = forms
            .into_iter()
            .map(|form| {
                let finder = memchr::memmem::Finder::new(form.as_bytes()).into_owned();
                (form, finder)
            })
            .collect();
        SecretForms {
            forms,
            numeric,
            shortest,
        }
    }

    /// Every form the secrets may take in text (as is, percent-encoded),
    /// longest first so a secret containing another is masked whole.
    pub(crate) fn of(secrets: &BTreeMap<String, Secret>) -> SecretForms {
        let mut forms: Vec<String> = secrets
            .values()
            .map(Secret::as_str)
            .filter(|s| !s.is_empty())
            .flat_map(|s| [s.to_string(), crate::template::url_encode(s)])
            .collect();
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        SecretForms::new(forms)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// Whether a number's text may hold a secret.
    pub(crate) fn numeric(&self) -> bool {
        self.numeric
    }

    /// Whether `text` is too short to hold any form.
    pub(crate) fn too_short(&self, text: &str) -> bool {
        text.len() < self.shortest
    }

    /// The forms, longest first, with their searchers.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &memchr::memmem::Finder<'static>)> {
        self.forms.iter().map(|(form, finder)| (form.as_str(), finder))
    }
}

/// Masks an engine's secrets: every form of every secret becomes `***`.
pub(crate) struct Redactor {
    forms: SecretForms,
}

impl Redactor {
    /// A redactor of these secrets.
    pub(crate) fn new(secrets: &BTreeMap<String, Secret>) -> Redactor {
        Redactor {
            forms: SecretForms::of(secrets),
        }
    }

    /// `text` with every secret value replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.redact_cow(Cow::Borrowed(text)).into_owned()
    }

    /// Redacts every string (and key) inside a JSON value.
    pub(crate) fn redact_value(&self, value: &mut Value) {
        if self.forms.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(redacted) = self.redact_cow(Cow::Borrowed(s.as_str())) {
                    *s = redacted;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_value(v)),
            Value::Object(map) => {
                if map
                    .keys()
                    .any(|k| matches!(self.redact_cow(Cow::Borrowed(k)), Cow::Owned(_)))
                {
                    *map = std::mem::take(map)
                        .into_iter()
                        .map(|(k, v)| (self.redact(&k), v))
                        .collect();
                }
                map.values_mut().for_each(|v| self.redact_value(v));
            }
            // A numeric secret (a PIN, an account number) echoed as a number.
            Value::Number(n) if self.forms.numeric() => {
                let text = n.to_string();
                if let Cow::Owned(redacted) = self.redact_cow(Cow::Borrowed(&text)) {
                    *value = Value::String(redacted);
                }
            }
            _ => {}
        }
    }

    /// Like [`Redactor::redact`], copying only when a secret is present.
    /// Catches secrets as sent in a URL (percent-encoded) too.
    pub(crate) fn redact_cow<'a>(&self, mut text: Cow<'a, str>) -> Cow<'a, str> {
        if self.forms.too_short(&text) {
            return text;
        }
        for (form, finder) in self.forms.iter() {
            if finder.find(text.as_bytes()).is_some() {
                text = Cow::Owned(text.replace(form, "***"));
            }
        }
        text
    }

    /// A transport error whose message may quote the request (a URL with a
    /// key in it), masked.
    pub(crate) fn redact_http_error(&self, error: HttpError) -> HttpError {
        match error {
            HttpError::Connect(m) => HttpError::Connect(self.redact(&m)),
            HttpError::InvalidRequest(m) => HttpError::InvalidRequest(self.redact(&m)),
            HttpError::Transport(m) => HttpError::Transport(self.redact(&m)),
            HttpError::EventStream(m) => HttpError::EventStream(self.redact(&m)),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_forms_a_number_could_spell_make_numbers_searched() {
        let forms = |forms: &[&str]| SecretForms::new(forms.iter().map(|f| f.to_string()).collect());
        assert!(!forms(&["sk-live-1", "sk%2Dlive"]).numeric());
        for numeric in ["987654321", "-12.5e+3", "1E7", "0.5"] {
            assert!(forms(&["sk-live-1", numeric]).numeric(), "{numeric}");
        }
        assert!(forms(&[]).is_empty());
        let some = forms(&["sk-live-1", "sk%2Dlive-1"]);
        assert!(some.too_short("sk-live") && !some.too_short("sk-live-1"));
    }

    #[test]
    fn every_form_of_a_secret_is_masked() {
        let secrets = BTreeMap::from([("key".to_string(), Secret::new("sk live/1".into()))]);
        let redactor = Redactor::new(&secrets);
        assert_eq!(redactor.redact("a sk live/1 b sk%20live%2F1"), "a *** b ***");
        let mut value = serde_json::json!({"sk live/1": ["sk live/1"], "n": 1});
        redactor.redact_value(&mut value);
        assert_eq!(value, serde_json::json!({"***": ["***"], "n": 1}));
        assert!(!format!("{:?}", secrets).contains("sk"));
    }
}
