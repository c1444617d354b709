//! Full-text search: how message text becomes words, how a typed query is read, and the
//! snippet shown with a hit. Pure logic, the same for both backends: each backend
//! indexes the words [`words`](crate::search::words) finds (SQLite in an FTS5 table, PostgreSQL in a
//! `tsvector`) and searches with the expression [`Query`](crate::search::Query) renders for it, so a message
//! is found by the same queries on either.
//!
//! **Words.** A word is a run of letters and digits (with their combining marks),
//! lower-cased, its accents taken off (Unicode compatibility decomposition, then the
//! combining marks dropped: `Café` and `cafe` are the same word, and so are `ﬁ` and
//! `fi`). Chinese, Japanese and Korean are written without spaces between words, so
//! each of their characters is a word of its own, and a query's run of them is looked
//! for as a phrase: `東京` finds `東京タワー`. Scripts without spaces between words
//! that are not among these (Thai, Lao, Khmer) are found by whole runs only.
//!
//! **Queries** are what people type into a search box: words (a message must have all
//! of them), `"a quoted phrase"` (those words next to each other, in order), a word
//! ending in `*` (any word that starts so), and `-word` or `-"a phrase"` (messages
//! with it are left out). A query needs at least one word that is not excluded.

use std::fmt::Write as _;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// The longest query read, in bytes.
pub const MAX_QUERY_BYTES: usize = 1000;

/// The most terms (words, phrases, exclusions) a query may have.
pub const MAX_TERMS: usize = 16;

/// The highest word position PostgreSQL keeps in a `tsvector`; later words share it.
const MAX_POSITION: usize = 16_383;

/// The longest word indexed or searched for, in bytes (folded). PostgreSQL refuses
/// longer lexemes (2,047 bytes); nobody types such a word, so longer runs of letters
/// (a pasted key, an encoded blob) are left out of the index on both backends.
pub const MAX_WORD_BYTES: usize = 1024;

/// The most bytes of `tsvector` text made for one message: PostgreSQL refuses one of a
/// megabyte or more, so the words after this are left out of the index.
const MAX_TSVECTOR_BYTES: usize = 900 * 1024;

/// Words of the snippet before its first match.
const SNIPPET_BEFORE: usize = 6;

/// Words in a snippet at most.
const SNIPPET_WORDS: usize = 24;

/// One word of a text: its folded form and where it stands in the text (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// Lower-cased, accents off.
    pub folded: String,
    /// Where the word starts in the text.
    pub start: usize,
    /// Where it ends (exclusive).
    pub end: usize,
}

/// Whether `c` is written without spaces between words and is a word by itself here:
/// Chinese characters, Japanese kana, Korean syllables and their compatibility forms.
fn stands_alone(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF     // Hiragana, Katakana
        | 0x31F0..=0x31FF   // Katakana phonetic extensions
        | 0x3400..=0x4DBF   // CJK unified ideographs, extension A
        | 0x4E00..=0x9FFF   // CJK unified ideographs
        | 0xAC00..=0xD7AF   // Hangul syllables
        | 0xF900..=0xFAFF   // CJK compatibility ideographs
        | 0xFF66..=0xFF9F   // half-width Katakana
        | 0x20000..=0x3134F // CJK unified ideographs, extensions B to G
    )
}

/// Appends `c`, folded, to `out`: decomposed, its combining marks dropped, lower-cased,
/// and composed again (so that a Korean syllable stays one character).
fn fold_into(c: char, out: &mut String) {
    let bare = std::iter::once(c)
        .nfkd()
        .filter(|&d| !is_combining_mark(d))
        .flat_map(char::to_lowercase);
    out.extend(bare.nfc());
}

