//! Why a conversation test did not pass: a file that cannot be read, or a
//! conversation that went otherwise than the file says.

use std::fmt;
use std::path::PathBuf;

use crate::{BuildError, LoadError, ReplyError};

/// Why a conversation test file did not pass. Every variant names the file;
/// a conversation that went otherwise than expected also names the turn and
/// shows expected against got as a diff.
///
/// ```
/// use chatflow::testing::{TestError, run_yaml};
///
/// let error = run_yaml(r#"
/// flow:
///   name: echo
///   steps:
///     - {type: question, name: Ask, text: "Say something"}
///     - {type: message, name: Echo, text: "You said <<step.Ask.response>>"}
/// turns:
///   - user: hi
///     bot: [Say something, You said hello]
///     status: finished
/// "#, ".").unwrap_err();
///
/// let TestError::Mismatch { turn, what, .. } = &error else { panic!("{error}") };
/// assert_eq!((*turn, what.as_str()), (Some(1), "bot messages"));
/// assert_eq!(error.to_string(), "\
/// <yaml>, turn 1: unexpected bot messages
/// --- expected
/// +++ got
/// @@ -1,2 +1,2 @@
///  \"Say something\"
/// -\"You said hello\"
/// +\"You said hi\"
/// ");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestError {
    /// The file or folder could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML, or not a conversation test.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The line of the problem, from 1 (0 when unknown).
        line: u64,
        /// The column of the problem, from 1 (0 when unknown).
        column: u64,
        /// What is wrong, with the YAML parser's excerpt of the file.
        message: String,
    },
    /// The file parses but says something impossible (a stub with no answer, …).
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
    /// The flow the file runs does not load.
    #[error("{}: the flow does not load: {source}", path.display())]
    Flow {
        /// The test file.
        path: PathBuf,
        /// Why the flow does not load.
        #[source]
        source: LoadError,
    },
    /// The engine could not be built (a host value or secret is missing).
    #[error("{}: {source}", path.display())]
    Build {
        /// The test file.
        path: PathBuf,
        /// Why the engine could not be built.
        #[source]
        source: BuildError,
    },
    /// A turn's user message was refused.
    #[error("{}, turn {turn}: the user message was refused: {source}", path.display())]
    Reply {
        /// The test file.
        path: PathBuf,
        /// The turn, from 1.
        turn: usize,
        /// Why it was refused.
        #[source]
        source: ReplyError,
    },
    /// The flow sent a request no stub answers.
    #[error(
        "{}, turn {turn}: no stub answers {}{method} {url}: add one with `step:` or `method:` and `url:`",
        path.display(),
        step.as_deref().map(|s| format!("step \"{s}\": ")).unwrap_or_default()
    )]
    Unstubbed {
        /// The test file.
        path: PathBuf,
        /// The turn, from 1.
        turn: usize,
        /// The step that sent the request.
        step: Option<String>,
        /// The request's method.
        method: String,
        /// The request's URL, secrets masked.
        url: String,
    },
    /// The conversation went otherwise than the file says.
    #[error("{}", Mismatch(self))]
    Mismatch {
        /// The test file.
        path: PathBuf,
        /// The turn, from 1; `None` for the file's `expect`.
        turn: Option<usize>,
        /// What is not as expected (`bot messages`, `status`, `handoff.team`, …).
        what: String,
        /// What the file expects, one item a line.
        expected: String,
        /// What happened, one item a line.
        got: String,
    },
    /// Files of a folder failed (see [`super::run_dir`]).
    #[error("{} of {total} conversation tests failed:\n\n{}", failures.len(), List(failures))]
    Failed {
        /// Why each failing file failed.
        failures: Vec<TestError>,
        /// The files run.
        total: usize,
    },
}

/// Renders a [`TestError::Mismatch`]: where, then a unified diff.
struct Mismatch<'a>(&'a TestError);

impl fmt::Display for Mismatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let TestError::Mismatch {
            path,
            turn,
            what,
            expected,
            got,
        } = self.0
        else {
            return Ok(());
        };
        match turn {
            Some(turn) => write!(f, "{}, turn {turn}: unexpected {what}", path.display())?,
            None => write!(f, "{}, at the end: unexpected {what}", path.display())?,
        }
        let (expected, got) = (with_newline(expected), with_newline(got));
        let diff = similar::TextDiff::from_lines(&expected, &got);
        write!(
            f,
            "\n{}",
            diff.unified_diff().context_radius(3).header("expected", "got")
        )
    }
}

/// Lines compare whole only when each ends with a newline.
fn with_newline(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

struct List<'a>(&'a [TestError]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "{error}")?;
        }
        Ok(())
    }
}
