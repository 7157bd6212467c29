#!/usr/bin/env python3
"""tests/gpu/hf_import.py — mgl import against a real client (issue 15): a seeded, randomly
initialised transformers.GPT2LMHeadModel of a small config, saved with save_pretrained
(safetensors), imported with `mgl import`; then its loss on a fixed batch, as transformers
computes it (fp32), beside mgl's loss of the same tokens: the fp32 cpu backend within 1e-4,
the bf16 cuda backend within 1e-2.

mgl's loss: `mgl eval` is not there yet, so the validation loss of `mgl train --init DIR
--lr 0 --steps 1 --val BATCH.bin --eval-batches 1` (--log's val_loss, 6 decimals): the
validation batch is the shard's consecutive windows from its start, dropout is off in
evaluation, and with a learning rate of 0 the step before it changes no weight.

usage: tests/gpu/hf_import.py MGL OUTDIR   (exit 0 all ok, 1 a FAIL, 77 SKIP: no torch or
transformers)
"""
import json, os, struct, subprocess, sys

mgl, out = sys.argv[1], sys.argv[2]
try:
    import torch
    import transformers
except ImportError as e:
    print(f"SKIP: mgl import against transformers: {e.name} is not installed")
    sys.exit(77)

B, T, V = 4, 64, 50257
torch.manual_seed(1234)
cfg = transformers.GPT2Config(vocab_size=V, n_positions=128, n_embd=128, n_layer=2, n_head=4,
                              resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
model = transformers.GPT2LMHeadModel(cfg).eval()
hf = os.path.join(out, "hf_random")
model.save_pretrained(hf, safe_serialization=True)

# the batch: B consecutive windows of T + 1 tokens... as mgl's evaluation reads a shard:
# window b is tokens [b T, b T + T), its targets one on
g = torch.Generator().manual_seed(99)
tokens = torch.randint(0, V, (B * T + 1,), generator=g)
x = torch.stack([tokens[b * T:(b + 1) * T] for b in range(B)])
y = torch.stack([tokens[b * T + 1:(b + 1) * T + 1] for b in range(B)])
with torch.no_grad():
    logits = model(x).logits
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, V).float(), y.reshape(-1)).item()

def shard(path, toks):   # the llm.c layout mgl reads: 256 int32 header, then uint16 tokens
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", 20240520, 1, len(toks), *([0] * 253)))
        f.write(struct.pack(f"<{len(toks)}H", *toks))

data = os.path.join(out, "hf_batch.bin")
shard(data, tokens.tolist())

def run(*args):
    r = subprocess.run([mgl, *args], capture_output=True, text=True)
    if r.returncode:
        print(f"FAIL: mgl {' '.join(args)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
    return r.returncode == 0

fails = 0
imported = os.path.join(out, "hf_imported")
if not run("import", "models/gpt2.mgl", "--hf", hf, "-o", imported):
    sys.exit(1)
for backend, tol in (("cpu", 1e-4), ("cuda", 1e-2)):
    log = os.path.join(out, f"hf_loss_{backend}.jsonl")
    if os.path.exists(log):
        os.remove(log)
    ok = run("train", "--init", imported, "--set", "p_drop=0", "--backend", backend, "--data", data, "--val", data,
             "--batch", str(B), "--seq", str(T), "--steps", "1", "--lr", "0", "--eval-batches", "1", "--log", log)
    loss = None
    if ok:
        loss = [json.loads(l) for l in open(log) if "val_loss" in l][-1]["val_loss"]
    good = loss is not None and abs(loss - ref) <= tol
    fails += not good
    print(f"{'ok' if good else 'FAIL'}: GPT2LMHeadModel's loss {ref:.6f}, mgl import then {backend} "
          f"({'fp32' if backend == 'cpu' else 'bf16'}) {loss if loss is None else f'{loss:.6f}'} "
          f"(|difference| {abs(loss - ref) if loss is not None else float('nan'):.2e}, tolerance {tol:g})")
sys.exit(1 if fails else 0)
