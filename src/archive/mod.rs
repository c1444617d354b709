//! A user's data as a file: what `export` writes and `import` reads back (see
//! [`crate::archive::format`]), and what a ChatGPT data export's `conversations.json`
//! holds (see [`crate::archive::chatgpt`]). Pure: readers turn bytes into [`ImportChat`](crate::archive::ImportChat)s,
//! storage writes them.

/// ChatGPT's data export (`conversations.json`), read into chats.
pub mod chatgpt;
/// The export format: NDJSON, written by `export` and read back by `import`.
pub mod format;

use std::fmt;

use crate::domain::{Role, Timestamp};

/// One chat read from an import file, with its messages in the order they were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportChat {
    /// Its name, 1 to 200 characters after trimming (as the API keeps names).
    pub name: String,
    /// The model it talked to (may be empty).
    pub model: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last active (never before `created_at`).
    pub updated_at: Timestamp,
    /// Its messages, oldest first.
    pub messages: Vec<ImportMessage>,
}

/// One message of an [`ImportChat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportMessage {
    /// The text, exactly as it was (never empty).
    pub content: String,
    /// Who wrote it.
    pub actor: Role,
    /// When it was written.
    pub created_at: Timestamp,
}

/// Why a file cannot be imported: where in it, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveError {
    /// Where the problem is: a line number, or a JSON path such as
    /// `conversations[3].mapping["a1b2"].message.author.role`.
    pub place: String,
    /// What is wrong there, in a sentence without a trailing period.
    pub problem: String,
}

impl ArchiveError {
    /// A problem at `place`.
    pub fn at(place: impl Into<String>, problem: impl Into<String>) -> Self {
        ArchiveError {
            place: place.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.problem)
    }
}

impl std::error::Error for ArchiveError {}
