#!/usr/bin/env python3
"""scripts/cubin_diff.py — which kernels' machine code differs between two cubins (ELF files
nvcc -cubin writes): each kernel's .text.NAME section compared byte for byte. Where the PTX
of a kernel differs only by register numbering (a refactor), this says whether ptxas made
the same code of it (scripts/ptx_diff.sh runs it).

usage: cubin_diff.py OLD.cubin NEW.cubin"""
import hashlib
import struct
import sys


def texts(path):
    """{kernel: md5 of its .text section} of an ELF64 little-endian file"""
    b = open(path, 'rb').read()
    if b[:4] != b'\x7fELF' or b[4] != 2 or b[5] != 1:
        sys.exit(f'cubin_diff: {path} is not a 64-bit little-endian ELF file')
    shoff, = struct.unpack_from('<Q', b, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', b, 0x3A)
    secs = [struct.unpack_from('<IIQQQQIIQQ', b, shoff + i * shentsize) for i in range(shnum)]
    names = secs[shstrndx][4]
    out = {}
    for name, _type, _flags, _addr, off, size, *_ in secs:
        n = b[names + name:b.index(b'\0', names + name)].decode()
        if n.startswith('.text.'):
            out[n[6:]] = hashlib.md5(b[off:off + size]).hexdigest()
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit('usage: cubin_diff.py OLD.cubin NEW.cubin')
    a, c = texts(sys.argv[1]), texts(sys.argv[2])
    for k in sorted(set(a) | set(c)):
        if k not in a:
            print('new:    ', k)
        elif k not in c:
            print('gone:   ', k)
        elif a[k] != c[k]:
            print('changed:', k)
    print(sum(1 for k in a if c.get(k) == a[k]), 'kernels the same machine code')


if __name__ == '__main__':
    main()
