#!/usr/bin/env python3
"""Capture ESP on an interface and decrypt it with scapy (an independent
ESP implementation): the receiving end for `xdpsec gen`'s tests.

argv[1] is JSON: iface, spi, key (hex key||salt), cipher (scapy's
crypt_algo), outer_src (the sender's outer address), udp (port or null),
esn (extended sequence numbers, optional), count (frames to wait for),
timeout (seconds). Prints `ready` once the
capture is open, then one JSON report: received, decrypted, seqs, inner
[{src, dst, dport, len}], errors. Bounded by count and timeout.
"""
import json
import select
import sys
import time

from scapy.all import conf, Ether, IP, IPv6, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import bind_layers

cfg = json.loads(sys.argv[1])
udp = cfg.get("udp")
if udp and udp != 4500:
    bind_layers(UDP, ESP, dport=udp)
v6 = ":" in cfg["outer_src"]
nat = UDP(sport=udp, dport=udp) if udp else None
sa = SecurityAssociation(ESP, spi=cfg["spi"], crypt_algo=cfg["cipher"],
                         crypt_key=bytes.fromhex(cfg["key"]), nat_t_header=nat,
                         esn_en=bool(cfg.get("esn", False)))
report = {"received": 0, "decrypted": 0, "seqs": [], "inner": [], "errors": []}
sock = conf.L2listen(iface=cfg["iface"])
print("ready", flush=True)
deadline = time.time() + cfg.get("timeout", 10.0)
while time.time() < deadline and report["received"] < cfg["count"]:
    ready, _, _ = select.select([sock.ins], [], [], 0.05)
    if not ready:
        continue
    _, raw, _ = sock.recv_raw()
    if not raw:
        continue
    pkt = Ether(raw)
    outer = pkt.getlayer(IPv6 if v6 else IP)
    if outer is None or outer.src != cfg["outer_src"] or not pkt.haslayer(ESP):
        continue
    if pkt[ESP].spi != cfg["spi"]:
        continue
    report["received"] += 1
    report["seqs"].append(pkt[ESP].seq)
    try:
        clear = sa.decrypt(outer)
    except Exception as e:
        report["errors"].append("decrypt: %r" % (e,))
        continue
    report["decrypted"] += 1
    # The innermost IP header (scapy keeps the outer one in tunnel mode).
    ip = None
    layer = clear
    while layer is not None and not isinstance(layer, bytes):
        if isinstance(layer, (IP, IPv6)):
            ip = layer
        layer = layer.payload if layer.payload else None
    u = clear.getlayer(UDP)
    report["inner"].append({"src": ip.src, "dst": ip.dst, "dport": u.dport if u else None,
                            "len": len(bytes(u.payload)) if u else None})
print(json.dumps(report), flush=True)
