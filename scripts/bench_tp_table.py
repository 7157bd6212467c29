"""scripts/bench_tp_table.py OUT TP PRESET [ROWS] — the table of scripts/bench_tp.sh from its outputs.

Reads the RESULT line of each run in OUT (mgl bench's and torch_gpt.py's: ms, tok_s,
tflops_per_gpu, mem_GB) and prints, as Markdown: the weak-scaling config (PRESET at tp TP),
mgl against PyTorch's hand-written tensor parallelism eager and compiled, with mgl's
weak-scaling efficiency (its TFLOP/s a GPU over its own 1.2b's at tp 1, the issues'
figure) and its speed against compiled (compiled's step over mgl's); the 1.2b at tp 1 (mgl
and compiled PyTorch); the 1.2b at tp TP (strong scaling: tp 1's step over its); 355M at tp
TP without and with --sp (peak memory a GPU). A run that is missing or printed no RESULT
shows as '-'. ROWS (default "ref weak strong sp") are the rows bench_tp.sh ran: exits 1 if
one of mgl's runs among them has no RESULT.
"""
import json
import os
import sys


def result(out, name):
    """the RESULT line of OUT/NAME.txt as a dict (also bench_gpu.sh's table), or None"""
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
    if len(argv) not in (4, 5):
        print("usage: bench_tp_table.py OUT TP PRESET [ROWS]", file=sys.stderr)
        return 2
    out, tp, preset = argv[1], int(argv[2]), argv[3]
    rows = (argv[4] if len(argv) == 5 else "ref weak strong sp").split()
    r = {n: result(out, n) for n in ("ref.mgl", "ref.compiled", "weak.mgl", "weak.eager", "weak.compiled",
                                     "strong.mgl", "sp-off.mgl", "sp-on.mgl")}
    ref, weak, comp = r["ref.mgl"], r["weak.mgl"], r["weak.compiled"]
    eff = f"weak scaling {100 * weak['tflops_per_gpu'] / ref['tflops_per_gpu']:.1f}% of mgl's 1.2b at tp 1" \
        if weak and ref else "-"
    vs = f"{comp['ms'] / weak['ms']:.3f}x compiled" if weak and comp else "-"
    print(f"| case ({tp} GPUs) | mgl | PyTorch eager | PyTorch compiled | mgl against |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {preset} at tp {tp}, batch 8x1024 | {cell(weak)} | {cell(r['weak.eager'])} | {cell(comp)} | {eff}; {vs} |")
    ref_vs = f"{r['ref.compiled']['ms'] / ref['ms']:.3f}x compiled" if ref and r["ref.compiled"] else "-"
    print(f"| 1.2b at tp 1 (one GPU), batch 8x1024 | {cell(ref)} | | {cell(r['ref.compiled'])} | {ref_vs} |")
    strong = r["strong.mgl"]
    speedup = f"{ref['ms'] / strong['ms']:.2f}x tp 1's step" if strong and ref else "-"
    print(f"| 1.2b at tp {tp} (strong scaling) | {cell(strong)} | | | {speedup} |")
    off, on = r["sp-off.mgl"], r["sp-on.mgl"]
    mem = f"--sp peak memory {on['mem_GB']:.1f} against {off['mem_GB']:.1f} GB a GPU" if on and off else "-"
    print(f"| 355M at tp {tp}, batch 8x1024, without --sp | {cell(off)} | | | |")
    print(f"| 355M at tp {tp}, with --sp | {cell(on)} | | | {mem} |")
    ran = {"ref": ["ref.mgl"], "weak": ["weak.mgl"], "strong": ["strong.mgl"], "sp": ["sp-off.mgl", "sp-on.mgl"]}
    missing = [n for row in rows for n in ran.get(row, []) if not r[n]]
    if missing:
        print("bench_tp_table.py: no RESULT from " + ", ".join(missing), file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
