#!/usr/bin/env python3
"""tests/gpu/tensorboard_read.py — `mgl train --tensorboard DIR` read by TensorBoard itself.

Loads DIR with TensorBoard's own reader (EventAccumulator, which checks each record's
CRCs and parses the Event protobufs; with its default purge_orphaned_data, a resumed run's
SessionLog START drops the steps an earlier file logged from there on), prints every
scalar, and checks them against the JSON log that the same runs wrote with --log (a step
logged twice, by a run and by the one resumed before it, counts as the later one's, as
`mgl plot` reads it):

  - the tags that every step has (lm loss, learning-rate, grad-norm, iteration-time,
    tokens-per-sec, mem-allocated-bytes) and lm loss validation, lm loss validation ppl
    where the log has val_loss;
  - the same steps, in order, as the log;
  - lm loss, learning-rate, grad-norm, tokens-per-sec and the validation loss equal to the
    log's numbers within the rounding of the two (the log's printed digits, a float32).

usage: tests/gpu/tensorboard_read.py DIR LOG.jsonl
Exit status: 0 all agree, 1 a difference (each printed), 2 bad usage, 77 no tensorboard
module here ("SKIP: no tensorboard").
"""
import json
import math
import sys

try:
    from tensorboard.backend.event_processing import event_accumulator
except ImportError:
    print("SKIP: no tensorboard")
    sys.exit(77)

if len(sys.argv) != 3:
    print(__doc__.split("usage: ")[1].split("\n")[0], file=sys.stderr)
    sys.exit(2)
tb_dir, log_path = sys.argv[1], sys.argv[2]

# the JSON log, the later of a step logged twice winning
log = {}
with open(log_path) as f:
    for line in f:
        row = json.loads(line)
        for s in [s for s in log if s >= row["step"]]:
            del log[s]
        log[row["step"]] = row
steps = sorted(log)

acc = event_accumulator.EventAccumulator(tb_dir, size_guidance={event_accumulator.SCALARS: 0})
acc.Reload()
tags = sorted(acc.Tags()["scalars"])
scalars = {t: {e.step: e.value for e in acc.Scalars(t)} for t in tags}

print("%-6s" % "step" + "".join(" %22s" % t for t in tags))
for s in sorted({s for t in tags for s in scalars[t]}):
    print("%-6d" % s + "".join(" %22s" % ("%.6g" % scalars[t][s] if s in scalars[t] else "-") for t in tags))

bad = []
every = ["lm loss", "learning-rate", "grad-norm", "iteration-time", "tokens-per-sec", "mem-allocated-bytes"]
for t in every:
    if t not in scalars:
        bad.append("no scalar '%s'" % t)
    elif sorted(scalars[t]) != steps:
        bad.append("'%s' is at steps %s, the log at %s" % (t, sorted(scalars[t]), steps))
val_steps = [s for s in steps if "val_loss" in log[s]]
for t in ["lm loss validation", "lm loss validation ppl"]:
    if val_steps and sorted(scalars.get(t, {})) != val_steps:
        bad.append("'%s' is at steps %s, the log's val_loss at %s" % (t, sorted(scalars.get(t, {})), val_steps))


def close(a, b, digits):
    """a float32 of x against x printed with `digits` significant (g) or decimal (f) digits"""
    kind, n = digits
    printed = 0.5 * 10 ** -n if kind == "f" else 0.5 * 10 ** (-n + 1) * abs(b)
    return abs(a - b) <= printed + 1e-7 * abs(b) + 1e-30


# the log's field, the tag, and how the log prints it (runtime/train.c)
pairs = [("loss", "lm loss", ("f", 6)), ("lr", "learning-rate", ("g", 6)), ("grad_norm", "grad-norm", ("g", 6)),
         ("tokens_per_s", "tokens-per-sec", ("f", 1)), ("val_loss", "lm loss validation", ("f", 6))]
compared = 0
for field, tag, digits in pairs:
    for s in steps:
        if field in log[s] and s in scalars.get(tag, {}):
            compared += 1
            if not close(scalars[tag][s], log[s][field], digits):
                bad.append("step %d: '%s' %.9g, the log's %s %r" % (s, tag, scalars[tag][s], field, log[s][field]))
for s in val_steps:
    v = scalars.get("lm loss validation ppl", {}).get(s)
    if v is not None and abs(v - math.exp(log[s]["val_loss"])) > 1e-5 * v:
        bad.append("step %d: perplexity %.9g, exp(val_loss) %.9g" % (s, v, math.exp(log[s]["val_loss"])))

for b in bad:
    print("FAIL: " + b)
if not steps or compared == 0:
    print("FAIL: nothing compared (the log has %d steps)" % len(steps))
    sys.exit(1)
print("%s: %d steps, %d tags, %d values compared with %s" % ("FAIL" if bad else "ok", len(steps), len(tags), compared,
                                                             log_path))
sys.exit(1 if bad else 0)
