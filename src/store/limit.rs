//! Bandwidth limits: `store.upload_limit` and `store.download_limit`.
//!
//! A limit is a list of rules, each a rate with an optional daily window in the
//! daemon's time zone: `"20MiB/s"`, or `["08:00-20:00 5MiB/s", "50MiB/s"]`. The first
//! rule whose window holds the current time applies; a rule without a window always
//! holds; when none holds, transfers are not limited. A window may cross midnight
//! (`"22:00-06:00"`).
//!
//! Pacing ([`Throttle`]): every transfer reserves a slot of `bytes / rate` on one
//! timeline shared by all jobs, and goes when its slot ends (a download whose size is
//! only known once it arrived pays after it). So over any stretch of a few packs the
//! bytes moved never exceed the rate; a single object still travels at the link's
//! speed. Nothing is saved up while idle, so a limit never allows a burst. A reload
//! sets the new rules and wakes every waiting transfer, which reserves again at the
//! new rate: a running job follows the new limit at once.

use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use chrono::NaiveTime;
use tokio::sync::Notify;
use tokio::time::Instant;

/// One rule: a rate, and the daily window in which it applies (all day if none).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RateRule {
    window: Option<(NaiveTime, NaiveTime)>,
    bytes_per_second: u64,
}

/// A limit's rules, in order; none: unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RateSchedule {
    rules: Vec<RateRule>,
}

impl RateSchedule {
    /// Parses the rules of a limit; a problem is one plain sentence.
    pub fn parse(rules: &[String]) -> Result<Self, String> {
        let rules = rules
            .iter()
            .map(|rule| parse_rule(rule))
            .collect::<Result<_, _>>()?;
        Ok(RateSchedule { rules })
    }

    /// The rate in force at `time` of day, in bytes per second; None: unlimited.
    pub fn rate_at(&self, time: NaiveTime) -> Option<u64> {
        self.rules
            .iter()
            .find(|rule| rule.window.is_none_or(|w| in_window(w, time)))
            .map(|rule| rule.bytes_per_second)
    }
}

fn parse_rule(text: &str) -> Result<RateRule, String> {
    let text = text.trim();
    let (window, rate) = match text.split_once(char::is_whitespace) {
        Some((first, rest)) if first.contains(':') => (Some(parse_window(first)?), rest.trim()),
        _ => (None, text),
    };
    let bad_rate = || {
        format!(
            "`{text}` is not a rate: expected a size per second such as 20MiB/s, optionally after a window such as 08:00-20:00"
        )
    };
    let size = rate.strip_suffix("/s").ok_or_else(bad_rate)?;
    let bytes_per_second = size
        .trim()
        .parse::<bytesize::ByteSize>()
        .map_err(|_| bad_rate())?
        .as_u64();
    if bytes_per_second == 0 {
        return Err(format!("`{text}`: a rate must be more than zero"));
    }
    Ok(RateRule {
        window,
        bytes_per_second,
    })
}

fn parse_window(text: &str) -> Result<(NaiveTime, NaiveTime), String> {
    let bad = || format!("`{text}` is not a window: expected HH:MM-HH:MM, such as 08:00-20:00");
    let (from, to) = text.split_once('-').ok_or_else(bad)?;
    let time = |t: &str| NaiveTime::parse_from_str(t, "%H:%M").map_err(|_| bad());
    let window = (time(from)?, time(to)?);
    if window.0 == window.1 {
        return Err(format!("`{text}` is an empty window"));
    }
    Ok(window)
}

fn in_window((from, to): (NaiveTime, NaiveTime), time: NaiveTime) -> bool {
    if from < to {
        from <= time && time < to
    } else {
        time >= from || time < to
    }
}

/// Paces transfers in one direction to the limit in force (see the module docs).
#[derive(Debug)]
pub struct Throttle {
    rules: RwLock<(RateSchedule, chrono_tz::Tz)>,
    /// When the last reserved slot ends.
    next: Mutex<Instant>,
    /// Woken when the rules change, so waiting transfers reserve again.
    changed: Notify,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            rules: RwLock::new((RateSchedule::default(), chrono_tz::UTC)),
            next: Mutex::new(Instant::now()),
            changed: Notify::new(),
        }
    }
}

