//! The store a `DATABASE_URL` names.

use std::sync::Arc;

use super::CliError;
use crate::store::{MemoryStore, PostgresStore, SqliteStore, Store};

/// Opens the store `url` names: `memory`, `sqlite://FILE` or `postgres://…`.
pub(crate) async fn open(url: &str) -> Result<Arc<dyn Store>, CliError> {
    let failed = |source| CliError::Store {
        url: redact_url(url),
        source,
    };
    match kind(url) {
        "memory" => Ok(Arc::new(MemoryStore::new())),
        "sqlite" => Ok(Arc::new(SqliteStore::connect(url).await.map_err(failed)?)),
        "postgres" => Ok(Arc::new(PostgresStore::connect(url).await.map_err(failed)?)),
        _ => Err(CliError::UnknownStore { url: redact_url(url) }),
    }
}

/// `memory`, `sqlite`, `postgres`, or `unknown`.
pub(crate) fn kind(url: &str) -> &'static str {
    if url == "memory" || url == "memory://" {
        "memory"
    } else if url.starts_with("sqlite:") {
        "sqlite"
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        "postgres"
    } else {
        "unknown"
    }
}

/// The URL with any password replaced by `***`, for messages. Errs on the
/// side of hiding: it is used on the URLs that failed to open, which are the
/// malformed ones — a password holding an unencoded `/`, `?` or `@`, no
/// scheme, or a `password=` query parameter, as libpq and sqlx accept.
pub(crate) fn redact_url(url: &str) -> String {
    let (prefix, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    // The user information ends at the last `@`, whatever the password holds.
    let (userinfo, rest) = match rest.rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            let user = if user.contains(['/', '?', '#']) {
                "***"
            } else {
                user
            };
            (format!("{user}:***@"), &rest[at + 1..])
        }
        None => (String::new(), rest),
    };
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.to_ascii_lowercase().contains("pass") => format!("{key}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => rest.to_string(),
    };
    format!("{prefix}{userinfo}{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://bot:hunter2@db:5432/chat?sslmode=require"),
            "postgres://bot:***@db:5432/chat?sslmode=require"
        );
        assert_eq!(redact_url("postgres://db/chat"), "postgres://db/chat");
        assert_eq!(redact_url("sqlite://chatflow.db"), "sqlite://chatflow.db");
        assert_eq!(redact_url("memory"), "memory");
    }

    #[test]
    fn passwords_in_malformed_urls_are_redacted() {
        for (url, shown) in [
            (
                "postgres://db/x?user=bot&password=hunter2",
                "postgres://db/x?user=bot&password=***",
            ),
            ("postgres://bot:pa/ss@db/x", "postgres://bot:***@db/x"),
            ("postgres://bot:p?a#s@s@db/x", "postgres://bot:***@db/x"),
            ("bot:hunter2@db/x", "bot:***@db/x"),
            (
                "postgres://db/x?sslpassword=hunter2&sslmode=require",
                "postgres://db/x?sslpassword=***&sslmode=require",
            ),
        ] {
            assert_eq!(redact_url(url), shown);
            assert!(
                !redact_url(url).contains("hunter2") && !redact_url(url).contains("pa/ss"),
                "{url}"
            );
        }
    }

    #[test]
    fn urls_name_their_store() {
        assert_eq!(kind("memory"), "memory");
        assert_eq!(kind("sqlite://x.db"), "sqlite");
        assert_eq!(kind("postgresql://db/x"), "postgres");
        assert_eq!(kind("mysql://db/x"), "unknown");
    }
}
