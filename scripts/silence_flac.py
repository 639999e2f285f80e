#!/usr/bin/env python3
"""Write a FLAC file of digital silence, for the audio-duration cap measurement (RELIABILITY.md).

Every frame holds CONSTANT subframes of value 0, so hours of audio take a few bytes per frame:
the "audio bomb" of issue 17. Written by hand after the FLAC format specification (RFC 9639):
STREAMINFO, then fixed-blocksize frames with CRC-8 headers and CRC-16 footers.

usage: silence_flac.py OUT.flac HOURS [--rate 48000] [--channels 2] [--block 2304] [--unknown-length]
--unknown-length writes 0 as STREAMINFO's total sample count ("unknown"), so a reader must decode
to learn the duration.
"""
import argparse
import struct


def crc_table(poly, width):
    top, mask = 1 << (width - 1), (1 << width) - 1
    table = []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) if crc & top else (crc << 1)
        table.append(crc & mask)
    return table


CRC8, CRC16 = crc_table(0x07, 8), crc_table(0x8005, 16)


def crc8(data):
    crc = 0
    for b in data:
        crc = CRC8[crc ^ b]
    return crc


def crc16(data):
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ CRC16[(crc >> 8) ^ b]
    return crc


def utf8_number(n):
    if n < 0x80:
        return bytes([n])
    for length, lead in ((2, 0xC0), (3, 0xE0), (4, 0xF0), (5, 0xF8), (6, 0xFC)):
        if n < 1 << (5 * length + 1):  # lead byte keeps 7 - length bits, the rest 6 each
            break
    out = []
    for _ in range(length - 1):
        out.append(0x80 | (n & 0x3F))
        n >>= 6
    return bytes([lead | n]) + bytes(reversed(out))


RATE_CODES = {8000: 0b0100, 16000: 0b0101, 22050: 0b0110, 24000: 0b0111, 32000: 0b1000,
              44100: 0b1001, 48000: 0b1010, 96000: 0b1011}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("hours", type=float)
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--block", type=int, default=2304)
    ap.add_argument("--unknown-length", action="store_true")
    a = ap.parse_args()
    frames = int(a.hours * 3600 * a.rate) // a.block
    total = frames * a.block
    assert total < 1 << 36 and 16 <= a.block <= 65535 and 1 <= a.channels <= 8
    info = struct.pack(">HH", a.block, a.block) + b"\0" * 6
    packed = (a.rate << 44) | ((a.channels - 1) << 41) | (15 << 36) | (0 if a.unknown_length else total)
    info += packed.to_bytes(8, "big") + b"\0" * 16
    head = bytes([0xFF, 0xF8, (0b0111 << 4) | RATE_CODES[a.rate], ((a.channels - 1) << 4) | (0b100 << 1)])
    tail = struct.pack(">H", a.block - 1)
    subframes = b"\x00\x00\x00" * a.channels  # CONSTANT, no wasted bits, value 0 (16 bits)
    with open(a.out, "wb") as f:
        f.write(b"fLaC" + bytes([0x80, 0, 0, 34]) + info)  # last metadata block: STREAMINFO
        for n in range(frames):
            header = head + utf8_number(n) + tail
            header += bytes([crc8(header)])
            frame = header + subframes
            f.write(frame + struct.pack(">H", crc16(frame)))
    print(f"{a.out}: {total} frames, {total / a.rate / 3600:.2f} h at {a.rate} Hz x {a.channels}")


if __name__ == "__main__":
    main()
