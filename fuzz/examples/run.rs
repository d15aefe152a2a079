//! Runs one fuzz target over input files (to read a crash's story with
//! `XDPSEC_FUZZ_TRACE=1`): `cargo run -p xdpsec-fuzz --example run --
//! TARGET FILE...`.

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().expect("usage: run TARGET FILE...");
    let body = xdpsec_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name}"))
        .1;
    for f in args {
        let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
        body(&data);
        println!("{f}: ok");
    }
}
