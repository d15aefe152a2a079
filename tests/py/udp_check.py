"""UDP checks for the offload test (tests/tests/offload.rs): for each IPv4
packet (hex, argv[1] a JSON list) the UDP length and whether its checksum
is the one scapy computes. Prints a JSON list."""
import json
import sys

from scapy.layers.inet import IP, UDP

out = []
for h in json.loads(sys.argv[1]):
    p = IP(bytes.fromhex(h))
    again = p.copy()
    again[UDP].chksum = None
    out.append({"len": p[UDP].len, "chksum_ok": IP(bytes(again))[UDP].chksum == p[UDP].chksum})
print(json.dumps(out))
