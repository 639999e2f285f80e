#!/usr/bin/env python3
"""Write crafted `.whittle` files whose JSON headers test the reader's caps (RELIABILITY.md).

usage: crafted_headers.py OUT_DIR
Each file is the 24-byte prefix, a header of up to the 64 MiB cap and zero padding, with no
tensors: zeros-64m (33.5 M values), keys-64m (5.6 M object keys), string-64m (one string),
zeros-2m-values (2 M values, under the value cap).
"""
import os
import struct
import sys

CAP = 64 << 20


def write(path, header):
    h = header.encode()
    assert len(h) <= CAP, len(h)
    pad = (-(24 + len(h))) % 64
    with open(path, "wb") as f:
        f.write(b"WHITTLE\0" + struct.pack("<IIQ", 1, 0, len(h)) + h + b"\0" * pad)
    print(path, len(h), "header bytes")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    pre = '{"architecture":"whisper","tensors":[],"extra":'
    room = CAP - len(pre) - 1
    write(os.path.join(out, "zeros-64m.whittle"), pre + "[" + ",".join(["0"] * ((room - 1) // 2)) + "]}")
    write(os.path.join(out, "string-64m.whittle"), pre + '"' + "x" * (room - 2) + '"}')
    keys, size = [], 2
    while True:
        k = '"k%d":0' % len(keys)
        if size + len(k) + 1 > room:
            break
        keys.append(k)
        size += len(k) + 1
    write(os.path.join(out, "keys-64m.whittle"), pre + "{" + ",".join(keys) + "}}")
    write(os.path.join(out, "zeros-2m-values.whittle"), pre + "[" + ",".join(["0"] * 2_000_000) + "]}")


if __name__ == "__main__":
    main()
