#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| xdpsec_fuzz::omp::controller(data));
