#!/usr/bin/env python3
"""An independent sender of every class of bad ESP, built on scapy, for
xdpsec's drop-accounting test (tests/tests/drops.rs).

argv[1] is a JSON file: {"gap": seconds, "targets": [TARGET, ...]}, each
TARGET {"iface", "src_mac", "dst_mac", "outer_src", "outer_dst",
"sas": [SA, ...], "frames": [FRAME, ...]}, each SA {"spi", "cipher"
(scapy's crypt_algo), "key" (hex; key || salt for the AEADs, the
encryption key alone for AES-CBC), "auth_algo" and "auth_key" (CBC only),
"udp": [sport, dport] or null, "inner_src", "inner_dst"}; each FRAME
{"sa": index into sas, "class": a label echoed in the report, "seq",
and at most one fault: "spi" (another SPI on the wire, with this SA's
keys), "tamper" (flip the last ICV bit), "bad_pad_bytes" (the right
number of padding bytes, but 2, 3, 4, ... instead of 1, 2, 3, ...),
"padlen" (the pad length byte, whatever the padding), "truncate" (ESP
bytes kept), "cut_ciphertext" (bytes cut from the end of an AES-CBC
ciphertext before the ICV is computed: authentic, not whole blocks)}.

Every frame is built here from the SA's keys with scapy's own ciphers
(never by xdpsec) and sent once on the target's interface, in order, with
`gap` seconds between frames. Prints one JSON line: {"sent": N,
"by_class": [[target index, sa index, class, count], ...]}.
"""
import collections
import json
import sys
import time

from scapy.all import conf, Ether, IP, IPv6, UDP, ICMP, Raw
from scapy.layers.ipsec import ESP, SecurityAssociation, _ESPPlain

job = json.load(open(sys.argv[1]))


def make_sa(target, d):
    auth = {}
    if d.get("auth_algo"):
        auth = {"auth_algo": d["auth_algo"], "auth_key": bytes.fromhex(d["auth_key"])}
    return SecurityAssociation(ESP, spi=d["spi"], crypt_algo=d["cipher"],
                               crypt_key=bytes.fromhex(d["key"]), **auth)


def frame(target, d, sa, f):
    seq = f["seq"]
    clear = IP(src=d["inner_src"], dst=d["inner_dst"]) / ICMP(type=8, id=0x4242, seq=seq) / Raw(b"x" * 56)
    esp = _ESPPlain(spi=f.get("spi", d["spi"]), seq=seq, iv=sa.crypt_algo.generate_iv())
    esp.data = clear
    esp.nh = 4
    # RFC 4303 2.4: 1, 2, 3, ... to the 4-byte boundary, or AES-CBC's block.
    align = max(4, sa.crypt_algo.block_size)
    n = (-(len(bytes(clear)) + 2)) % align
    first = 2 if f.get("bad_pad_bytes") else 1
    assert n > 0 or first == 1, "no padding to spoil"
    esp.padding = bytes(range(first, first + n))
    esp.padlen = f.get("padlen", len(esp.padding))
    enc = sa.crypt_algo.encrypt(sa, esp, sa.crypt_key, sa.crypt_icv_size)
    if f.get("cut_ciphertext"):
        enc.data = enc.data[:-f["cut_ciphertext"]]
    # The ICV of AES-CBC + HMAC (a no-op for the AEADs, sealed above).
    sa.auth_algo.sign(enc, sa.auth_key)
    wire = bytes(enc)
    if f.get("tamper"):
        wire = wire[:-1] + bytes([wire[-1] ^ 0x01])
    if "truncate" in f:
        wire = wire[:f["truncate"]]
    v6 = ":" in target["outer_src"]
    ip = (IPv6(src=target["outer_src"], dst=target["outer_dst"]) if v6
          else IP(src=target["outer_src"], dst=target["outer_dst"]))
    if d.get("udp"):
        # UDP checksum 0 over IPv4 (RFC 3948), computed over IPv6.
        u = UDP(sport=d["udp"][0], dport=d["udp"][1], chksum=None if v6 else 0)
        pkt = ip / u / Raw(wire)
    else:
        if v6:
            ip.nh = 50
        else:
            ip.proto = 50
        pkt = ip / Raw(wire)
    return Ether(src=target["src_mac"], dst=target["dst_mac"]) / pkt


sent = 0
by_class = collections.Counter()
for ti, target in enumerate(job["targets"]):
    sock = conf.L2socket(iface=target["iface"])
    sas = [make_sa(target, d) for d in target["sas"]]
    for f in target["frames"]:
        d = target["sas"][f["sa"]]
        sock.send(frame(target, d, sas[f["sa"]], f))
        sent += 1
        by_class[(ti, f["sa"], f["class"])] += 1
        time.sleep(job.get("gap", 0.002))
    sock.close()
print(json.dumps({"sent": sent, "by_class": [[t, s, c, n] for (t, s, c), n in sorted(by_class.items())]}))
