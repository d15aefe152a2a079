//! Benchmarks for `xdpsec-datapath` live in `benches/`; run them with
//! `cargo bench -p xdpsec-benches`. This library is empty on purpose.
