//! Builds the XDP program (ebpf/xdp) for bpfel-unknown-none and hands its
//! object to the loader through `OUT_DIR`.
//!
//! The eBPF crate is its own workspace built into `target/ebpf`, shared by
//! every profile of this workspace (build, test, clippy), so `core` for the
//! BPF target is compiled once, not once per target directory.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    // control/platform: the workspace root is two levels up.
    let root = manifest
        .parent()
        .and_then(Path::parent)
        .expect("control/platform sits two levels below the workspace root")
        .to_path_buf();
    let ebpf = root.join("ebpf/xdp");
    let common = root.join("ebpf/common");
    for p in [
        ebpf.join("src"),
        ebpf.join("Cargo.toml"),
        ebpf.join("Cargo.lock"),
        common.join("src"),
        common.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-env-changed=XDPSEC_EBPF_OBJ");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("xdpsec.bpf.o");

    // A prebuilt object can be supplied (e.g. to build the loader without bpf-linker).
    if let Ok(obj) = env::var("XDPSEC_EBPF_OBJ") {
        std::fs::copy(&obj, &out).unwrap_or_else(|e| panic!("copying XDPSEC_EBPF_OBJ={obj}: {e}"));
        return;
    }

    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!(
            "bpf-linker not found: the XDP program cannot be linked. \
             Run `cargo xtask setup` (installs rust-src and bpf-linker built against rustc's LLVM)."
        );
    }

    let target_dir = root.join("target/ebpf");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ebpf)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(&target_dir)
        // -Z build-std is unstable: allowed for this child build only.
        .env("RUSTC_BOOTSTRAP", "1");
    // Flags and wrappers meant for the host build must not reach the BPF build.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    for (k, _) in env::vars() {
        if k.starts_with("CARGO_FEATURE_") || k.starts_with("CARGO_CFG_") {
            cmd.env_remove(k);
        }
    }
    let status = cmd.status().expect("running cargo for the eBPF program");
    if !status.success() {
        panic!("building the XDP program (ebpf/xdp) failed: {status}");
    }
    let obj: &Path = &target_dir.join("bpfel-unknown-none/release/xdpsec-ebpf");
    std::fs::copy(obj, &out).unwrap_or_else(|e| panic!("copying {}: {e}", obj.display()));
}
