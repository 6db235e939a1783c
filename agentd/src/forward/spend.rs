//! The per-agent spend limit: model requests and tokens (input + output,
//! as the answers report them) per fixed window. Pure: the proxy asks
//! [`Ledger::admit`] before it forwards a request and [`Ledger::charge`]s
//! the tokens an answer reports; time comes in as an argument.
//!
//! Fixed windows (aligned to multiples of the window length) keep the
//! state one counter pair per agent. A request is admitted while both
//! counts are under their limits; the answer that crosses the token limit
//! still arrives (its size is unknown beforehand), the next request is
//! refused.
use std::collections::HashMap;

pub use crate::config::SpendConfig;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpendError {
    /// The window's request count is used up.
    #[error("{who} sent {used} model requests in this {window_secs}-second window (limit {limit}); the window ends in {retry_after_secs} s")]
    Requests {
        /// The agent (or caller) charged.
        who: String,
        /// Requests so far.
        used: u64,
        /// The limit.
        limit: u64,
        /// Window length.
        window_secs: u64,
        /// Seconds until the window ends.
        retry_after_secs: u64,
    },
    /// The window's tokens are used up.
    #[error("{who} spent {used} tokens in this {window_secs}-second window (limit {limit}); the window ends in {retry_after_secs} s")]
    Tokens {
        /// The agent (or caller) charged.
        who: String,
        /// Tokens so far.
        used: u64,
        /// The limit.
        limit: u64,
        /// Window length.
        window_secs: u64,
        /// Seconds until the window ends.
        retry_after_secs: u64,
    },
}

impl SpendError {
    /// Seconds until the window ends (`retry-after`).
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            SpendError::Requests {
                retry_after_secs, ..
            }
            | SpendError::Tokens {
                retry_after_secs, ..
            } => *retry_after_secs,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    start: u64,
    requests: u64,
    tokens: u64,
}

/// Counts per agent in the current window.
#[derive(Debug, Default)]
pub struct Ledger {
    config: SpendConfig,
    by_agent: HashMap<String, Window>,
}

impl Ledger {
    /// A ledger enforcing `config`.
    pub fn new(config: SpendConfig) -> Self {
        Self {
            config,
            by_agent: HashMap::new(),
        }
    }

    /// Whether any limit is set.
    pub fn enabled(&self) -> bool {
        self.config.max_requests > 0 || self.config.max_tokens > 0
    }

    fn window(&mut self, who: &str, now: u64) -> (&mut Window, u64) {
        let len = self.config.window_secs.max(1);
        let start = now - now % len;
        let w = self.by_agent.entry(who.to_owned()).or_default();
        if w.start != start {
            *w = Window {
                start,
                ..Window::default()
            };
        }
        (w, start + len - now)
    }

    /// Admits one request of `who` at `now` (unix seconds) and counts it,
    /// or says which limit it hit.
    pub fn admit(&mut self, who: &str, now: u64) -> Result<(), SpendError> {
        if !self.enabled() {
            return Ok(());
        }
        let SpendConfig {
            window_secs,
            max_requests,
            max_tokens,
        } = self.config;
        // Old windows of agents that went quiet are dropped now and then.
        if self.by_agent.len() > 4096 {
            let len = window_secs.max(1);
            let current = now - now % len;
            self.by_agent.retain(|_, w| w.start == current);
        }
        let (w, left) = self.window(who, now);
        if max_requests > 0 && w.requests >= max_requests {
            return Err(SpendError::Requests {
                who: who.to_owned(),
                used: w.requests,
                limit: max_requests,
                window_secs,
                retry_after_secs: left,
            });
        }
        if max_tokens > 0 && w.tokens >= max_tokens {
            return Err(SpendError::Tokens {
                who: who.to_owned(),
                used: w.tokens,
                limit: max_tokens,
                window_secs,
                retry_after_secs: left,
            });
        }
        w.requests += 1;
        Ok(())
    }

    /// Adds the tokens an answer reported.
    pub fn charge(&mut self, who: &str, now: u64, tokens: u64) {
        if !self.enabled() || tokens == 0 {
            return;
        }
        let (w, _) = self.window(who, now);
        w.tokens = w.tokens.saturating_add(tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_agent_and_window() {
        let mut l = Ledger::new(SpendConfig {
            window_secs: 60,
            max_requests: 2,
            max_tokens: 0,
        });
        assert!(l.admit("a", 120).is_ok());
        assert!(l.admit("a", 130).is_ok());
        let e = l.admit("a", 150).unwrap_err();
        assert!(matches!(
            e,
            SpendError::Requests {
                used: 2,
                limit: 2,
                ..
            }
        ));
        assert_eq!(e.retry_after_secs(), 30);
        // Another agent has its own count; the next window starts afresh.
        assert!(l.admit("b", 150).is_ok());
        assert!(l.admit("a", 180).is_ok());
    }

    #[test]
    fn tokens_are_charged_after_the_answer() {
        let mut l = Ledger::new(SpendConfig {
            window_secs: 3600,
            max_requests: 0,
            max_tokens: 100,
        });
        assert!(l.admit("a", 10).is_ok());
        l.charge("a", 11, 99);
        assert!(l.admit("a", 12).is_ok());
        l.charge("a", 13, 5);
        assert!(matches!(
            l.admit("a", 14),
            Err(SpendError::Tokens { used: 104, .. })
        ));
        assert!(l.admit("a", 3600).is_ok());
    }

    #[test]
    fn no_limits_admit_everything() {
        let mut l = Ledger::new(SpendConfig::default());
        for t in 0..1000 {
            assert!(l.admit("a", t).is_ok());
        }
        assert!(l.by_agent.is_empty());
    }
}
