"""tests/gpu/compare_runs.py — two `mgl train` runs of one model, compared.

usage: compare_runs.py NAME A_DIR A_LOG B_DIR B_LOG [--first F] [--grads G] [--losses L] [--same]

A_DIR and B_DIR are `--dump-first` directories (the first step's weights and gradients),
A_LOG and B_LOG the runs' `--log` files. Checks, each printed as one ok/FAIL line:
  - the initial weights are the same (the runs are of one model, seed and data),
  - the first loss within F relative (default 3e-4),
  - every gradient within G relative L2 error (default 8e-2: bf16 activations); a gradient
    that is zero in exact arithmetic must stay small instead: an attention key bias's
    (softmax ignores a shift of all of a query's scores, so only rounding is left of it:
    in bf16 about 1e-6, a relative error between two runs near 1) must have an RMS under
    1e-2 of the median gradient's in both runs, and any gradient whose RMS in A is under
    1e-6 must stay under 1e-3 an element in B,
  - every step's loss both logs have within L relative (default 1e-2).
  --same: the runs are the same job twice: the first loss must be equal to the bit (the
    forward pass has no atomics; a first loss that moves between runs is a race).
Prints "compare_runs: N passed, N failed"; exits 1 on a failure.
"""
import json
import re
import struct
import sys

import numpy as np

ZERO_IN_EXACT_ARITHMETIC = re.compile(r"attention\.k\.bias$")


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        assert meta["dtype"] == "F32", (name, meta["dtype"])
        b, e = meta["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=np.float32).astype(np.float64).reshape(meta["shape"])
    return out


def losses(path):
    return [json.loads(line)["loss"] for line in open(path) if line.strip() and '"loss"' in line]


def main(argv):
    args, opts = [], {"--first": 3e-4, "--grads": 8e-2, "--losses": 1e-2}
    same = False
    i = 0
    while i < len(argv):
        if argv[i] == "--same":
            same = True
        elif argv[i] in opts:
            opts[argv[i]] = float(argv[i + 1])
            i += 1
        else:
            args.append(argv[i])
        i += 1
    name, adir, alog, bdir, blog = args
    passed = failed = 0

    def check(ok, what):
        nonlocal passed, failed
        passed += ok
        failed += not ok
        print(("ok: " if ok else "FAIL: ") + name + ": " + what)

    wa, wb = load(adir + "/checkpoint.safetensors"), load(bdir + "/checkpoint.safetensors")
    check(wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa),
          "the same initial weights (%d tensors)" % len(wa))
    la, lb = losses(alog), losses(blog)
    d = abs(lb[0] - la[0]) / abs(la[0])
    check(d <= opts["--first"], "first loss %.6f against %.6f: relative difference %.2e (at most %g)"
          % (lb[0], la[0], d, opts["--first"]))
    if same:
        check(la[0] == lb[0], "first loss equal between the two runs (%.6f, %.6f)" % (la[0], lb[0]))
    ga, gb = load(adir + "/grads.safetensors"), load(bdir + "/grads.safetensors")
    rms = lambda x: np.sqrt(np.mean(x * x))
    small = 1e-2 * np.median([rms(g) for g in ga.values()])
    worst, where, errs = 0.0, "", []
    for k in ga:
        a, b = ga[k], gb[k]
        if ZERO_IN_EXACT_ARITHMETIC.search(k):
            e = 0.0 if max(rms(a), rms(b)) < small else np.inf
        elif rms(a) < 1e-6:
            e = 0.0 if np.sqrt(np.mean((b - a) ** 2)) < 1e-3 else np.inf
        else:
            e = np.linalg.norm(b - a) / np.linalg.norm(a)
        if not np.isfinite(b).all():
            e = np.inf
        errs.append((e, k, np.sqrt(np.mean(a * a)), np.sqrt(np.mean((b - a) ** 2))))
        if e >= worst:
            worst, where = e, k
    for e, k, ra, rd in sorted(errs, reverse=True)[:3]:
        print("  %-40s relative %.2e  RMS %.3e  RMS of the difference %.3e" % (k, e, ra, rd))
    check(ga.keys() == gb.keys() and worst <= opts["--grads"],
          "%d gradients, worst relative L2 error %.2e (%s; at most %g)" % (len(ga), worst, where, opts["--grads"]))
    n = min(len(la), len(lb))
    if n > 1:
        w = max(abs(lb[i] - la[i]) / abs(la[i]) for i in range(n))
        check(w <= opts["--losses"], "%d losses, worst relative difference %.2e (at most %g)" % (n, w, opts["--losses"]))
    print("compare_runs: %d passed, %d failed" % (passed, failed))
    return failed != 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