impl Throttle {
    /// Puts new rules in force, for transfers waiting now as for later ones.
    pub fn set(&self, schedule: RateSchedule, timezone: chrono_tz::Tz) {
        *self.rules.write().unwrap_or_else(PoisonError::into_inner) = (schedule, timezone);
        *self.next.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.changed.notify_waiters();
    }

    /// The rate in force now, in bytes per second; None: unlimited.
    pub fn rate_now(&self) -> Option<u64> {
        let rules = self.rules.read().unwrap_or_else(PoisonError::into_inner);
        let now = chrono::Utc::now().with_timezone(&rules.1).time();
        rules.0.rate_at(now)
    }

    /// Waits until `bytes` may move under the limit in force.
    pub async fn pass(&self, bytes: u64) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let Some(slot_end) = self.reserve(bytes) else {
                return;
            };
            tokio::select! {
                () = tokio::time::sleep_until(slot_end) => return,
                () = changed => continue,
            }
        }
    }

    /// Reserves the next slot for `bytes`; None when nothing limits it.
    fn reserve(&self, bytes: u64) -> Option<Instant> {
        let rate = self.rate_now()?;
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let start = (*next).max(Instant::now());
        *next = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
        Some(*next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(rules: &[&str]) -> Result<RateSchedule, String> {
        RateSchedule::parse(&rules.iter().map(|r| r.to_string()).collect::<Vec<_>>())
    }

    fn at(text: &str) -> NaiveTime {
        NaiveTime::parse_from_str(text, "%H:%M").unwrap()
    }

    #[test]
    fn the_first_rule_whose_window_holds_applies() {
        let limit = schedule(&["08:00-20:00 5MiB/s", "22:00-06:00 1 MiB/s", "50MB/s"]).unwrap();
        assert_eq!(limit.rate_at(at("08:00")), Some(5 << 20));
        assert_eq!(limit.rate_at(at("19:59")), Some(5 << 20));
        assert_eq!(limit.rate_at(at("20:00")), Some(50_000_000));
        assert_eq!(limit.rate_at(at("23:30")), Some(1 << 20));
        assert_eq!(limit.rate_at(at("05:59")), Some(1 << 20));
        let daytime = schedule(&["08:00-20:00 5MiB/s"]).unwrap();
        assert_eq!(
            daytime.rate_at(at("21:00")),
            None,
            "no rule holds: unlimited"
        );
        assert_eq!(schedule(&[]).unwrap().rate_at(at("12:00")), None);
    }

    #[test]
    fn bad_rules_are_named() {
        for (rule, expected) in [
            ("20MiB", "is not a rate"),
            ("fast/s", "is not a rate"),
            ("0MiB/s", "must be more than zero"),
            ("8:00-25:00 1MiB/s", "is not a window"),
            ("08:00-08:00 1MiB/s", "empty window"),
            ("08:00 1MiB/s", "is not a window"),
        ] {
            let error = schedule(&[rule]).unwrap_err();
            assert!(error.contains(expected), "{rule}: {error}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transfers_are_paced_to_the_rate() {
        let throttle = Throttle::default();
        throttle.set(schedule(&["1MiB/s"]).unwrap(), chrono_tz::UTC);
        let started = Instant::now();
        for _ in 0..4 {
            throttle.pass(512 << 10).await;
        }
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_transfer_follows_a_new_limit_at_once() {
        let throttle = std::sync::Arc::new(Throttle::default());
        throttle.set(schedule(&["1MiB/s"]).unwrap(), chrono_tz::UTC);
        let started = Instant::now();
        let waiting = tokio::spawn({
            let throttle = throttle.clone();
            async move { throttle.pass(100 << 20).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        throttle.set(schedule(&["100MiB/s"]).unwrap(), chrono_tz::UTC);
        waiting.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        throttle.set(RateSchedule::default(), chrono_tz::UTC);
        let unlimited = Instant::now();
        throttle.pass(1 << 30).await;
        assert_eq!(unlimited.elapsed(), Duration::ZERO);
    }
}
