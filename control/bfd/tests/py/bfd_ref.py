"""Independent reference for the BFD core's tests: scapy 2.8's BFD layer
(scapy.contrib.bfd, RFC 5880). Reads a JSON list on stdin; for each item
parses `hex` with scapy (also as the payload of IPv4/UDP to 3784, as RFC
5881 carries it) and builds a packet from `fields`. Prints JSON."""
import json
import sys

from scapy.contrib.bfd import BFD
from scapy.layers.inet import IP, UDP

FIELDS = ["version", "diag", "sta", "detect_mult", "len", "my_discriminator",
          "your_discriminator", "min_tx_interval", "min_rx_interval", "echo_rx_interval"]

out = []
for item in json.load(sys.stdin):
    raw = bytes.fromhex(item["hex"])
    p = BFD(raw)
    parsed = {f: int(getattr(p, f)) for f in FIELDS}
    parsed["flags"] = str(p.flags)
    # The same bytes inside IPv4/UDP to 3784: scapy must find its BFD layer.
    wire = bytes(IP(src="203.0.113.1", dst="203.0.113.2", ttl=255)
                 / UDP(sport=49152, dport=3784) / raw)
    inner = IP(wire)
    in_udp = inner.haslayer(BFD) and bytes(inner[BFD]) == raw
    f = item["fields"]
    built = BFD(version=1, diag=f["diag"], sta=f["sta"], flags=f["flags"],
                detect_mult=f["detect_mult"], my_discriminator=f["my_discriminator"],
                your_discriminator=f["your_discriminator"],
                min_tx_interval=f["min_tx_interval"], min_rx_interval=f["min_rx_interval"],
                echo_rx_interval=f["echo_rx_interval"])
    out.append({"parsed": parsed, "built": bytes(built).hex(), "in_udp": in_udp})
print(json.dumps(out))
