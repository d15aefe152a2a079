#!/usr/bin/env bash
# Idempotent fresh-machine setup for xdpsec (Debian 12, root, rustup stable).
# Installs only what is missing and says what it installs.
# `setup.sh` does all; `setup.sh system` all but the Python venv;
# `setup.sh venv` the venv alone (`cargo xtask test` runs it beside its
# first build: pip waits on the network, the build on the CPUs).
set -euo pipefail
say() { echo "[setup] $*"; }
part=${1:-all}
case "$part" in all | system | venv) ;; *) echo "setup.sh: unknown part '$part' (all, system or venv)" >&2; exit 2 ;; esac

system_tools() {

need_apt=()
for p in clang binutils libelf-dev m4 zlib1g-dev pkg-config iproute2 iputils-ping python3-venv tshark iperf3 ethtool valgrind openssl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  say "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
  say "rustup component add rust-src (eBPF build: -Z build-std=core)"
  rustup component add rust-src
fi

if ! bpf-linker --version >/dev/null 2>&1; then
  # bpf-linker must link against rustc's own libLLVM (Debian's LLVM is too old,
  # bpf-linker's default feature wants a newer one than rustc ships).
  SYSROOT=$(rustc --print sysroot)
  MAJOR=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
  LIB=$(basename "$(ls "$SYSROOT"/lib/libLLVM.so.* | head -1)")
  P=$HOME/.cargo/bpf-linker-llvm
  mkdir -p "$P/lib"
  ln -sf "$SYSROOT/lib/$LIB" "$P/lib/libLLVM.so"
  ln -sf "$SYSROOT/lib/$LIB" "$P/lib/$LIB"
  say "cargo install bpf-linker 0.13.0 against rustc's LLVM $MAJOR (about 2 minutes)"
  LLVM_PREFIX=$P cargo install bpf-linker --version 0.13.0 --locked \
    --no-default-features --features "llvm-$MAJOR"
fi
}

python_venv() {
# pip --no-compile: no bytecode for the thousands of modules genie ships;
# Python writes it for the few the tests import, on first import.
# scapy (an independent ESP implementation) for the interop tests, in the project's own venv.
VENV="$(cd "$(dirname "$0")/.." && pwd)/.venv"
if ! "$VENV/bin/python" -c 'import scapy, cryptography; assert scapy.__version__ == "2.8.0"' >/dev/null 2>&1; then
  say "python venv $VENV with scapy 2.8.0 and cryptography (ESP interop tests)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-compile scapy==2.8.0 cryptography
fi
# Cisco's genieparser (pyATS) reads our IOS-style show output in tests/tests/genie.rs;
# pyATS/Unicon (its iosxe plugin) drives `xdpsec cli` in tests/tests/pyats.rs.
GENIE_VERSION=26.9
if ! "$VENV/bin/python" -c '
import genie.libs.parser.iosxe.show_crypto as c, genie.libs.parser.iosxe.show_platform_hardware as p
import pyats.topology, unicon.plugins.iosxe
c.ShowCryptoIpsecSa, p.ShowPlatformHardwareQfpActiveFeatureIpsecDatapathDropsAll' >/dev/null 2>&1; then
  say "pip install pyats, unicon, genie, genie.libs.parser $GENIE_VERSION into $VENV (genie and pyATS tests; 1.5-3 minutes)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-compile \
    "pyats==$GENIE_VERSION" "unicon==$GENIE_VERSION" "genie==$GENIE_VERSION" "genie.libs.parser==$GENIE_VERSION"
fi
# The Prometheus project's own OpenMetrics parser reads `/metrics` in tests/tests/gen.rs.
if ! "$VENV/bin/python" -c 'import prometheus_client.openmetrics.parser' >/dev/null 2>&1; then
  say "pip install prometheus-client 0.21.1 into $VENV (the metrics test's parser)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-compile prometheus-client==0.21.1
fi
# An RFC 5424 syslog parser from PyPI (not ours) reads the remote syslog lines in tests/tests/commands.rs.
if ! "$VENV/bin/python" -c 'import syslog_rfc5424_parser' >/dev/null 2>&1; then
  say "pip install syslog-rfc5424-parser 0.3.2 into $VENV (the RFC 5424 syslog test's parser)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-compile syslog-rfc5424-parser==0.3.2
fi
}

strongswan() {
# strongSwan 5.9.8 (Debian), an independent IKEv2/ESP peer for tests/tests/strongswan.rs.
# The tests run their own charons in namespaces (kernel-libipsec: ESP in
# userspace, this kernel has no ESP); the system service is not wanted.
need_ss=()
for p in strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_ss+=("$p")
done
if [ ${#need_ss[@]} -gt 0 ]; then
  say "apt-get install --no-install-recommends ${need_ss[*]} (strongSwan peer for the IKEv2 interop tests; its system service is then disabled)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # strongswan-starter's postinst would start its service at once: deny
  # service starts for this install only (policy-rc.d, honoured by
  # invoke-rc.d and deb-systemd-invoke) unless the machine has its own.
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    own_policy=1
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${need_ss[@]}" >/dev/null
  if [ -n "$own_policy" ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
fi
# strongswan-starter (a dependency of strongswan-charon) ships a unit and an
# init script that start a charon in the root namespace on UDP 500/4500 with
# the system's /etc/ipsec.conf: stop and disable it, every run (idempotent).
if [ -d /run/systemd/system ]; then
  for u in strongswan-starter.service strongswan.service; do
    if systemctl is-enabled --quiet "$u" 2>/dev/null || systemctl is-active --quiet "$u" 2>/dev/null; then
      say "systemctl disable --now $u (tests run their own charon per namespace)"
      systemctl disable --now "$u" >/dev/null 2>&1 || true
    fi
  done
elif [ -x /etc/init.d/ipsec ]; then
  if [ -e /run/starter.charon.pid ] || [ -e /run/charon.pid ]; then
    say "stopping the system strongSwan (/etc/init.d/ipsec stop)"
    /etc/init.d/ipsec stop >/dev/null 2>&1 || true
  fi
  if ls /etc/rc[2-5].d/S*ipsec >/dev/null 2>&1; then
    say "update-rc.d ipsec disable (tests run their own charon per namespace)"
    update-rc.d ipsec disable >/dev/null 2>&1 || true
  fi
fi
}

if [ "$part" != venv ]; then
  system_tools
  strongswan
fi
if [ "$part" != system ]; then
  python_venv
fi
if [ "$part" = all ]; then say ok; else say "ok ($part)"; fi
