"""Independent reference for the IKE core's tests (scapy 2.8's IKEv2 layer,
the `cryptography` package). Reads one JSON request on stdin, prints JSON."""
import hashlib
import hmac
import json
import sys

from scapy.contrib.ikev2 import (IKEv2, IKEv2_SA, IKEv2_Proposal, IKEv2_Transform, IKEv2_KE,
                                 IKEv2_Nonce, IKEv2_Notify, IKEv2_TSi, IKEv2_Delete,
                                 IPv4TrafficSelector, IPv6TrafficSelector, IKEv2_VendorID)


def payloads(pkt):
    out = []
    p = pkt.payload
    while p is not None and p.name != "NoPayload" and p.__class__.__name__ != "Raw":
        name = p.__class__.__name__
        d = {"type": name}
        if name == "IKEv2_SA":
            props = []
            prop = p.prop
            while prop is not None and prop.__class__.__name__ == "IKEv2_Proposal":
                tr = []
                t = prop.trans
                while t is not None and t.__class__.__name__ == "IKEv2_Transform":
                    tr.append([t.transform_type, t.transform_id, t.key_length])
                    t = t.payload if t.payload.__class__.__name__ == "IKEv2_Transform" else None
                props.append({"num": prop.proposal, "proto": prop.proto, "spi": bytes(prop.SPI or b"").hex(), "trans": tr})
                prop = prop.payload if prop.payload.__class__.__name__ == "IKEv2_Proposal" else None
            d["props"] = props
        elif name == "IKEv2_KE":
            d["group"] = p.group
            d["ke"] = bytes(p.ke).hex()
        elif name == "IKEv2_Nonce":
            d["nonce"] = bytes(p.nonce).hex()
        elif name == "IKEv2_Notify":
            d["ntype"] = p.type
            d["data"] = bytes(p.notify or b"").hex()
        elif name in ("IKEv2_TSi", "IKEv2_TSr"):
            d["ts"] = [[str(t.starting_address_v4 if t.TS_type == 7 else t.starting_address_v6),
                        str(t.ending_address_v4 if t.TS_type == 7 else t.ending_address_v6),
                        t.start_port, t.end_port] for t in p.traffic_selector]
        elif name == "IKEv2_Delete":
            d["proto"] = p.proto
            d["spis"] = [int.from_bytes(bytes(s), "big") if isinstance(s, bytes) else s for s in p.SPI]
        out.append(d)
        p = p.payload
    return out


def parse(req):
    pkt = IKEv2(bytes.fromhex(req["hex"]))
    return {"init_spi": bytes(pkt.init_SPI).hex(), "exch": pkt.exch_type, "flags": int(pkt.flags),
            "id": pkt.id, "length": pkt.length, "payloads": payloads(pkt)}


def build(req):
    # scapy 2.8 needs the explicit lengths: a transform with a Key Length
    # attribute is 12 bytes, an IPv6 selector 40 (its default, 20, is wrong).
    props = IKEv2_Proposal(proposal=1, proto=1, trans_nb=4, trans=(
        IKEv2_Transform(transform_type=1, transform_id=12, length=12, key_length=256)
        / IKEv2_Transform(transform_type=3, transform_id=12)
        / IKEv2_Transform(transform_type=2, transform_id=5)
        / IKEv2_Transform(transform_type=4, transform_id=19))) / IKEv2_Proposal(
        proposal=2, proto=1, trans_nb=3, trans=(
            IKEv2_Transform(transform_type=1, transform_id=20, length=12, key_length=128)
            / IKEv2_Transform(transform_type=2, transform_id=6)
            / IKEv2_Transform(transform_type=4, transform_id=31)))
    pkt = (IKEv2(init_SPI=bytes.fromhex("0011223344556677"), resp_SPI=b"\0" * 8, exch_type=34, flags="Initiator", id=0)
           / IKEv2_SA(prop=props)
           / IKEv2_KE(group=19, ke=b"\x42" * 64)
           / IKEv2_Nonce(nonce=b"\x17" * 32)
           / IKEv2_Notify(type=16388, notify=b"\x01" * 20)
           / IKEv2_VendorID(vendorID=b"strongSwan")
           / IKEv2_TSi(number_of_TSs=2, traffic_selector=[
               IPv4TrafficSelector(starting_address_v4="203.0.113.0", ending_address_v4="203.0.113.255"),
               IPv6TrafficSelector(length=40, starting_address_v6="2001:db8::", ending_address_v6="2001:db8::ffff")])
           / IKEv2_Delete(proto=3, SPIsize=4, SPInum=2, SPI=[bytes.fromhex("11223344"), bytes.fromhex("55667788")]))
    return {"hex": bytes(pkt).hex()}


def prf(alg, key, data):
    return hmac.new(key, data, alg).digest()


def prf_plus(alg, key, seed, n):
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = prf(alg, key, t + seed + bytes([i]))
        out += t
        i += 1
    return out[:n]


def keys(req):
    """SKEYSEED and the IKE SA keys after an X25519 or P-256 exchange with
    our own key pair (RFC 7296 2.14, RFC 5903, RFC 8031)."""
    from cryptography.hazmat.primitives.asymmetric import x25519, ec
    from cryptography.hazmat.primitives import serialization
    peer = bytes.fromhex(req["peer_ke"])
    if req["group"] == 31:
        priv = x25519.X25519PrivateKey.generate()
        pub = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        shared = priv.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
    else:
        priv = ec.generate_private_key(ec.SECP256R1())
        pub = priv.public_key().public_bytes(serialization.Encoding.X962,
                                             serialization.PublicFormat.UncompressedPoint)[1:]
        shared = priv.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + peer))
    alg = hashlib.sha256
    ni, nr = bytes.fromhex(req["ni"]), bytes.fromhex(req["nr"])
    spis = bytes.fromhex(req["spi_i"]) + bytes.fromhex(req["spi_r"])
    skeyseed = prf(alg, ni + nr, shared)
    lens = req["lens"]
    km = prf_plus(alg, skeyseed, ni + nr + spis, sum(lens))
    out, at = [], 0
    for n in lens:
        out.append(km[at:at + n].hex())
        at += n
    child = prf_plus(alg, bytes.fromhex(out[0]), ni + nr, req["child_len"]).hex()
    psk = req["psk"].encode()
    auth = prf(alg, prf(alg, psk, b"Key Pad for IKEv2"),
               bytes.fromhex(req["msg"]) + nr + prf(alg, bytes.fromhex(out[5]), bytes.fromhex(req["id"])))
    return {"pub": pub.hex(), "shared": shared.hex(), "skeyseed": skeyseed.hex(), "keys": out,
            "child": child, "auth": auth.hex()}


def gcm_open(req):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    msg = bytes.fromhex(req["hex"])
    ek = bytes.fromhex(req["ek"])
    off = 28 + 4
    iv = msg[off:off + 8]
    plain = AESGCM(ek[:-4]).decrypt(ek[-4:] + iv, msg[off + 8:], msg[:off])
    return {"plain": plain[:len(plain) - plain[-1] - 1].hex()}


req = json.load(sys.stdin)
print(json.dumps({"parse": parse, "build": build, "keys": keys, "gcm_open": gcm_open}[req["op"]](req)))
