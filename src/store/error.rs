//! Why a store operation failed.

/// An error from a database driver, or a reason a store gives for itself.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another runner holds the conversation, or took it over after this
    /// runner's lease expired: this runner must stop without committing.
    #[error("conversation {0} is held by another runner")]
    LeaseLost(String),
    /// The stored state could not be read.
    #[error("stored state of conversation {id} is unreadable: {message}")]
    Corrupt {
        /// The conversation.
        id: String,
        /// What is wrong (with the text of `source`, when there is one).
        message: String,
        /// What failed to read it, e.g. the JSON parser's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The database failed, or could not be reached or opened.
    #[error("store error: {context}: {source}")]
    Backend {
        /// What the store was doing, e.g. `SQLite enqueue`.
        context: String,
        /// The driver's error, or the store's reason when there is none.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// A [`StoreError::Backend`]: `context` says what the store was doing,
    /// `source` why it failed (a driver's error, or a message).
    ///
    /// ```
    /// use chatflow::store::StoreError;
    ///
    /// let e = StoreError::backend("Redis enqueue", "connection refused");
    /// assert_eq!(e.to_string(), "store error: Redis enqueue: connection refused");
    /// ```
    pub fn backend(context: impl Into<String>, source: impl Into<BoxError>) -> StoreError {
        StoreError::Backend {
            context: context.into(),
            source: source.into(),
        }
    }

    /// A [`StoreError::Corrupt`] for conversation `id`, caused by `source`.
    pub(crate) fn corrupt(id: &str, what: &str, source: impl Into<BoxError>) -> StoreError {
        let source = source.into();
        StoreError::Corrupt {
            id: id.to_string(),
            message: format!("{what}: {source}"),
            source: Some(source),
        }
    }

    /// A [`StoreError::Corrupt`] for conversation `id` with no underlying error.
    pub(crate) fn corrupt_because(id: &str, message: String) -> StoreError {
        StoreError::Corrupt {
            id: id.to_string(),
            message,
            source: None,
        }
    }
}
