//! The typed events (`Action::Event`): exactly one per occurrence, next
//! to its log line, naming the tunnel and the peer: a peer's DELETE of
//! the IKE SA and of the last child SA, a peer dead to DPD, an
//! authentication failure on both sides, NO_PROPOSAL_CHOSEN, no answer
//! to IKE_SA_INIT.

use xdpsec_ike::{Failure, Removal};

use super::*;

/// How many of `side`'s events are `e` (each naming tunnel 7 and the
/// other node's address; asserted).
fn count(n: &Net, side: Side, e: TunnelEvent) -> usize {
    let other = n.nodes[1 - side].addr;
    for (tunnel, peer, _) in &n.nodes[side].dp.events {
        assert_eq!((*tunnel, *peer), (7, other));
    }
    n.nodes[side].dp.events.iter().filter(|x| x.2 == e).count()
}

const IKE_DELETED: TunnelEvent = TunnelEvent::Removed(Removal::DeletedByPeer { ike: true });
const CHILD_DELETED: TunnelEvent = TunnelEvent::Removed(Removal::DeletedByPeer { ike: false });
const DEAD: TunnelEvent = TunnelEvent::Removed(Removal::DeadPeer);

const IKE: &str = "aes256gcm16-prfsha256-x25519";

/// A's and B's tunnels (IKE proposal `b_ike` at B); `a_initiates`, or B.
fn cfgs(a_initiates: bool, b_ike: &str) -> (PeerConfig, PeerConfig) {
    (
        cfg(A, B, &[IKE], &["aes256gcm16"], a_initiates),
        cfg(B, A, &[b_ike], &["aes256gcm16"], !a_initiates),
    )
}

/// Established, then B's command `c` (given A's address) makes A see
/// exactly one event, `want` (its log line saying `line`); B none.
fn one_delete(c: fn(IpAddr) -> Command, want: TunnelEvent, line: &str) {
    let mut n = established(IKE, "aes256gcm16");
    assert!(n.nodes[0].dp.events.is_empty() && n.nodes[1].dp.events.is_empty());
    n.check_mbb = false;
    let a = n.nodes[0].addr;
    n.command(1, c(a));
    n.run_for(Duration::from_secs(10));
    assert!(n.ready(0) && n.ready(1), "{}", n.logs(0));
    assert!(n.logs(0).contains(line), "{}", n.logs(0));
    assert_eq!(count(&n, 0, want), 1, "{:?}", n.nodes[0].dp.events);
    assert_eq!(n.nodes[0].dp.events.len(), 1, "{:?}", n.nodes[0].dp.events);
    // The side that deleted was told nothing.
    let b = &n.nodes[1].dp.events;
    assert!(b.is_empty(), "{b:?}");
}

#[test]
fn peer_delete_of_the_ike_sa_is_one_event() {
    one_delete(
        |_| Command::ClearIkeSas(None),
        IKE_DELETED,
        "peer deleted the IKE SA",
    );
}

#[test]
fn peer_delete_of_the_last_child_sa_is_one_event() {
    one_delete(
        Command::ClearChildSas,
        CHILD_DELETED,
        "peer deleted child SA",
    );
}

#[test]
fn dpd_death_is_one_event() {
    let (mut a, b) = cfgs(false, IKE);
    a.dpd = Some(Duration::from_secs(10));
    let mut n = Net::new(a, b);
    n.run_for(Duration::from_secs(3));
    assert!(n.ready(0) && n.ready(1));
    n.run_for(Duration::from_secs(30));
    let a = &n.nodes[0].dp.events;
    assert!(a.is_empty(), "{a:?}");
    // B goes silent: A's DPD gives up (bounded: 10 minutes).
    n.drop = Box::new(|side, _, _| side == 1);
    for _ in 0..600 {
        if !n.ready(0) {
            break;
        }
        n.run_for(Duration::from_secs(1));
    }
    assert!(!n.ready(0));
    assert!(n.logs(0).contains("peer dead: no answer"), "{}", n.logs(0));
    assert_eq!(count(&n, 0, DEAD), 1, "{:?}", n.nodes[0].dp.events);
    assert_eq!(count(&n, 0, IKE_DELETED) + count(&n, 0, CHILD_DELETED), 0);
}

#[test]
fn authentication_failure_is_one_event_on_each_side() {
    let (a, mut b) = cfgs(true, IKE);
    b.psk = Zeroizing::new(b"another psk".to_vec());
    let mut n = Net::new(a, b);
    n.run_for(Duration::from_secs(5));
    assert!(!n.ready(0) && !n.ready(1));
    let auth = TunnelEvent::Failure(Failure::Authentication);
    for side in [0, 1] {
        assert_eq!(count(&n, side, auth), 1, "{:?}", n.nodes[side].dp.events);
        assert_eq!(n.nodes[side].dp.events.len(), 1);
    }
    assert_eq!(Failure::Authentication.name(), "AUTHENTICATION_FAILED");
}

#[test]
fn no_proposal_chosen_is_one_event() {
    let (a, b) = cfgs(true, "aes256-sha256-ecp256");
    let mut n = Net::new(a, b);
    n.run_for(Duration::from_secs(5));
    assert!(!n.ready(0) && !n.ready(1));
    let refused = TunnelEvent::Failure(Failure::Refused { notify: 14 });
    assert_eq!(count(&n, 0, refused), 1, "{:?}", n.nodes[0].dp.events);
    assert_eq!(n.nodes[0].dp.events.len(), 1);
    // The responder refused; it failed nothing of its own.
    assert!(
        n.nodes[1].dp.events.is_empty(),
        "{:?}",
        n.nodes[1].dp.events
    );
    assert_eq!(Failure::Refused { notify: 14 }.name(), "NO_PROPOSAL_CHOSEN");
    assert_eq!(Failure::Refused { notify: 38 }.name(), "TS_UNACCEPTABLE");
    assert_eq!(Failure::Refused { notify: 0 }.name(), "OTHER_ERROR_NOTIFY");
}

#[test]
fn no_answer_to_ike_sa_init_is_one_event() {
    let mut n = pair(&[IKE], &["aes256gcm16"]);
    n.drop = Box::new(|_, _, _| true);
    // Given up after 31 s; the next attempt (36 s) is not given up yet.
    n.run_for(Duration::from_secs(30));
    assert!(
        n.nodes[0].dp.events.is_empty(),
        "{:?}",
        n.nodes[0].dp.events
    );
    n.run_for(Duration::from_secs(10));
    assert!(
        n.logs(0).contains("no answer to IKE_SA_INIT"),
        "{}",
        n.logs(0)
    );
    let none = TunnelEvent::Failure(Failure::NoAnswer);
    assert_eq!(count(&n, 0, none), 1, "{:?}", n.nodes[0].dp.events);
    assert_eq!(n.nodes[0].dp.events.len(), 1);
    assert_eq!(Failure::NoAnswer.name(), "TIMEOUT");
}
