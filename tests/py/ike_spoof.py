#!/usr/bin/env python3
"""Spoofed IKEv2 messages for the e2e tests (issue 19), run in a test's
namespace with one JSON argument; prints one JSON line.

{"cmd": "init", "src": A, "dst": B, "kind": "header"|"full", "count": N,
 "interval": S, "sport": P (default 500; 0: any)}
    IKE_SA_INITs from A:P to B:500, each with a fresh initiator SPI: a
    bare 28-byte header, or a well-formed request as an honest initiator
    of aes256gcm16-prfsha256-x25519 sends it (SA, KE, Ni). Reports
    {"sent": N, "answers": K}: K answers came back within a second.

{"cmd": "replay", "iface": I, "src": A, "dst": B, "port": P, "spoof": C,
 "wait": S, "timeout": T}
    Watches I (says "listening" on stderr first) for the first
    INFORMATIONAL request A sends to B:P (NAT-T); once B has answered it,
    sends it again byte for byte (a retransmission of a real request) from
    C (any port) and counts what comes back there within S seconds. Reports
    {"msg_id": M, "sent": 1, "received": K}; gives up after T seconds.
"""
import json
import os
import socket
import struct
import sys
import time


def payload(next_type, body):
    return struct.pack("!BBH", next_type, 0, 4 + len(body)) + body


def transform(last, ttype, tid, key_len=None):
    attrs = b"" if key_len is None else struct.pack("!HH", 0x800E, key_len)
    return struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), ttype, 0, tid) + attrs


def full_init(spi):
    # ENCR_AES_GCM_16 (20) 256, PRF_HMAC_SHA2_256 (5), Curve25519 (31).
    trans = transform(False, 1, 20, 256) + transform(False, 2, 5) + transform(True, 4, 31)
    prop = struct.pack("!BBHBBBB", 0, 0, 8 + len(trans), 1, 1, 0, 3) + trans
    sa = payload(34, prop)  # next: KE
    ke = payload(40, struct.pack("!HH", 31, 0) + os.urandom(32))  # next: Nonce
    nonce = payload(0, os.urandom(32))
    body = sa + ke + nonce
    return header(spi, 33, len(body)) + body


def header(spi, first, body_len):
    # SPIi, SPIr 0, next payload, version 2.0, IKE_SA_INIT (34), Initiator, id 0.
    return struct.pack("!QQBBBBII", spi, 0, first, 0x20, 34, 0x08, 0, 28 + body_len)


def init(cfg):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((cfg["src"], cfg.get("sport", 500)))
    sent = 0
    for k in range(cfg["count"]):
        spi = struct.unpack("!Q", os.urandom(8))[0] | 1
        msg = header(spi, 0, 0) if cfg["kind"] == "header" else full_init(spi)
        s.sendto(msg, (cfg["dst"], 500))
        sent += 1
        if k + 1 < cfg["count"]:
            time.sleep(cfg["interval"])
    # Answers (full IKE_SA_INIT responses or COOKIEs; not the peer's own
    # requests) within a second.
    answers = count_received(s, 1.0, lambda d: len(d) >= 28 and d[18] == 34 and d[19] & 0x20)
    return {"sent": sent, "answers": answers}


def count_received(sock, seconds, keep):
    """How many datagrams `keep` accepts arrive on `sock` within `seconds`."""
    n = 0
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return n
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(65536)
        except socket.timeout:
            return n
        if keep(data):
            n += 1


def ike_of(frame, cfg):
    """(src, request?, exchange, msg_id, udp payload) of an IKE message on
    the NAT-T port in an Ethernet frame, else None."""
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    if ip[9] != 17:
        return None
    src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    udp = ip[ihl:]
    sport, dport = struct.unpack("!HH", udp[:4])
    data = udp[8:]
    if cfg["port"] not in (sport, dport) or data[:4] != b"\0\0\0\0" or len(data) < 32:
        return None
    ike = data[4:]
    if {src, dst} != {cfg["src"], cfg["dst"]}:
        return None
    return src, not ike[19] & 0x20, ike[18], struct.unpack("!I", ike[20:24])[0], data


def replay(cfg):
    # A raw packet socket (no capture buffering): the first INFORMATIONAL
    # request SRC sends to DST:PORT, once DST has answered it, goes again
    # from SPOOF, byte for byte.
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    sniff.bind((cfg["iface"], 0))
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.bind((cfg["spoof"], 0))  # the NAT-T port is charon's
    sys.stderr.write("listening\n")
    sys.stderr.flush()
    request = None
    end = time.monotonic() + cfg["timeout"]
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return {"error": "no answered INFORMATIONAL request seen"}
        sniff.settimeout(left)
        try:
            m = ike_of(sniff.recv(65536), cfg)
        except socket.timeout:
            continue
        if m is None or m[2] != 37:
            continue
        src, is_request, _, msg_id, data = m
        if src == cfg["src"] and is_request and request is None:
            request = (msg_id, data)
        elif src == cfg["dst"] and not is_request and request and request[0] == msg_id:
            break
    out.sendto(request[1], (cfg["dst"], cfg["port"]))
    received = count_received(out, cfg["wait"], lambda d: True)
    return {"msg_id": request[0], "sent": 1, "received": received}


def main():
    cfg = json.loads(sys.argv[1])
    out = {"init": init, "replay": replay}[cfg["cmd"]](cfg)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
