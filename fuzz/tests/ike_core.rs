//! Findings of the ike_core fuzz target, as named scripts (their crash
//! inputs are in fuzz/corpus/ike_core too).

use xdpsec_fuzz::ike::{self, op};

#[test]
fn a_child_response_without_a_nonce_gives_the_spi_back() {
    // IKE_SA_INIT, IKE_AUTH (one child), the core rekeys that child, the
    // script answers the CREATE_CHILD_SA with no payloads at all.
    let script = [op(1, 0), op(2, 0), op(10, 0x80), op(4, 0), 0];
    let core = ike::play(&script);
    let f = core.footprint();
    // Tunnel1's IKE SA with its child, and Tunnel2's attempt in flight
    // with the SPI for its first child; the rekey's SPI is back.
    assert_eq!((f.ike_sas, f.child_sas, f.spis), (2, 1, 2), "{f:?}");
}

#[test]
fn a_peer_asking_for_child_after_child_is_refused_past_the_limit() {
    // Found by the ike_core fuzz target: 33 CREATE_CHILD_SA requests for
    // new children made 33 inbound SAs. IKE_SA_INIT, IKE_AUTH, then 12
    // requests from template 3 (a new child).
    let mut script = vec![op(1, 0), op(2, 0)];
    for _ in 0..12 {
        script.extend([op(3, 0), 3]);
    }
    let f = ike::play(&script).footprint();
    assert_eq!(f.child_sas, xdpsec_ike::timers::MAX_CHILD_SAS, "{f:?}");
}

#[test]
fn a_peer_authenticating_again_and_again_replaces_its_oldest_ike_sa() {
    // IKE_SA_INIT and IKE_AUTH 8 times, without INITIAL_CONTACT.
    let script: Vec<u8> = (0..8).flat_map(|_| [op(1, 0), op(2, 0)]).collect();
    let core = ike::play(&script);
    let f = core.footprint();
    // Tunnel2's attempt besides.
    assert_eq!(
        f.ike_sas,
        xdpsec_ike::timers::MAX_IKE_SAS_PER_PEER + 1,
        "{f:?}"
    );
    assert_eq!(
        f.child_sas,
        xdpsec_ike::timers::MAX_IKE_SAS_PER_PEER,
        "{f:?}"
    );
}

#[test]
fn a_child_made_on_the_old_ike_sa_of_a_rekey_goes_with_it() {
    // Found by the ike_core fuzz target: the old IKE SA of a rekey was
    // forgotten on the peer's DELETE as if it had no children, but the
    // peer had made one on it after the rekey: its inbound SA stayed in
    // the datapath and its SPI in the core. IKE_SA_INIT, IKE_AUTH, an IKE
    // rekey (template 5; the script stays on the old SA), a new child
    // (template 3) on the old SA, then its DELETE (template 2).
    let script = [op(1, 0), op(2, 0), op(3, 0), 5, op(3, 0), 3, op(3, 0), 2];
    let core = ike::play(&script);
    let f = core.footprint();
    // The new IKE SA with the first child, Tunnel2's attempt with its SPI.
    assert_eq!((f.ike_sas, f.child_sas, f.spis), (2, 1, 2), "{f:?}");
}

#[test]
fn clear_crypto_sa_repeated_towards_a_silent_peer_queues_one_new_child() {
    // Found by the ike_core fuzz target: each `clear crypto sa peer` queued
    // one more new child while the peer did not answer. IKE_SA_INIT,
    // IKE_AUTH, then the command 20 times (the script never answers).
    let mut script = vec![op(1, 0), op(2, 0)];
    for _ in 0..20 {
        script.extend([op(9, 0), 0]);
    }
    let f = ike::play(&script).footprint();
    // The DELETE in flight, one new child queued behind it.
    assert!(f.queued <= 2, "{f:?}");
}

#[test]
fn work_for_a_silent_peer_does_not_pile_up() {
    // Found by the ike_core fuzz target: children expiring while the peer
    // answered nothing queued a DELETE and a new child each, without end
    // as the peer made new ones. IKE_SA_INIT, IKE_AUTH, then 3 rounds of 7
    // new children (template 3) and a clock step past their lifetime
    // (10 min: 9,400 x 64 ms) with its timer; the script never answers.
    let mut script = vec![op(1, 0), op(2, 0)];
    for _ in 0..3 {
        for _ in 0..7 {
            script.extend([op(3, 0), 3]);
        }
        script.extend([op(8, 0), 0x24, 0xb8, op(7, 0)]);
    }
    let f = ike::play(&script).footprint();
    // One DELETE (of every expired child) and one new child queued.
    assert!(f.queued <= 2, "{f:?}");
}
