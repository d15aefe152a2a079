"""Independent reference for the load tester's AF_XDP frames (tests/frames_ref.rs):
scapy parses the probe frames xdpsec builds (Ethernet, IPv4/IPv6, UDP or
none, ESP) into fields and says whether each checksum is the one scapy
computes; scapy builds reply frames from fields for xdpsec to parse.
Reads a JSON list of requests on stdin, prints a JSON list of answers."""
import json
import sys

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP
from scapy.layers.l2 import Ether


def recomputed_ok(pkt, layer, field):
    """The packet's checksum equals the one scapy computes from scratch."""
    want = getattr(pkt[layer], field)
    again = pkt.copy()
    delattr(again[layer], field)
    return Ether(bytes(again))[layer].getfieldval(field) == want


def parse(r):
    raw = bytes.fromhex(r["hex"])
    p = Ether(raw)
    out = {"eth_dst": p.dst, "eth_src": p.src, "type": p.type}
    if IPv6 in p:
        ip = p[IPv6]
        out.update(v6=True, src=ip.src, dst=ip.dst, proto=ip.nh, ttl=ip.hlim, ip_len=ip.plen,
                   ip_ok=True)
    else:
        ip = p[IP]
        out.update(v6=False, src=ip.src, dst=ip.dst, proto=ip.proto, ttl=ip.ttl, ip_len=ip.len,
                   ip_ok=recomputed_ok(p, IP, "chksum"), ident=ip.id, df=bool(ip.flags.DF))
    if UDP in p:
        u = p[UDP]
        out.update(sport=u.sport, dport=u.dport, udp_len=u.len, udp_chksum=u.chksum,
                   udp_ok=recomputed_ok(p, UDP, "chksum"))
        esp = bytes(u.payload)
    else:
        esp = bytes(ip.payload)
    out["esp"] = esp.hex()
    out["spi"] = int.from_bytes(esp[:4], "big")
    out["seq"] = int.from_bytes(esp[4:8], "big")
    return out


def build(r):
    eth = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01")
    ip = IPv6(src=r["src"], dst=r["dst"], hlim=61) if ":" in r["src"] else \
        IP(src=r["src"], dst=r["dst"], ttl=61)
    esp = ESP(spi=r["spi"], seq=r["seq"], data=bytes.fromhex(r["data"]))
    pkt = eth / ip / (UDP(sport=4500, dport=r["dport"]) / esp if r.get("dport") else esp)
    return bytes(pkt).hex()


def main():
    reqs = json.load(sys.stdin)
    out = [parse(r) if r["op"] == "parse" else build(r) for r in reqs]
    json.dump(out, sys.stdout)


main()
