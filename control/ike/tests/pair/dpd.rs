//! DPD's resend schedule (`PeerConfig::dpd_retry`, IOS's `crypto ikev2
//! dpd INTERVAL RETRY on-demand`): with a retry interval the liveness
//! check is resent every interval and the peer declared dead one interval
//! after the last resend; without, `timers::RETRANSMIT`'s schedule. Times
//! are the mock clock's, exact.

use super::*;

/// A (responder, DPD every 10 s, `retry`) and B (initiator, no DPD) up;
/// then B goes silent. Returns the offsets of A's sends after B went
/// silent from the first of them (the liveness check), the offset of the
/// "peer dead" log line from it, and the line.
fn silent_peer(retry: Option<u64>) -> (Vec<Duration>, Duration, String) {
    let ike = ["aes256gcm16-prfsha256-x25519"];
    let mut a = cfg(A, B, &ike, &["aes256gcm16"], false);
    a.dpd = Some(Duration::from_secs(10));
    a.dpd_retry = retry.map(Duration::from_secs);
    let mut n = Net::new(a, cfg(B, A, &ike, &["aes256gcm16"], true));
    n.run_for(Duration::from_secs(3));
    assert!(n.ready(0) && n.ready(1));
    // A live peer answers the checks: with the retry interval too, nothing
    // is resent and the SA stays.
    n.run_for(Duration::from_secs(40));
    assert!(n.ready(0), "{}", n.logs(0));
    assert_eq!(n.nodes[0].ike.stats().retransmissions, 0);
    n.drop = Box::new(|side, _, _| side == 1);
    let (silent, sent) = (n.now, n.nodes[0].dp.sends.len());
    n.run_for(Duration::from_secs(60));
    assert!(!n.ready(0), "{}", n.logs(0));
    let sends = &n.nodes[0].dp.sends[sent..];
    let first = sends[0];
    assert!(first > silent && first <= silent + Duration::from_secs(10));
    let dp = &n.nodes[0].dp;
    let k = dp
        .logs
        .iter()
        .position(|l| l.contains("peer dead"))
        .unwrap_or_else(|| panic!("no peer dead line: {}", n.logs(0)));
    (
        sends.iter().map(|t| *t - first).collect(),
        dp.log_times[k] - first,
        dp.logs[k].clone(),
    )
}

fn secs(s: &[u64]) -> Vec<Duration> {
    s.iter().map(|&s| Duration::from_secs(s)).collect()
}

/// `retry` for A: its sends after B went silent (from the first, in s),
/// and the peer declared dead `dead` s after the first, as the line says.
fn assert_schedule(retry: Option<u64>, sends: &[u64], dead: u64) {
    let (got, at, line) = silent_peer(retry);
    assert_eq!(got, secs(sends), "{line}");
    assert_eq!(at, Duration::from_secs(dead), "{line}");
    let says = format!(
        "peer dead: no answer after 4 retransmissions ({dead} s); deleting the IKE SA and its child SAs"
    );
    assert!(line.contains(&says), "{line}");
}

/// `dpd_retry` 2 s: resent at +2, +4, +6, +8 s, dead at +10 s, and the
/// log line says so.
#[test]
fn dpd_retry_interval_resends_every_interval_and_gives_up_one_later() {
    assert_schedule(Some(2), &[0, 2, 4, 6, 8], 10);
}

/// Without `dpd_retry`: the default schedule, resent at +1, +3, +7, +15
/// s (intervals 1, 2, 4, 8), dead 16 s after the last: +31 s.
#[test]
fn dpd_without_retry_interval_keeps_the_default_schedule() {
    assert_schedule(None, &[0, 1, 3, 7, 15], 31);
}

/// Only liveness checks use the retry interval: an IKE_SA_INIT that goes
/// unanswered by a tunnel with `dpd_retry` 2 s keeps the default schedule.
#[test]
fn dpd_retry_interval_leaves_other_requests_on_the_default_schedule() {
    let ike = ["aes256gcm16-prfsha256-x25519"];
    let mut a = cfg(A, B, &ike, &["aes256gcm16"], true);
    a.dpd = Some(Duration::from_secs(10));
    a.dpd_retry = Some(Duration::from_secs(2));
    let mut n = Net::new(a, cfg(B, A, &ike, &["aes256gcm16"], false));
    n.drop = Box::new(|side, _, _| side == 1);
    n.run_for(Duration::from_secs(31) + Duration::from_millis(500));
    let first = n.nodes[0].dp.sends[0];
    let sends: Vec<Duration> = n.nodes[0].dp.sends.iter().map(|t| *t - first).collect();
    assert_eq!(sends, secs(&[0, 1, 3, 7, 15]), "{}", n.logs(0));
    assert!(
        n.logs(0)
            .contains("no answer to IKE_SA_INIT after 4 retransmissions (31 s)"),
        "{}",
        n.logs(0)
    );
}
