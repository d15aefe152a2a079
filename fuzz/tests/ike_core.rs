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
