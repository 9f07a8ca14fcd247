"""Blank the CUDA machine code an sm_90 GPU (H100, H200) cannot run from a shared library, so that it compresses
small enough to travel to a GPU host that cannot download (bench/device/prepare.sh).

    python bench/device/fatbin.py libonnxruntime_providers_cuda.so OUT.so

A CUDA library embeds one fatbin per compiled unit, each holding the unit's kernels as machine code (ELF)
for several architectures and as PTX. The driver loads, for an sm_90 device, the sm_90 ELF or else JIT-compiles
PTX of an architecture <= 90; no other entry is ever read there. In every fatbin that holds an sm_90 ELF entry,
this zeroes the payload of every entry the device would not read and keeps the rest byte for byte, so the file
keeps its size and layout (nothing is relinked) and the zeros compress to nothing. Fatbins without an sm_90
entry are left whole. The layout read here is the one NVIDIA's fatbinary tool writes (header magic 0xBA55ED50).
"""
from __future__ import annotations

import struct
import sys
from collections import Counter

MAGIC = struct.pack("<I", 0xBA55ED50)
PTX, ELF = 1, 2
TARGET = 90


def blank(data: bytearray, target: int = TARGET) -> Counter:
    """Zero, in place, what a `target` device never reads; bytes kept and blanked per (kind, arch)."""
    sizes: Counter = Counter()
    pos = data.find(MAGIC)
    while pos >= 0:
        _, version, header, fat_size = struct.unpack_from("<IHHQ", data, pos)
        if version != 1 or header != 16 or pos + header + fat_size > len(data):
            pos = data.find(MAGIC, pos + 4)  # these four bytes were not a fatbin header
            continue
        end, entry, entries = pos + header + fat_size, pos + header, []
        while entry < end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            if not 64 <= entry_header <= 4096 or entry + entry_header + payload > end:
                break
            arch = struct.unpack_from("<I", data, entry + 28)[0]
            entries.append((kind, arch, entry + entry_header, payload))
            entry += entry_header + payload
        has_target = any(kind == ELF and arch == target for kind, arch, _, _ in entries)
        for kind, arch, start, size in entries:
            read = not has_target or (kind == ELF and arch == target) or (kind == PTX and arch <= target)
            sizes["kept" if read else "blanked", "ptx" if kind == PTX else "elf", arch] += size
            if not read:
                data[start : start + size] = bytes(size)
        pos = data.find(MAGIC, end)
    return sizes


def main(argv: list[str]) -> int:
    source, out = argv
    data = bytearray(open(source, "rb").read())
    sizes = blank(data)
    for (fate, kind, arch), size in sorted(sizes.items()):
        print(f"{fate:8} {kind} sm_{arch}: {size / 1e6:.1f} MB")
    with open(out, "wb") as f:
        f.write(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
