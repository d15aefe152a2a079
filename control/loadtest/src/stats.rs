//! Accounting: every attempt ends exactly once, as up or as one named
//! failure; the `--json` summary, percentiles and the time series of the
//! report are all computed from the same attempt records.
use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its first child SA is installed.
    Up,
    /// A named failure: a notify type (`NO_PROPOSAL_CHOSEN`,
    /// `AUTHENTICATION_FAILED`, `TEMPORARY_FAILURE`, ...), `TIMEOUT`,
    /// `SEND_FAILED` or `INTERRUPTED` (the run was stopped first).
    Failed(&'static str),
}

/// How a tunnel that came up went away during the run, before the run's
/// own DELETEs (its attempt's outcome stays `Up`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// The gateway deleted its IKE SA, or its last child SA outside a
    /// rekey, with an authenticated DELETE (`deleted_by_gateway`).
    DeletedByGateway,
    /// A request of ours in its IKE SA (a DPD liveness check, a rekey) went
    /// unanswered through all the core's retransmissions (`dead_by_dpd`).
    DeadByDpd,
}

/// One attempt: when it started and how and when it ended (offsets from
/// the start of the run).
#[derive(Debug, Clone)]
pub struct Attempt {
    /// IKE_SA_INIT first sent.
    pub start: Duration,
    /// When and how it ended (`None` while in flight).
    pub end: Option<(Duration, Outcome)>,
    /// The first decrypted reply through the tunnel (with `--traffic`).
    pub first_reply: Option<Duration>,
    /// An attempt up whose tunnel went away during the run: when and how.
    pub gone: Option<(Duration, Gone)>,
}

/// All attempts of a run, plus rekeys and traffic counters.
#[derive(Debug, Default)]
pub struct Accounting {
    /// One per attempt, in start order.
    pub attempts: Vec<Attempt>,
    /// Completed child SA rekeys (offsets from the start).
    pub rekeys: Vec<Duration>,
    /// Probes that got no reply while a rekey of their tunnel was under way.
    pub lost_in_rekeys: u64,
    /// IKE requests the peers' cores resent for want of a response.
    pub retransmissions: u64,
    /// With `--fault`: its name (`silent`, `forget-sa`) and one record per
    /// faulted tunnel.
    pub fault: Option<(&'static str, Vec<Fault>)>,
    /// Tunnels up at the end whose DELETE (the run's own) was never
    /// answered by a response in their IKE SA.
    pub unanswered_deletes: u64,
}

/// One tunnel hit by `--fault` (offsets from the start of the run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The emulated peer.
    pub peer: usize,
    /// When the fault began.
    pub at: Duration,
    /// The gateway's first IKE message to a silent peer (its DPD).
    pub dpd: Option<Duration>,
    /// The first decrypted reply through a child SA made after the fault.
    pub recovered: Option<Duration>,
}

impl Accounting {
    /// Record a new attempt started at `at`; its index.
    pub fn start(&mut self, at: Duration) -> usize {
        self.attempts.push(Attempt {
            start: at,
            end: None,
            first_reply: None,
            gone: None,
        });
        self.attempts.len() - 1
    }

    /// End attempt `i` at `at` unless it has ended already (the first
    /// outcome counts; false if it had one).
    pub fn end(&mut self, i: usize, at: Duration, outcome: Outcome) -> bool {
        let a = &mut self.attempts[i];
        if a.end.is_some() {
            return false;
        }
        a.end = Some((at, outcome));
        true
    }

    /// Record that attempt `i` (up) went away at `at` as `how`, unless it
    /// went before (the first counts; false then, or if it was not up).
    pub fn gone(&mut self, i: usize, at: Duration, how: Gone) -> bool {
        let a = &mut self.attempts[i];
        if a.gone.is_some() || !matches!(a.end, Some((_, Outcome::Up))) {
            return false;
        }
        a.gone = Some((at, how));
        true
    }

