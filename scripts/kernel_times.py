#!/usr/bin/env python3
"""scripts/kernel_times.py — one step's kernels by name from Nsight Compute's CSV of
gpu__time_duration (scripts/kernel_times.sh writes it): the launches after the last but one
k_adamw up to and including the last (the optimizer is one launch a step), summed by kernel
name, largest first: launches, total and mean microseconds, share of the step's sum. Where
the run has several ranks (processes or devices), those of the last k_adamw's rank alone.

usage: kernel_times.py NCU.csv   (the columns found by name: "Kernel Name", "Metric Name",
"Metric Unit", "Metric Value"; ncu writes its own lines before the header, skipped)"""
import csv
import sys

SCALE = {'nsecond': 1e-3, 'ns': 1e-3, 'usecond': 1.0, 'us': 1.0, 'msecond': 1e3, 'ms': 1e3, 'second': 1e6, 's': 1e6}


def launches(path):
    """[(kernel name, microseconds, rank: process and device)] in launch order"""
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    head = next((i for i, r in enumerate(rows) if 'Kernel Name' in r and 'Metric Value' in r), None)
    if head is None:
        sys.exit(f'kernel_times: no header with "Kernel Name" and "Metric Value" in {path}')
    col = {n: i for i, n in enumerate(rows[head])}
    out = []
    for r in rows[head + 1:]:
        if len(r) != len(rows[head]) or r[col['Metric Name']] != 'gpu__time_duration.sum':
            continue
        unit = r[col['Metric Unit']] if 'Metric Unit' in col else 'nsecond'
        if unit not in SCALE:
            sys.exit(f'kernel_times: unknown unit {unit!r}')
        try:
            value = float(r[col['Metric Value']].replace(',', ''))
        except ValueError:
            sys.exit(f'kernel_times: not a number: {r[col["Metric Value"]]!r}')
        rank = tuple(r[col[c]] for c in ('Process ID', 'Device') if c in col)
        out.append((r[col['Kernel Name']], value * SCALE[unit], rank))
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit('usage: kernel_times.py NCU.csv')
    ks = launches(sys.argv[1])
    last = [k for k in ks if k[0].startswith('k_adamw')][-1:]
    ks = [k for k in ks if not last or k[2] == last[0][2]]
    opt = [i for i, (name, _, _) in enumerate(ks) if name.startswith('k_adamw')]
    if len(opt) < 2:
        sys.exit(f'kernel_times: {len(opt)} launches of k_adamw among {len(ks)}: a step needs two (run 2 steps or more)')
    step = ks[opt[-2] + 1:opt[-1] + 1]
    by = {}
    for name, us, _ in step:
        n, t = by.get(name, (0, 0.0))
        by[name] = (n + 1, t + us)
    total = sum(t for _, t in by.values())
    print(f'one step: {len(step)} launches, {total / 1e3:.3f} ms summed (each timed alone)')
    print(f'{"total ms":>9} {"share":>6} {"launches":>8} {"mean us":>8}  kernel')
    for name, (n, t) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        print(f'{t / 1e3:9.3f} {100 * t / total:5.1f}% {n:8d} {t / n:8.1f}  {name[:90]}')


if __name__ == '__main__':
    main()
