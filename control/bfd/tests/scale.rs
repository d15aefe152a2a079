//! Cost of many sessions in one core: two cores with N sessions each at a
//! 1 s hello, 60 simulated seconds. Ignored by default (run with
//! `cargo test --release -p xdpsec-bfd --test scale -- --ignored --nocapture`).

mod common;

use std::time::{Duration, Instant};

use common::{Net, cfg};

#[test]
#[ignore]
fn many_sessions_cost() {
    for n_sessions in [100u64, 1000] {
        let mut n = Net::new(2);
        for i in 0..n_sessions {
            n.link((0, i), (1, i), cfg(1000, 7), cfg(1000, 7));
        }
        let start = Instant::now();
        n.run_until(Duration::from_secs(60));
        let wall = start.elapsed();
        let packets = n.events.len();
        assert!((0..n_sessions).all(|i| n.cores[0].is_up(i)));
        println!(
            "{n_sessions} sessions x2 cores, 60 s simulated: {packets} events in {wall:?} ({:.2} us/event)",
            wall.as_secs_f64() * 1e6 / packets as f64
        );
    }
}
