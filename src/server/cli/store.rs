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

/// The URL with any password replaced by `***`, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_string(),
    }
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
    fn urls_name_their_store() {
        assert_eq!(kind("memory"), "memory");
        assert_eq!(kind("sqlite://x.db"), "sqlite");
        assert_eq!(kind("postgresql://db/x"), "postgres");
        assert_eq!(kind("mysql://db/x"), "unknown");
    }
}
