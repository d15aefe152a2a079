"""Independent reference for the TUN offloads' tests (xdpsec-worker's
tests/offload_ref.rs): scapy builds TCP/UDP packets over IPv4/IPv6 from
fields, and parses packets back into fields, saying whether each checksum
(IPv4 header, TCP/UDP) is the one scapy computes. Reads a JSON list of
requests on stdin, prints a JSON list of answers."""
import json
import sys

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

SRC4, DST4 = "198.51.100.1", "198.51.100.2"
SRC6, DST6 = "2001:db8::1", "2001:db8::2"


def payload(n, seed):
    return bytes(((i * 7 + seed) & 0xFF) for i in range(n))


def build(r):
    ip = IPv6(src=SRC6, dst=DST6, hlim=64) if r["v6"] else \
        IP(src=SRC4, dst=DST4, ttl=64, id=r.get("id", 0x1234), flags="DF")
    data = payload(r["len"], r.get("seed", 3))
    if r["proto"] == "tcp":
        opts = [("NOP", None), ("NOP", None), ("Timestamp", tuple(r["ts"]))] if r.get("ts") else []
        l4 = TCP(sport=40000, dport=5201, seq=r["seq"], ack=r.get("ack", 0x11223344),
                 flags=r["flags"], window=501, options=opts)
    else:
        l4 = UDP(sport=40000, dport=5201)
    return bytes(ip / l4 / data).hex()


def ok_after_recompute(pkt, layer, field):
    """The packet's checksum equals the one scapy computes from scratch."""
    want = getattr(pkt[layer], field)
    again = pkt.copy()
    delattr(again[layer], field)
    cls = type(pkt)
    return cls(bytes(again))[layer].getfieldval(field) == want


def check(raw_hex):
    raw = bytes.fromhex(raw_hex)
    v6 = raw[0] >> 4 == 6
    p = IPv6(raw) if v6 else IP(raw)
    out = {"v6": v6}
    if v6:
        out["ip_len"] = p.plen
        out["ip_chksum_ok"] = True
    else:
        out["ip_len"] = p.len
        out["id"] = p.id
        out["ip_chksum_ok"] = ok_after_recompute(p, IP, "chksum")
    if p.haslayer(TCP):
        t = p[TCP]
        out["proto"] = "tcp"
        out["seq"] = t.seq
        out["flags"] = int(t.flags)
        out["options"] = repr(t.options)
        out["l4_chksum_ok"] = ok_after_recompute(p, TCP, "chksum")
        out["payload"] = bytes(t.payload).hex()
    elif p.haslayer(UDP):
        u = p[UDP]
        out["proto"] = "udp"
        out["udp_len"] = u.len
        out["l4_chksum_ok"] = ok_after_recompute(p, UDP, "chksum")
        out["payload"] = bytes(u.payload).hex()
    return out


answers = []
for req in json.load(sys.stdin):
    if req["op"] == "build":
        answers.append(build(req))
    elif req["op"] == "check":
        answers.append(check(req["hex"]))
    elif req["op"] == "payload":
        answers.append(payload(req["len"], req.get("seed", 3)).hex())
print(json.dumps(answers))
