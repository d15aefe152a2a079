#!/usr/bin/env python3
"""An independent ESP peer for xdpsec's interop tests, built on scapy.

Reads one JSON object (argv[1]) describing the SAs and addresses, sends
`count` ICMP echo requests encrypted by scapy through the tunnel, captures
what comes back on the interface, decrypts it with scapy and prints a JSON
report on stdout. xdpsec is the other end: it decrypts to its TUN device,
the kernel there answers, xdpsec encrypts the reply.

Bounded: at most `count` packets sent, at most `timeout` seconds waited.

`keep_inner`: also report every decrypted inner packet (hex, at most 64)
in `inner`; `linger`: seconds to keep capturing after the last request
(0.3 by default; with `count` 0, a pure capture of what xdpsec sends).

Transforms: `cipher` is scapy's crypt_algo ('AES-GCM', 'CHACHA20-POLY1305',
'AES-CBC'); with a non-AEAD cipher, `auth_algo` is scapy's ('SHA2-256-128',
'HMAC-SHA1-96', ...) and each direction's `auth_key` its integrity key, and
`key` is the encryption key alone (no salt).
"""
import json
import select
import sys
import time

from scapy.all import conf, Ether, IP, IPv6, UDP, ICMP, ICMPv6EchoRequest, ICMPv6EchoReply, Raw
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import bind_layers

cfg = json.loads(sys.argv[1])
v6_outer = ":" in cfg["outer_src"]
v6_inner = ":" in cfg["inner_src"]
udp = cfg.get("udp")  # [our port, xdpsec's port] or None
if udp:
    for p in set(udp):
        if p != 4500:
            bind_layers(UDP, ESP, dport=p)
            bind_layers(UDP, ESP, sport=p)

def mk_sa(d, outbound):
    src, dst = (cfg["outer_src"], cfg["outer_dst"]) if outbound else (cfg["outer_dst"], cfg["outer_src"])
    hdr = IPv6(src=src, dst=dst) if v6_outer else IP(src=src, dst=dst)
    nat = None
    if udp:
        nat = UDP(sport=udp[0], dport=udp[1]) if outbound else UDP(sport=udp[1], dport=udp[0])
    auth = {}
    if cfg.get("auth_algo"):
        auth = {"auth_algo": cfg["auth_algo"], "auth_key": bytes.fromhex(d["auth_key"])}
    sa = SecurityAssociation(ESP, spi=d["spi"], crypt_algo=cfg["cipher"],
                             crypt_key=bytes.fromhex(d["key"]), tunnel_header=hdr,
                             nat_t_header=nat, esn_en=cfg.get("esn", False), **auth)
    # scapy treats seq_num=0 / esn=0 passed to the constructor as unset: set them directly.
    sa.seq_num = d.get("seq", 1)
    sa.esn = d.get("esn_hi", 0)
    return sa

tx_sa = mk_sa(cfg["tx"], True)
rx_sa = mk_sa(cfg["rx"], False)
count = cfg.get("count", 5)
timeout = cfg.get("timeout", 5.0)
ident = 0x4242
report = {"sent": 0, "received_esp": 0, "decrypted": 0, "matched": [], "errors": [], "reply_seqs": [],
          "udp_chksums": [], "ipv4_ids": [], "inner": []}

sock = conf.L2socket(iface=cfg["iface"])
# `ready_file`: created once the socket captures, for the caller to wait on
# (importing scapy alone can take seconds on a loaded machine).
if cfg.get("ready_file"):
    open(cfg["ready_file"], "w").close()
eth = Ether(src=cfg["src_mac"], dst=cfg["dst_mac"])

def inner(i, src=None, dst=None):
    payload = bytes([(i + k) & 0xFF for k in range(cfg.get("payload", 56))])
    src = src or cfg["inner_src"]
    dst = dst or cfg["inner_dst"]
    if v6_inner:
        return IPv6(src=src, dst=dst) / ICMPv6EchoRequest(id=ident, seq=i, data=payload)
    return IP(src=src, dst=dst) / ICMP(type=8, id=ident, seq=i) / Raw(payload)

def handle(frame):
    pkt = Ether(bytes(frame))
    outer = pkt.getlayer(IPv6 if v6_outer else IP)
    if outer is None or outer.src != cfg["outer_dst"]:
        return
    if not pkt.haslayer(ESP) or pkt[ESP].spi != cfg["rx"]["spi"]:
        return
    report["received_esp"] += 1
    report["reply_seqs"].append(pkt[ESP].seq)
    # Outer headers as scapy sees them: [checksum sent, checksum scapy
    # computes] for ESP in UDP, and the IPv4 identification.
    if udp and outer.haslayer(UDP):
        again = outer.copy()
        again[UDP].chksum = None
        report["udp_chksums"].append([outer[UDP].chksum, outer.__class__(bytes(again))[UDP].chksum])
    if not v6_outer:
        report["ipv4_ids"].append(outer.id)
    try:
        # decrypt() wants the outer IP packet (with the UDP header for NAT-T).
        clear = rx_sa.decrypt(outer)
    except Exception as e:  # integrity failure or parse error
        report["errors"].append("decrypt: %r" % (e,))
        return
    report["decrypted"] += 1
    if cfg.get("keep_inner") and len(report["inner"]) < 64:
        report["inner"].append(bytes(clear).hex())
    if v6_inner:
        if clear.haslayer(ICMPv6EchoReply) and clear[ICMPv6EchoReply].id == ident:
            report["matched"].append(clear[ICMPv6EchoReply].seq)
    elif clear.haslayer(ICMP) and clear[ICMP].type == 0 and clear[ICMP].id == ident:
        report["matched"].append(clear[ICMP].seq)

