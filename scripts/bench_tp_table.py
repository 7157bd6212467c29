"""scripts/bench_tp_table.py OUT TP PRESET — the table of scripts/bench_tp.sh from its outputs.

Reads the RESULT line of each run in OUT (mgl bench's and torch_gpt.py's: ms, tok_s,
tflops_per_gpu, mem_GB) and prints, as Markdown: the weak-scaling config (PRESET at tp TP),
mgl against PyTorch's hand-written tensor parallelism eager and compiled, with mgl's
weak-scaling efficiency (its TFLOP/s a GPU over its own 1.2b's at tp 1, the issues'
figure) and its ratio to compiled; the 1.2b at tp 1 (mgl and compiled PyTorch); the 1.2b at
tp TP (strong scaling: its step against tp 1's); 355M at tp TP without and with --sp (peak
memory a GPU). A run that is missing or printed no RESULT shows as '-'. Exits 1 if mgl's
config row or its reference is missing.
"""
import json
import os
import sys


def result(out, name):
    try:
        with open(os.path.join(out, name + ".txt")) as f:
            for line in f:
                if line.startswith("RESULT "):
                    return json.loads(line[7:])
    except (OSError, ValueError):
        pass
    return None


def cell(r):
    if not r:
        return "-"
    return f"{r['tflops_per_gpu']:.1f} TFLOP/s a GPU ({r['ms']:.2f} ms, {r['tok_s']:,} tok/s, {r['mem_GB']:.1f} GB a GPU)"


def main(argv):
    if len(argv) != 4:
        print("usage: bench_tp_table.py OUT TP PRESET", file=sys.stderr)
        return 2
    out, tp, preset = argv[1], int(argv[2]), argv[3]
    r = {n: result(out, n) for n in ("ref.mgl", "ref.compiled", "weak.mgl", "weak.eager", "weak.compiled",
                                     "strong.mgl", "sp-off.mgl", "sp-on.mgl")}
    ref, weak, comp = r["ref.mgl"], r["weak.mgl"], r["weak.compiled"]
    eff = f"weak scaling {100 * weak['tflops_per_gpu'] / ref['tflops_per_gpu']:.1f}% of mgl's 1.2b at tp 1" \
        if weak and ref else "-"
    vs = f"{weak['tflops_per_gpu'] / comp['tflops_per_gpu']:.3f}x compiled" if weak and comp else "-"
    print(f"| case ({tp} GPUs) | mgl | PyTorch eager | PyTorch compiled | mgl against |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {preset} at tp {tp}, batch 8x1024 | {cell(weak)} | {cell(r['weak.eager'])} | {cell(comp)} | {eff}; {vs} |")
    ref_vs = f"{ref['tflops_per_gpu'] / r['ref.compiled']['tflops_per_gpu']:.3f}x compiled" \
        if ref and r["ref.compiled"] else "-"
    print(f"| 1.2b at tp 1 (one GPU), batch 8x1024 | {cell(ref)} | | {cell(r['ref.compiled'])} | {ref_vs} |")
    strong = r["strong.mgl"]
    speedup = f"{ref['ms'] / strong['ms']:.2f}x tp 1's step" if strong and ref else "-"
    print(f"| 1.2b at tp {tp} (strong scaling) | {cell(strong)} | | | {speedup} |")
    off, on = r["sp-off.mgl"], r["sp-on.mgl"]
    mem = f"--sp peak memory {on['mem_GB']:.1f} against {off['mem_GB']:.1f} GB a GPU" if on and off else "-"
    print(f"| 355M at tp {tp}, batch 8x1024, without --sp | {cell(off)} | | | |")
    print(f"| 355M at tp {tp}, with --sp | {cell(on)} | | | {mem} |")
    return 0 if weak and ref else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
