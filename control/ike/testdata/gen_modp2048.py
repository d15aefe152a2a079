#!/usr/bin/env python3
"""Writes modp2048.txt, the known-answer fixture of DH group 14 for
`crypto::tests` (the Rust side never runs this; run it by hand to
regenerate, with any Python 3).

An independent reference for xdpsec's MODP-2048 code:
- the prime is computed here from its definition in RFC 3526 section 3,
  p = 2^2048 - 2^1984 - 1 + 2^64 * ( [2^1918 pi] + 124476 ), with pi from
  Machin's formula in integer arithmetic, and checked to be a safe prime;
- public values and shared secrets come from Python's pow(), for fixed
  private exponents derived from SHA-256 of a label (reproducible).
"""
import hashlib
import os
import random


def arctan_inv(x, bits):
    """arctan(1/x) * 2^bits, truncated (Taylor series in integers)."""
    one = 1 << bits
    total, term, n, sign = 0, one // x, 1, 1
    while term:
        total += sign * (term // n)
        term //= x * x
        n += 2
        sign = -sign
    return total


def pi_fixed(bits):
    """floor(pi * 2^bits), with 64 guard bits."""
    g = bits + 64
    pi = 4 * (4 * arctan_inv(5, g) - arctan_inv(239, g))
    return pi >> 64


def is_probable_prime(n, rounds=32):
    if n % 2 == 0:
        return n == 2
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    rng = random.Random(14)
    for _ in range(rounds):
        a = rng.randrange(2, n - 2)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def exponent(label):
    """A fixed 2048-bit private exponent: SHA-256(label | counter) blocks."""
    out = b"".join(hashlib.sha256(label + bytes([i])).digest() for i in range(8))
    return int.from_bytes(out, "big") >> 1  # below 2^2047 < p


def main():
    p = 2**2048 - 2**1984 - 1 + 2**64 * (pi_fixed(1918) + 124476)
    assert p.bit_length() == 2048
    assert is_probable_prime(p) and is_probable_prime((p - 1) // 2), "not a safe prime"
    g = 2
    q = (p - 1) // 2
    h = lambda v: "%0512x" % v
    lines = ["# DH group 14 (MODP-2048, RFC 3526) known answers; written by gen_modp2048.py", "p " + h(p)]
    for n in range(2):
        xi = exponent(b"xdpsec modp2048 initiator %d" % n)
        xr = exponent(b"xdpsec modp2048 responder %d" % n)
        yi, yr = pow(g, xi, p), pow(g, xr, p)
        shared = pow(yr, xi, p)
        assert shared == pow(yi, xr, p)
        assert pow(yi, q, p) == 1 and pow(yr, q, p) == 1
        lines += ["xi " + h(xi), "yi " + h(yi), "xr " + h(xr), "yr " + h(yr), "shared " + h(shared)]
    # Public values a receiver must refuse (NIST SP 800-56A 5.6.2.3.1): 0,
    # 1, p-1, p, above p, and p-2, which is not in the order-q subgroup
    # (-1 is a non-residue as p = 3 mod 4, 2 a residue as p = 7 mod 8).
    assert pow(p - 2, q, p) != 1
    for bad in [0, 1, p - 1, p, p + 1, p - 2]:
        lines.append("bad " + h(bad))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "modp2048.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
