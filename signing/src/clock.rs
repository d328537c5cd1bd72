//! Expiry checks against a *trusted* "now" under an explicit enforcement mode.
//!
//! Invariant: the caller supplies the trusted time (the appliance uses the later of its clock and
//! the time floor its registry keeps, `airlock_updater::Updater::now`); this module never reads
//! the clock itself,
//! and `warn`/`grace` outcomes are returned as warnings, never silently dropped.

use airlock_config::ExpiryEnforcement;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// The time and policy expiry checks run under.
#[derive(Debug, Clone, Copy)]
pub struct ExpiryCheck {
    /// Trusted "now".
    pub now: OffsetDateTime,
    /// How expiry is enforced.
    pub enforcement: ExpiryEnforcement,
    /// Grace window for [`ExpiryEnforcement::Grace`].
    pub grace: std::time::Duration,
    /// The latest signed issue time accepted (the local clock plus the allowed skew): a bundle
    /// issued later is refused, so no signature can push the appliance's trusted time far
    /// ahead. `None`: no bound (release-side verification).
    pub latest_issue: Option<OffsetDateTime>,
}

/// Formats a time as RFC 3339 (UTC).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

impl ExpiryCheck {
    /// Strict checks at the system clock: what `airlock-sign bundle verify` uses by default.
    pub fn strict_now() -> Self {
        ExpiryCheck {
            now: OffsetDateTime::now_utc(),
            enforcement: ExpiryEnforcement::Strict,
            grace: std::time::Duration::ZERO,
            latest_issue: None,
        }
    }

    /// Refuses a signed issue time past [`ExpiryCheck::latest_issue`].
    pub fn check_issued(&self, what: &str, issued: OffsetDateTime) -> Result<()> {
        match self.latest_issue {
            Some(latest) if issued > latest => Err(Error::IssuedInTheFuture {
                what: what.to_string(),
                issued_at: rfc3339(issued),
                latest: rfc3339(latest),
            }),
            _ => Ok(()),
        }
    }

    /// Checks `expires` for `what`. `Ok(Some(warning))` when expired but tolerated.
    pub fn check(&self, what: &str, expires: OffsetDateTime) -> Result<Option<String>> {
        if expires >= self.now {
            return Ok(None);
        }
        let expired = || Error::Expired {
            what: what.to_string(),
            expired_at: rfc3339(expires),
            now: rfc3339(self.now),
        };
        match self.enforcement {
            ExpiryEnforcement::Strict => Err(expired()),
            ExpiryEnforcement::Grace => {
                let grace = time::Duration::try_from(self.grace).unwrap_or(time::Duration::MAX);
                if expires
                    .checked_add(grace)
                    .is_some_and(|end| end >= self.now)
                {
                    Ok(Some(format!(
                        "{} (accepted inside the grace window)",
                        expired()
                    )))
                } else {
                    Err(expired())
                }
            }
            ExpiryEnforcement::Warn => Ok(Some(format!(
                "{} (accepted: enforcement is warn)",
                expired()
            ))),
        }
    }
}
