#!/usr/bin/env python3
"""scripts/gen_reference_safetensors.py — the reference safetensors files mgl's tests read.

tests/test_checkpoint.c checks that mgl reads files written the way Hugging Face's
`safetensors` library writes them (safetensors.numpy.save_file / safetensors.torch.save_file),
and that mgl's writer produces the very same bytes. The library is not installed here (nor
numpy), so this script writes the bytes itself with struct and json, following the
library's layout (its Rust core, `prepare` and `serialize` in safetensors/src/tensor.rs):

  * 8 bytes: the header's length N, little-endian u64;
  * N bytes: compact JSON (no spaces), UTF-8 as is (serde_json does not escape non-ASCII),
    "__metadata__" first when there is metadata, then the tensors in the order of their
    data, each {"dtype", "shape", "data_offsets"} in that order; padded with spaces so that
    N is a multiple of 8;
  * the data, contiguous, tensors sorted by descending dtype alignment (the library's Dtype
    enum order: F32 > BF16 > F16), then by name.

BF16 is rounded from float32 to nearest even, as torch does; F16 is struct's 'e' format
(IEEE half, round to nearest even).

Files (in tests/data/ckpt/ unless --out says otherwise):
  reference.safetensors        F32, BF16 and F16 tensors of ranks 0..4, an empty tensor,
                               a non-ASCII name, and metadata with escapes and non-ASCII
  reference_ascii.safetensors  the same with every non-ASCII character written as \\uXXXX
                               (surrogate pairs beyond the BMP), as json.dumps does by
                               default: other exporters write that
  reference_f32.safetensors    F32 only, one metadata key: what rt_ckpt_write must write
                               byte for byte (the test writes the same tensors in the same
                               order)

usage: scripts/gen_reference_safetensors.py [--out DIR] [--check]
  --check  regenerate in memory and fail if the files in DIR differ
"""
import argparse
import json
import math
import os
import struct
import sys

# (safetensors dtype, struct format of one element, size); alignment order as in the library
DTYPES = {"F16": ("e", 2), "BF16": (None, 2), "F32": ("f", 4)}
ALIGN_ORDER = {"F16": 7, "BF16": 8, "F32": 11}  # the position in the library's Dtype enum


def bf16_bits(x):
    """float -> bfloat16 bits, rounding float32 to nearest even (torch's .to(torch.bfloat16))."""
    (b,) = struct.unpack("<I", struct.pack("<f", x))
    if math.isnan(x):
        return (b >> 16) | 0x40
    b += 0x7FFF + ((b >> 16) & 1)
    return (b >> 16) & 0xFFFF


def pack(dtype, values):
    if dtype == "BF16":
        return b"".join(struct.pack("<H", bf16_bits(v)) for v in values)
    fmt, _ = DTYPES[dtype]
    return b"".join(struct.pack("<" + fmt, v) for v in values)


def serialize(tensors, metadata=None, ensure_ascii=False):
    """tensors: {name: (dtype, shape, [values])}; the bytes the library would write."""
    order = sorted(tensors, key=lambda n: (-ALIGN_ORDER[tensors[n][0]], n))
    header, data, off = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    for name in order:
        dtype, shape, values = tensors[name]
        assert len(values) == math.prod(shape), name
        b = pack(dtype, values)
        assert len(b) == math.prod(shape) * DTYPES[dtype][1]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(b)]}
        data.append(b)
        off += len(b)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=ensure_ascii).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(data)


def self_check():
    """The layout facts the library's own tests pin down (tensor.rs: test_serialization, test_empty)."""
    out = serialize({"attn.0": ("F32", [1, 2, 3], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])})
    assert out[:8] == struct.pack("<Q", 64)
    assert out[8:72] == b'{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}'
    assert out[72:] == struct.pack("<6f", 0, 1, 2, 3, 4, 5)
    assert serialize({}) == struct.pack("<Q", 8) + b"{}" + b" " * 6
    assert serialize({}, {"framework": "pt"}) == struct.pack("<Q", 40) + b'{"__metadata__":{"framework":"pt"}}' + b" " * 5


# Values chosen so that the C test can state them exactly as float literals.
MIXED = {
    "wte": ("F32", [3, 4], [(i - 5) * 0.25 for i in range(12)]),
    "scalar": ("F32", [], [3.5]),
    "h.0.ln_1.bias": ("F32", [5], [0.1, -0.2, 1e-30, 3.4028234663852886e38, -0.0]),
    "h.0.attn.c_attn.weight": ("F32", [1, 2, 1, 3], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    "empty": ("F32", [0, 3], []),
    "\u00e9mb.\u00fc/\U0001d11e": ("F32", [2], [1.0, 2.0]),
    "h.0.mlp.w_bf16": ("BF16", [2, 3], [1.5, -2.0, 0.15625, 3.140625, 196608.0, -math.inf]),
    "h.0.mlp.w_f16": ("F16", [2, 2, 2], [0.5, -0.0, 65504.0, 2.0**-24, -(2.0**-14), 0.333251953125, math.inf, 1.0]),
}
MIXED_META = {"format": "pt", "mgl.step": "1000", "note": 'caf\u00e9 \u2713 "q" \\ tab\t nl\n \U0001d11e'}

F32_ONLY = {
    "a.bias": ("F32", [3], [0.5, -1.0, 2.0]),
    "a.weight": ("F32", [2, 3], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    "b": ("F32", [], [-7.25]),
}
F32_META = {"format": "pt"}


def files():
    return {
        "reference.safetensors": serialize(MIXED, MIXED_META),
        "reference_ascii.safetensors": serialize(MIXED, MIXED_META, ensure_ascii=True),
        "reference_f32.safetensors": serialize(F32_ONLY, F32_META),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "ckpt"))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    self_check()
    bad = 0
    for name, data in files().items():
        path = os.path.join(args.out, name)
        if args.check:
            try:
                with open(path, "rb") as f:
                    same = f.read() == data
            except OSError:
                same = False
            if not same:
                print(f"{path}: differs from what {sys.argv[0]} generates", file=sys.stderr)
                bad = 1
            continue
        os.makedirs(args.out, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        print(f"{path}: {len(data)} bytes")
    return bad


if __name__ == "__main__":
    sys.exit(main())
