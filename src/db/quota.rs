//! [`Quota`]: the per-user storage limits an operator may set, and the one check of them.
//! The check runs inside the write transaction that would pass a limit, on the one
//! writer, so racing writes cannot together go past it.

use super::{Error, QuotaExceeded, Result};

/// Per-user storage limits; both off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    /// Most messages a user may keep; `None`: no limit.
    pub max_messages: Option<u64>,
    /// Most bytes of message text (UTF-8) a user may keep; `None`: no limit.
    pub max_bytes: Option<u64>,
}

impl Quota {
    /// Whether any limit is set.
    pub(super) fn is_set(&self) -> bool {
        self.max_messages.is_some() || self.max_bytes.is_some()
    }

    /// Whether a user who keeps `stored` (messages, bytes) may add `adding`.
    pub(super) fn admits(&self, stored: (i64, i64), adding: (usize, usize)) -> Result<()> {
        let over = |limit: Option<u64>, have: i64, more: usize| {
            let total = u64::try_from(have)
                .unwrap_or(0)
                .saturating_add(u64::try_from(more).unwrap_or(u64::MAX));
            limit.filter(|&limit| total > limit)
        };
        if let Some(limit) = over(self.max_messages, stored.0, adding.0) {
            return Err(Error::QuotaExceeded(QuotaExceeded::Messages(limit)));
        }
        if let Some(limit) = over(self.max_bytes, stored.1, adding.1) {
            return Err(Error::QuotaExceeded(QuotaExceeded::Bytes(limit)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_may_fill_the_quota_exactly_but_not_pass_it() {
        let quota = Quota {
            max_messages: Some(10),
            max_bytes: Some(100),
        };
        let cases = [
            ((0, 0), (10, 100), None, "an empty account filled exactly"),
            ((9, 99), (1, 1), None, "the last message and byte"),
            (
                (9, 0),
                (2, 1),
                Some(QuotaExceeded::Messages(10)),
                "one message too many",
            ),
            (
                (0, 99),
                (1, 2),
                Some(QuotaExceeded::Bytes(100)),
                "one byte too many",
            ),
            ((10, 100), (0, 0), None, "a full account adding nothing"),
            (
                (i64::MAX, 0),
                (usize::MAX, 0),
                Some(QuotaExceeded::Messages(10)),
                "no overflow",
            ),
        ];
        for (stored, adding, refused, case) in cases {
            let outcome = quota.admits(stored, adding);
            match refused {
                None => assert!(outcome.is_ok(), "{case}: {outcome:?}"),
                Some(which) => assert!(
                    matches!(outcome, Err(Error::QuotaExceeded(w)) if w == which),
                    "{case}: {outcome:?}"
                ),
            }
        }
    }

    #[test]
    fn without_limits_nothing_is_checked_or_refused() {
        let quota = Quota::default();
        assert!(!quota.is_set());
        assert!(
            quota
                .admits((i64::MAX, i64::MAX), (usize::MAX, usize::MAX))
                .is_ok()
        );
    }
}