    /// Tunnels that went away as `how`.
    pub fn gone_count(&self, how: Gone) -> u64 {
        self.attempts
            .iter()
            .filter(|a| a.gone.is_some_and(|g| g.1 == how))
            .count() as u64
    }

    /// Attempts not ended yet.
    pub fn in_flight(&self) -> usize {
        self.attempts.iter().filter(|a| a.end.is_none()).count()
    }

    /// Attempts up.
    pub fn up(&self) -> u64 {
        self.attempts
            .iter()
            .filter(|a| matches!(a.end, Some((_, Outcome::Up))))
            .count() as u64
    }

    /// Failures by name.
    pub fn failed(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for a in &self.attempts {
            if let Some((_, Outcome::Failed(n))) = &a.end {
                *m.entry((*n).to_string()).or_insert(0) += 1;
            }
        }
        m
    }

    /// Setup latencies (IKE_SA_INIT sent to child SA installed) of the
    /// attempts up, in seconds, sorted.
    pub fn setup_latencies(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .attempts
            .iter()
            .filter_map(|a| match &a.end {
                Some((t, Outcome::Up)) => Some((*t - a.start).as_secs_f64()),
                _ => None,
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// Time to first packet of each tunnel with a reply (IKE_SA_INIT sent
    /// to the first decrypted reply), milliseconds, sorted.
    pub fn ttfp_ms(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .attempts
            .iter()
            .filter_map(|a| a.first_reply.map(|r| (r - a.start).as_secs_f64() * 1000.0))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The setup phase: from the first attempt's start to the last
    /// attempt's end (zero without ended attempts).
    pub fn setup_span(&self) -> (Duration, Duration) {
        let first = self
            .attempts
            .iter()
            .map(|a| a.start)
            .min()
            .unwrap_or_default();
        let last = self
            .attempts
            .iter()
            .filter_map(|a| a.end.as_ref().map(|e| e.0))
            .max()
            .unwrap_or(first);
        (first, last.max(first))
    }

    /// Failover times (fault to recovery) of the tunnels that recovered,
    /// milliseconds, sorted; and the fault to the gateway's first DPD
    /// request likewise.
    pub fn failover_ms(&self) -> (Vec<f64>, Vec<f64>) {
        let Some((_, faults)) = &self.fault else {
            return (Vec::new(), Vec::new());
        };
        let ms = |f: &Fault, t: Option<Duration>| t.map(|t| (t - f.at).as_secs_f64() * 1000.0);
        let mut rec: Vec<f64> = faults.iter().filter_map(|f| ms(f, f.recovered)).collect();
        let mut dpd: Vec<f64> = faults.iter().filter_map(|f| ms(f, f.dpd)).collect();
        rec.sort_by(f64::total_cmp);
        dpd.sort_by(f64::total_cmp);
        (rec, dpd)
    }

    /// Per whole second from `from` (bucket k = [from + k s, from + k + 1 s)),
    /// how many attempts came up and how many failed, up to `to`.
    pub fn per_second(&self, from: Duration, to: Duration) -> Vec<(u64, u64)> {
        let n = (to.saturating_sub(from).as_secs_f64().ceil() as usize).max(1);
        let mut v = vec![(0u64, 0u64); n];
        for a in &self.attempts {
            if let Some((t, o)) = &a.end {
                let k = ((t.saturating_sub(from)).as_secs_f64() as usize).min(n - 1);
                match o {
                    Outcome::Up => v[k].0 += 1,
                    Outcome::Failed(_) => v[k].1 += 1,
                }
            }
        }
        v
    }
}

/// The nearest-rank percentile `p` (0 < p <= 100) of sorted `v`: the
/// smallest value with at least p % of the values at or below it.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// p50/p90/p99/max of a distribution, milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Quantiles {
    /// Of sorted `v`; `None` when empty.
    pub fn of(v: &[f64]) -> Option<Quantiles> {
        Some(Quantiles {
            p50: round3(percentile(v, 50.0)?),
            p90: round3(percentile(v, 90.0)?),
            p99: round3(percentile(v, 99.0)?),
            max: round3(*v.last()?),
        })
    }
}

/// Round to three decimals (what the JSON and the report print).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The `--json` summary; the field names are a contract (issue 21).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Tunnels asked for (`--tunnels`).
    pub tunnels: u64,
    /// Attempts started (IKE_SA_INIT sent).
    pub attempts: u64,
    /// Attempts whose first child SA came up.
    pub up: u64,
    /// The other attempts, by failure name; `up` + their sum = `attempts`.
    pub failed: BTreeMap<String, u64>,
    /// The setup phase: first IKE_SA_INIT sent to the last attempt's end.
    pub seconds: f64,
    /// `up` / `seconds`: sustained tunnels per second.
    pub tunnels_per_second: f64,
    /// The most tunnels up in one whole second of the setup phase (at
    /// least the sustained rate).
    pub peak_tunnels_per_second: f64,
    /// Time to first packet (with `--traffic`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttfp_ms: Option<Quantiles>,
    /// With `--traffic`: the tunnels with at least one decrypted reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnels_answered: Option<u64>,
    /// With `--traffic`: frames the AF_XDP sockets received that counted
    /// as no reply, by name (`no_peer`, `unknown_spi`, `bad_reply`, a
    /// framing drop reason, ...); empty when every one was a reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_other: Option<BTreeMap<String, u64>>,
    /// With --traffic: how often the next hop's MAC toward the gateway
    /// changed during the run (read from the kernel's neighbour table
    /// about once a second).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hop_changes: Option<u64>,
    /// Child SA rekeys completed.
    pub rekeys: u64,
    /// Rekeys per second over the hold phase (`--duration`).
    pub rekeys_per_second: f64,
    /// Probes lost while their tunnel was rekeying.
    pub lost_in_rekeys: u64,
    /// CPU time of this process (user + system).
    pub cpu_seconds: f64,
    /// IKE requests the peers' cores resent for want of a response (0 on
    /// a link that loses nothing).
    pub retransmissions: u64,
    /// Tunnels up whose IKE SA, or last child SA outside a rekey, the
    /// gateway deleted (an authenticated DELETE) during the run, before
    /// the run's own DELETEs.
    pub deleted_by_gateway: u64,
    /// Tunnels up whose IKE SA died during the run because a request of
    /// ours (a DPD liveness check, a rekey) went unanswered through all the
    /// core's retransmissions.
    pub dead_by_dpd: u64,
    /// Tunnels up at the end whose DELETE (one per IKE SA, resent after
    /// 0.5, 1 and 2 s) got no response in that IKE SA: the gateway no
    /// longer held it, or is gone.
    pub unanswered_deletes: u64,
    /// With `--fault`: how many tunnels it hit and how many recovered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverCounts>,
    /// With `--fault`: the Tunnel Failover Time of the tunnels that
    /// recovered (fault to the first reply through a new child SA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover_ms: Option<Quantiles>,
    /// With `--fault silent`: the fault to the gateway's first DPD request
    /// (of the silent tunnels that got one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpd_ms: Option<Quantiles>,
}

/// The `--json` `failover` object.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailoverCounts {
    /// `silent` or `forget-sa`.
    pub fault: String,
    /// Tunnels the fault hit.
    pub tunnels: u64,
    /// Of them, those that carried traffic again through a new child SA.
    pub recovered: u64,
    /// The others (`recovered` + `not_recovered` = `tunnels`).
    pub not_recovered: u64,
    /// Silent tunnels the gateway sent a DPD request (any IKE message) to.
    pub dpd_seen: u64,
}

impl Summary {
    /// The summary of `acc` for `tunnels` asked, a hold phase of `hold`,
    /// `cpu_seconds` used; `ttfp` with `--traffic`.
    pub fn of(
        acc: &Accounting,
        tunnels: u64,
        hold: Duration,
        cpu_seconds: f64,
        ttfp: bool,
    ) -> Summary {
        let up = acc.up();
        let (from, to) = acc.setup_span();
        let seconds = (to - from).as_secs_f64();
        let tps = if seconds > 0.0 {
            up as f64 / seconds
        } else {
            0.0
        };
        let whole = acc.per_second(from, to);
        // Only whole seconds count for the peak: a last partial second
        // would divide by a fraction of a second.
        let full = (seconds.floor() as usize).min(whole.len());
        let peak = whole[..full].iter().map(|b| b.0 as f64).fold(tps, f64::max);
        let rekeys = acc.rekeys.len() as u64;
        let h = hold.as_secs_f64();
        Summary {
            tunnels,
            attempts: acc.attempts.len() as u64,
            up,
            failed: acc.failed(),
            seconds: round3(seconds),
            tunnels_per_second: round3(tps),
            peak_tunnels_per_second: round3(peak),
            ttfp_ms: if ttfp {
                Quantiles::of(&acc.ttfp_ms())
            } else {
                None
            },
            tunnels_answered: ttfp.then(|| acc.ttfp_ms().len() as u64),
            traffic_other: None,
            next_hop_changes: None,
            rekeys,
            rekeys_per_second: if h > 0.0 {
                round3(rekeys as f64 / h)
            } else {
                0.0
            },
            lost_in_rekeys: acc.lost_in_rekeys,
            cpu_seconds: round3(cpu_seconds),
            retransmissions: acc.retransmissions,
            deleted_by_gateway: acc.gone_count(Gone::DeletedByGateway),
            dead_by_dpd: acc.gone_count(Gone::DeadByDpd),
            unanswered_deletes: acc.unanswered_deletes,
            failover: acc.fault.as_ref().map(|(name, f)| {
                let recovered = f.iter().filter(|x| x.recovered.is_some()).count() as u64;
                FailoverCounts {
                    fault: (*name).to_string(),
                    tunnels: f.len() as u64,
                    recovered,
                    not_recovered: f.len() as u64 - recovered,
                    dpd_seen: f.iter().filter(|x| x.dpd.is_some()).count() as u64,
                }
            }),
            failover_ms: acc
                .fault
                .as_ref()
                .and_then(|_| Quantiles::of(&acc.failover_ms().0)),
            dpd_ms: acc
                .fault
                .as_ref()
                .and_then(|_| Quantiles::of(&acc.failover_ms().1)),
        }
    }
}

/// CPU time of this process so far (user + system), seconds.
#[allow(unsafe_code)]
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn nearest_rank_percentiles() {
        // 1..=100: p50 = 50, p90 = 90, p99 = 99 (nearest rank).
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 90.0), Some(90.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        // Ten values: p99 is the largest, p50 the fifth.
        let v: Vec<f64> = (1..=10).map(|x| f64::from(x) * 1.5).collect();
        assert_eq!(percentile(&v, 50.0), Some(7.5));
        assert_eq!(percentile(&v, 90.0), Some(13.5));
        assert_eq!(percentile(&v, 99.0), Some(15.0));
        // One value is every percentile; none has none.
        assert_eq!(percentile(&[4.0], 1.0), Some(4.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(Quantiles::of(&[]), None);
        let q = Quantiles::of(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((q.p50, q.p90, q.p99, q.max), (2.0, 3.0, 3.0, 3.0));
    }

    #[test]
    fn every_attempt_ends_once() {
        let mut a = Accounting::default();
        let outcomes = [
            Outcome::Up,
            Outcome::Failed("NO_PROPOSAL_CHOSEN"),
            Outcome::Up,
            Outcome::Failed("TIMEOUT"),
            Outcome::Failed("NO_PROPOSAL_CHOSEN"),
        ];
        for (k, o) in outcomes.iter().enumerate() {
            let i = a.start(ms(100 * k as u64));
            assert!(a.end(i, ms(100 * k as u64 + 50), o.clone()));
            // A second outcome for the same attempt is refused.
            assert!(!a.end(i, ms(5000), Outcome::Failed("AUTHENTICATION_FAILED")));
        }
        a.start(ms(600));
        assert_eq!(a.in_flight(), 1);
        let s = Summary::of(&a, 6, Duration::ZERO, 0.0, false);
        assert_eq!(s.attempts, 6);
        assert_eq!(s.up, 2);
        assert_eq!(s.failed.get("NO_PROPOSAL_CHOSEN"), Some(&2));
        assert_eq!(s.failed.get("TIMEOUT"), Some(&1));
        // One still in flight: not yet equal.
        assert_eq!(s.up + s.failed.values().sum::<u64>() + 1, s.attempts);
        a.end(5, ms(700), Outcome::Failed("INTERRUPTED"));
        let s = Summary::of(&a, 6, Duration::ZERO, 0.0, false);
        assert_eq!(s.up + s.failed.values().sum::<u64>(), s.attempts);
        // Setup phase 0 to 0.7 s, two up: 2.857/s; no whole second, so the
        // peak is the sustained rate.
        assert_eq!(s.seconds, 0.7);
        assert_eq!(s.tunnels_per_second, 2.857);
        assert_eq!(s.peak_tunnels_per_second, 2.857);
        // The fields in the order.
        let text = serde_json::to_string(&s).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut keys: Vec<(usize, &str)> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| (text.find(&format!("\"{k}\":")).unwrap(), k.as_str()))
            .collect();
        keys.sort();
        let keys: Vec<&str> = keys.into_iter().map(|k| k.1).collect();
        assert_eq!(
            keys,
            [
                "tunnels",
                "attempts",
                "up",
                "failed",
                "seconds",
                "tunnels_per_second",
                "peak_tunnels_per_second",
                "rekeys",
                "rekeys_per_second",
                "lost_in_rekeys",
                "cpu_seconds",
                "retransmissions",
                "deleted_by_gateway",
                "dead_by_dpd",
                "unanswered_deletes"
            ]
        );
    }

    #[test]
    fn a_tunnel_goes_once_and_only_when_up() {
        let mut a = Accounting::default();
        for o in [Outcome::Up, Outcome::Up, Outcome::Failed("TIMEOUT")] {
            let i = a.start(ms(0));
            a.end(i, ms(10), o);
        }
        a.start(ms(20));
        assert!(a.gone(0, ms(100), Gone::DeletedByGateway));
        // Once: a later death does not count it again.
        assert!(!a.gone(0, ms(200), Gone::DeadByDpd));
        assert!(a.gone(1, ms(300), Gone::DeadByDpd));
        // Not up (failed, in flight): never gone.
        assert!(!a.gone(2, ms(300), Gone::DeletedByGateway));
        assert!(!a.gone(3, ms(300), Gone::DeletedByGateway));
        a.unanswered_deletes = 4;
        let s = Summary::of(&a, 4, Duration::ZERO, 0.0, false);
        assert_eq!(
            (s.deleted_by_gateway, s.dead_by_dpd, s.unanswered_deletes),
            (1, 1, 4)
        );
        // The attempts' outcomes are untouched.
        assert_eq!((s.up, s.failed.values().sum::<u64>()), (2, 1));
    }

    #[test]
    fn peak_is_the_busiest_whole_second() {
        let mut a = Accounting::default();
        // 1 up in second 0, 5 in second 1, 2 in second 2 (ends at 2.5 s).
        for t in [500, 1100, 1200, 1300, 1400, 1500, 2200, 2500] {
            let i = a.start(Duration::ZERO);
            a.end(i, ms(t), Outcome::Up);
        }
        assert_eq!(
            a.per_second(Duration::ZERO, ms(2500)),
            vec![(1, 0), (5, 0), (2, 0)]
        );
        let s = Summary::of(&a, 8, Duration::from_secs(2), 0.0, true);
        assert_eq!(s.tunnels_per_second, 3.2);
        assert_eq!(s.peak_tunnels_per_second, 5.0);
        // Traffic asked, no reply: no TTFP figures, no tunnel answered.
        assert_eq!(s.ttfp_ms, None);
        assert_eq!(s.tunnels_answered, Some(0));
    }
}