/// The words of `text`, in order.
pub fn words(text: &str) -> Vec<Word> {
    let mut words = Vec::new();
    let mut current: Option<Word> = None;
    for (at, c) in text.char_indices() {
        let end = at + c.len_utf8();
        if stands_alone(c) {
            words.extend(current.take());
            let mut folded = String::new();
            fold_into(c, &mut folded);
            words.push(Word {
                folded,
                start: at,
                end,
            });
        } else if c.is_alphanumeric() || (current.is_some() && is_combining_mark(c)) {
            let word = current.get_or_insert_with(|| Word {
                folded: String::new(),
                start: at,
                end,
            });
            fold_into(c, &mut word.folded);
            word.end = end;
        } else {
            words.extend(current.take());
        }
    }
    words.extend(current);
    // A word whose every character folded away (a lone mark) is no word, nor is one
    // too long to index.
    words.retain(|word| !word.folded.is_empty() && word.folded.len() <= MAX_WORD_BYTES);
    words
}

/// What SQLite's FTS5 index takes for `text`: its words, folded, one space apart.
pub fn fts_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in words(text) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word.folded);
    }
    out
}

/// What PostgreSQL indexes for `text`: a `tsvector` literal of its words, folded, with
/// their positions (from 1; from 16,383 on, PostgreSQL's highest, they share the last one).
pub fn tsvector(text: &str) -> String {
    let mut positions: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    let mut size = 0;
    for (n, word) in words(text).into_iter().enumerate() {
        let at = (n + 1).min(MAX_POSITION);
        // A new word costs its quotes, colon and space; a position up to six bytes.
        let cost = if positions.contains_key(&word.folded) {
            6
        } else {
            word.folded.len() + 10
        };
        if size + cost > MAX_TSVECTOR_BYTES {
            break;
        }
        let list = positions.entry(word.folded).or_default();
        // PostgreSQL keeps 256 positions of a word at most.
        if list.len() < 256 && list.last() != Some(&at) {
            list.push(at);
            size += cost;
        }
    }
    let mut out = String::new();
    for (word, list) in positions {
        if !out.is_empty() {
            out.push(' ');
        }
        // Words are letters and digits only: nothing in them needs escaping.
        let _ = write!(out, "'{word}':");
        for (i, at) in list.iter().enumerate() {
            let _ = write!(out, "{}{at}", if i == 0 { "" } else { "," });
        }
    }
    out
}

/// One term of a query: words next to each other, in order; the last one a prefix when
/// `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The folded words; never empty.
    pub words: Vec<String>,
    /// Whether the last word is a prefix (`word*`).
    pub prefix: bool,
}

/// A query as typed, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// What a message must have: every one of these. Never empty.
    pub all: Vec<Term>,
    /// What a message must not have: none of these.
    pub none: Vec<Term>,
}

/// Why a query cannot be read: a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError(pub String);