def crafted(i, spec):
    """One ESP packet built by hand with scapy's cipher: custom padding,
    next header, SPI, tampering, truncation, fragment flags, outer TOS
    (ECN), outer IPv4 checksum, inner addresses (inner_src / inner_dst),
    an inner IPv4 UDP datagram to port `inner_udp_dport` instead of the echo
    request (a BFD-like control packet for port 3784, RFC 5880 4.1)."""
    from scapy.layers.ipsec import _ESPPlain
    seq = spec["seq"]
    if "inner_udp_dport" in spec:
        # Version 1, state Down, detect multiplier 3, length 24,
        # discriminators 1 / 0, intervals 1 s.
        bfd = bytes.fromhex("20400318 00000001 00000000 000f4240 000f4240 00000000")
        clear = IP(src=spec.get("inner_src", cfg["inner_src"]), dst=spec.get("inner_dst", cfg["inner_dst"]),
                   ttl=255) / UDP(sport=49152, dport=spec["inner_udp_dport"]) / Raw(bfd)
    else:
        clear = inner(i, spec.get("inner_src"), spec.get("inner_dst"))
    esp = _ESPPlain(spi=spec.get("spi", tx_sa.spi), seq=seq & 0xFFFFFFFF, iv=tx_sa.crypt_algo.generate_iv())
    esp.data = clear
    esp.nh = spec.get("nh", 41 if v6_inner else 4)
    if "pad" in spec:
        esp.padding = bytes.fromhex(spec["pad"])
    else:
        # RFC 4303 2.4: pad bytes 1, 2, 3, ... to 4-byte alignment of the
        # trailer, or to the cipher's block (16 for AES-CBC).
        align = max(4, tx_sa.crypt_algo.block_size)
        n = (-(len(bytes(clear)) + 2)) % align
        esp.padding = bytes(range(1, n + 1))
    esp.padlen = len(esp.padding)
    enc = tx_sa.crypt_algo.encrypt(tx_sa, esp, tx_sa.crypt_key, tx_sa.crypt_icv_size,
                                   esn_en=cfg.get("esn", False), esn=seq >> 32)
    # The ICV of a non-AEAD transform (a no-op for the AEADs' NULL auth).
    tx_sa.auth_algo.sign(enc, tx_sa.auth_key, esn_en=cfg.get("esn", False), esn=seq >> 32)
    wire = bytes(enc)
    if spec.get("tamper"):
        wire = wire[:-1] + bytes([wire[-1] ^ 0x01])
    if "truncate" in spec:
        wire = wire[:8 + spec["truncate"]]
    if v6_outer:
        ip = IPv6(src=cfg["outer_src"], dst=cfg["outer_dst"], tc=spec.get("tos", 0))
    else:
        ip = IP(src=cfg["outer_src"], dst=cfg["outer_dst"], flags="MF" if spec.get("frag") else 0,
                tos=spec.get("tos", 0))
        if "chksum" in spec:
            ip.chksum = spec["chksum"]  # a wrong outer header checksum
    if udp:
        return ip / UDP(sport=udp[0], dport=udp[1], chksum=0) / Raw(wire)
    if not v6_outer:
        ip.proto = 50
    else:
        ip.nh = 50
    return ip / Raw(wire)

if "packets" in cfg:
    for i, spec in enumerate(cfg["packets"]):
        sock.send(eth / crafted(i, spec))
        report["sent"] += 1
        time.sleep(cfg.get("gap", 0.01))
    print(json.dumps(report))
    sys.exit(0)

def on_wire(pkt):
    """The outer packet as sent: whole, or in fragments of at most
    `fragsize` bytes when the config asks for it (RFC 791 / RFC 8200)."""
    fs = cfg.get("fragsize")
    if not fs:
        return [pkt]
    if v6_outer:
        from scapy.layers.inet6 import IPv6ExtHdrFragment, fragment6
        ip = pkt.getlayer(IPv6)
        payload = ip.payload.copy()
        hdr = ip.copy()
        hdr.remove_payload()
        del hdr.nh  # recomputed: the fragment header follows
        return fragment6(hdr / IPv6ExtHdrFragment() / payload, fs)
    from scapy.layers.inet import fragment
    return fragment(pkt, fragsize=fs)

deadline = time.time() + timeout
seq = cfg["tx"].get("seq", 1)  # 64-bit sequence number of the first packet
for i in range(count):
    # Set the halves directly: scapy's encrypt() keeps 32 bits and treats 0 as "unset".
    tx_sa.seq_num = seq & 0xFFFFFFFF
    tx_sa.esn = seq >> 32
    for piece in on_wire(tx_sa.encrypt(inner(i))):
        sock.send(eth / piece)
    seq += 1
    report["sent"] += 1
    # Collect the reply before the next request (bounded wait per packet).
    t_end = min(time.time() + 1.0, deadline)
    want = len(report["matched"]) + 1
    while time.time() < t_end and len(report["matched"]) < want:
        ready, _, _ = select.select([sock.ins], [], [], 0.05)
        if ready:
            _, raw, _ = sock.recv_raw()
            if raw:
                handle(raw)
# Late replies (bounded).
t_end = min(time.time() + cfg.get("linger", 0.3), deadline)
while time.time() < t_end:
    ready, _, _ = select.select([sock.ins], [], [], 0.05)
    if ready:
        _, raw, _ = sock.recv_raw()
        if raw:
            handle(raw)

print(json.dumps(report))