impl Query {
    /// Reads a query as people type it (see the module's documentation).
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        let fail = |message: &str| Err(QueryError(message.to_owned()));
        if text.len() > MAX_QUERY_BYTES {
            return Err(QueryError(format!(
                "the search is longer than {MAX_QUERY_BYTES} bytes"
            )));
        }
        let mut query = Query {
            all: Vec::new(),
            none: Vec::new(),
        };
        let mut rest = text.trim_start();
        while !rest.is_empty() {
            let excluded = rest.len() > 1 && rest.starts_with('-');
            if excluded {
                rest = &rest[1..];
            }
            let (raw, quoted, after) = if let Some(inner) = rest.strip_prefix('"') {
                match inner.find('"') {
                    Some(close) => (&inner[..close], true, &inner[close + 1..]),
                    None => return fail("a quoted phrase is not closed: add the closing \""),
                }
            } else {
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == '"')
                    .unwrap_or(rest.len());
                (&rest[..end], false, &rest[end..])
            };
            rest = after.trim_start();
            let prefix = !quoted && raw.ends_with('*');
            let stem = if quoted {
                raw
            } else {
                raw.trim_end_matches('*')
            };
            let words: Vec<String> = words(stem).into_iter().map(|word| word.folded).collect();
            if prefix && stem.len() + 1 != raw.len() {
                return fail("a prefix ends with one *, as in chat*");
            }
            if words.is_empty() {
                if prefix {
                    return fail("a * needs the start of a word before it, as in chat*");
                }
                // Punctuation alone: nothing to look for.
                continue;
            }
            if query.all.len() + query.none.len() == MAX_TERMS {
                return Err(QueryError(format!(
                    "the search has more than {MAX_TERMS} words and phrases"
                )));
            }
            let term = Term { words, prefix };
            if excluded {
                query.none.push(term);
            } else {
                query.all.push(term);
            }
        }
        if query.all.is_empty() {
            return fail(
                "the search needs at least one word to look for (one not excluded with -)",
            );
        }
        Ok(query)
    }

    /// The FTS5 query expression (for `MATCH`).
    pub fn to_fts5(&self) -> String {
        let term = |term: &Term| {
            format!(
                "\"{}\"{}",
                term.words.join(" "),
                if term.prefix { "*" } else { "" }
            )
        };
        let all: Vec<String> = self.all.iter().map(term).collect();
        let mut out = format!("({})", all.join(" AND "));
        for none in &self.none {
            let _ = write!(out, " NOT {}", term(none));
        }
        out
    }

    /// The PostgreSQL `tsquery` literal.
    pub fn to_tsquery(&self) -> String {
        let term = |term: &Term| {
            let last = term.words.len() - 1;
            let words: Vec<String> = term
                .words
                .iter()
                .enumerate()
                .map(|(i, word)| {
                    let star = if term.prefix && i == last { ":*" } else { "" };
                    format!("'{word}'{star}")
                })
                .collect();
            format!("({})", words.join(" <-> "))
        };
        let mut parts: Vec<String> = self.all.iter().map(term).collect();
        parts.extend(self.none.iter().map(|none| format!("!{}", term(none))));
        parts.join(" & ")
    }
}

/// The query written back in the syntax [`Query::parse`] reads, which gives the same
/// query again: each term its words joined by `-` (a word of several parts is a
/// phrase), a prefix with its `*`, an exclusion with its `-`.
impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let terms = self.all.iter().map(|term| ("", term));
        let terms = terms.chain(self.none.iter().map(|term| ("-", term)));
        for (i, (sign, term)) in terms.enumerate() {
            let space = if i == 0 { "" } else { " " };
            let star = if term.prefix { "*" } else { "" };
            write!(f, "{space}{sign}{}{star}", term.words.join("-"))?;
        }
        Ok(())
    }
}

/// Escapes `text` for HTML, onto `out`.
fn escape_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Where in `words` the term occurs: the index of the first word of each occurrence.
fn occurrences<'w>(words: &'w [Word], term: &'w Term) -> impl Iterator<Item = usize> + 'w {
    let n = term.words.len();
    (0..words.len().saturating_sub(n - 1)).filter(move |&at| {
        term.words.iter().enumerate().all(|(i, want)| {
            let word = &words[at + i].folded;
            if term.prefix && i == n - 1 {
                word.starts_with(want.as_str())
            } else {
                word == want
            }
        })
    })
}

/// The length, in words, that [`score`] takes as a usual message's.
const USUAL_WORDS: f64 = 16.0;

/// How well `text` matches `query`, higher for better: BM25's weighing of how often
/// each term occurs (saturating, k1 = 1.2) against the message's length (b = 0.75),
/// with a fixed usual length and without weighing terms by their rarity. So the score
/// depends on the message and the query alone, never on the other messages stored,
/// and a page's cursor keeps its place while messages come and go.
pub fn score(text: &str, query: &Query) -> f64 {
    const K1: f64 = 1.2;
    const B: f64 = 0.75;
    let words = words(text);
    let length = words.len() as f64;
    query
        .all
        .iter()
        .map(|term| {
            let tf = occurrences(&words, term).count() as f64;
            tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * length / USUAL_WORDS))
        })
        .sum()
}

/// A short piece of `text` around the first place `query` matches, safe to put into
/// HTML: the text is escaped, and `<mark>` and `</mark>` around each matched word are
/// the only markup. An ellipsis (`…`) stands for text left out at either end.
pub fn snippet(text: &str, query: &Query) -> String {
    let words = words(text);
    let mut marked = vec![false; words.len()];
    for term in &query.all {
        let n = term.words.len();
        for at in occurrences(&words, term) {
            marked[at..at + n].iter_mut().for_each(|m| *m = true);
        }
    }
    let first = marked.iter().position(|&m| m).unwrap_or(0);
    let from = first.saturating_sub(SNIPPET_BEFORE);
    let to = (from + SNIPPET_WORDS).min(words.len());
    let start = if from == 0 { 0 } else { words[from].start };
    let end = if to == words.len() {
        text.len()
    } else {
        words[to - 1].end
    };
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    let mut at = start;
    for (word, &mark) in words[from..to].iter().zip(&marked[from..to]) {
        if !mark {
            continue;
        }
        escape_into(&text[at..word.start], &mut out);
        out.push_str("<mark>");
        escape_into(&text[word.start..word.end], &mut out);
        out.push_str("</mark>");
        at = word.end;
    }
    escape_into(&text[at..end], &mut out);
    if end < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(text: &str) -> Vec<String> {
        words(text).into_iter().map(|w| w.folded).collect()
    }

    #[test]
    fn words_are_folded_runs_of_letters_and_digits() {
        assert_eq!(folded("Hello, World! 42x"), ["hello", "world", "42x"]);
        assert_eq!(folded("Café crème"), ["cafe", "creme"]);
        // The same with the accents as combining marks.
        assert_eq!(folded("Cafe\u{301} cre\u{300}me"), ["cafe", "creme"]);
        assert_eq!(folded("ﬁne ÅNGSTRÖM"), ["fine", "angstrom"]);
        assert_eq!(folded("don't e-mail"), ["don", "t", "e", "mail"]);
        assert_eq!(folded("  ,,  "), Vec::<String>::new());
    }

    #[test]
    fn chinese_japanese_and_korean_characters_are_words_of_their_own() {
        assert_eq!(folded("東京タワー"), ["東", "京", "タ", "ワ", "ー"]);
        assert_eq!(
            folded("안녕하세요 world"),
            ["안", "녕", "하", "세", "요", "world"]
        );
        assert_eq!(folded("abc中文def"), ["abc", "中", "文", "def"]);
    }

    #[test]
    fn words_know_where_they_stand_in_the_text() {
        let text = "¡Olé, 東x!";
        for word in words(text) {
            assert!(!text[word.start..word.end].is_empty());
        }
        let spans: Vec<&str> = words(text).iter().map(|w| &text[w.start..w.end]).collect();
        assert_eq!(spans, ["Olé", "東", "x"]);
    }

    #[test]
    fn words_too_long_for_an_index_are_left_out_and_a_tsvector_stays_below_a_megabyte() {
        let blob = "x".repeat(MAX_WORD_BYTES + 1);
        assert_eq!(folded(&format!("a {blob} b")), ["a", "b"]);
        // One character whose compatibility form is 18 characters long.
        let query = "\u{FDFA}".repeat(100);
        assert!(
            Query::parse(&query).is_err(),
            "a word folded past the limit"
        );
        let many: String = (0..200_000).map(|n| format!("w{n} ")).collect();
        assert!(tsvector(&many).len() <= MAX_TSVECTOR_BYTES);
    }

    #[test]
    fn the_indexed_forms_hold_the_words_with_their_positions() {
        assert_eq!(fts_text("Café, au lait!"), "cafe au lait");
        assert_eq!(tsvector("b a b"), "'a':2 'b':1,3");
        assert_eq!(tsvector(""), "");
    }

    fn term(words: &[&str], prefix: bool) -> Term {
        Term {
            words: words.iter().map(|w| (*w).to_owned()).collect(),
            prefix,
        }
    }

    #[test]
    fn queries_read_words_phrases_prefixes_and_exclusions() {
        let query = Query::parse(r#"  Café "New York" chat* -spam -"big deal" "#).unwrap();
        assert_eq!(
            query.all,
            [
                term(&["cafe"], false),
                term(&["new", "york"], false),
                term(&["chat"], true)
            ]
        );
        assert_eq!(
            query.none,
            [term(&["spam"], false), term(&["big", "deal"], false)]
        );
        assert_eq!(
            query.to_fts5(),
            r#"("cafe" AND "new york" AND "chat"*) NOT "spam" NOT "big deal""#
        );
        assert_eq!(
            query.to_tsquery(),
            "('cafe') & ('new' <-> 'york') & ('chat':*) & !('spam') & !('big' <-> 'deal')"
        );
    }

    #[test]
    fn a_query_written_back_reads_as_itself() {
        for typed in [
            r#"Café "New York" chat* -spam -"big deal""#,
            "e-mai* 東京 -x*",
        ] {
            let query = Query::parse(typed).unwrap();
            assert_eq!(Query::parse(&query.to_string()).unwrap(), query, "{query}");
        }
    }

    #[test]
    fn a_word_of_several_parts_is_a_phrase() {
        let query = Query::parse("e-mail 東京").unwrap();
        assert_eq!(
            query.all,
            [term(&["e", "mail"], false), term(&["東", "京"], false)]
        );
    }

    #[test]
    fn queries_with_nothing_to_look_for_or_broken_syntax_are_refused() {
        for bad in [
            "",
            "   ",
            "-spam",
            "!!! ,,,",
            "\"open phrase",
            "*",
            "chat**",
            "-\"x y\"",
        ] {
            assert!(Query::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Query::parse(&"a ".repeat(MAX_TERMS + 1)).is_err());
        assert!(Query::parse(&"a".repeat(MAX_QUERY_BYTES + 1)).is_err());
        // A lone dash is punctuation, not an exclusion.
        assert_eq!(
            Query::parse("- hello").unwrap().all,
            [term(&["hello"], false)]
        );
    }

    #[test]
    fn snippets_mark_the_matches_and_escape_everything_else() {
        let query = Query::parse("world").unwrap();
        assert_eq!(
            snippet("<b>Hello</b> World & \"friends\"", &query),
            "&lt;b&gt;Hello&lt;/b&gt; <mark>World</mark> &amp; &quot;friends&quot;"
        );
        let query = Query::parse("\"new york\" caf*").unwrap();
        assert_eq!(
            snippet("I love New York's Cafés, not new yorkers", &query),
            "I love <mark>New</mark> <mark>York</mark>&#39;s <mark>Cafés</mark>, not new yorkers"
        );
    }

    #[test]
    fn more_occurrences_and_shorter_messages_score_higher() {
        let query = Query::parse("tomato").unwrap();
        let once = score("tomato", &query);
        assert!(score("tomato tomato", &query) > once);
        assert!(
            once > score(
                "a tomato among many other words of a longer message",
                &query
            )
        );
        assert_eq!(score("no match here", &query), 0.0);
        // Two terms matched beat one matched twice.
        let two = Query::parse("red tomato").unwrap();
        assert!(score("red tomato", &two) > score("tomato tomato", &two));
    }

    #[test]
    fn a_long_text_is_cut_around_its_first_match() {
        let text = format!("{} needle {}", "word ".repeat(50), "tail ".repeat(50));
        let got = snippet(&text, &Query::parse("needle").unwrap());
        assert!(got.starts_with('…') && got.ends_with('…'), "{got}");
        assert!(got.contains("<mark>needle</mark>"));
        assert_eq!(got.matches("word").count(), SNIPPET_BEFORE);
        assert_eq!(got.split_whitespace().count(), SNIPPET_WORDS);
    }
}
