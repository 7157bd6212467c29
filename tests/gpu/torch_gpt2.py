"""tests/gpu/torch_gpt2.py — GPT-2 in plain PyTorch, the reference mgl is checked against.

A small GPT-2 (the architecture of models/gpt2.mgl: pre-LN blocks, tanh GELU, learned
positions, tied embeddings) that loads a checkpoint exported by `mgl export --hf`, runs the
batch mgl ran (a shard of exactly seq + 1 tokens: every row is the same window), and
compares, in fp32:
  - the loss of the first step with mgl's (within 1e-2: mgl stores activations in bf16),
  - every gradient with mgl's first-step gradients (also exported under GPT-2's names):
    relative L2 error within 5e-2, the tolerance for bf16 activations over 12 layers,
  - then trains 20 steps with AdamW as mgl does (betas 0.9/0.95, eps 1e-8, weight decay
    0.1 on matrices and embeddings, clipping at 1, a constant learning rate) and compares
    each step's loss with mgl's log (within 1%).
PyTorch's own bf16 (autocast, the same steps) also runs, and its worst gradient and loss
difference from fp32 are printed beside mgl's: what bf16 alone moves (not a bound here, as
it is in torch_bert.py, whose data is fixed for it; this one trains on the repository's
text of the day).
Prints one line per check and "torch_gpt2: N passed, N failed"; exits 1 on a failure.
"""
import argparse
import json
import math
import struct
import sys

import torch
import torch.nn.functional as F

import compare_runs


def load_safetensors(path):
    """An fp32 safetensors file as torch tensors (compare_runs.load reads it)."""
    return {k: torch.from_numpy(v.astype("float32")) for k, v in compare_runs.load(path).items()}


class GPT2(torch.nn.Module):
    def __init__(self, w, heads):
        super().__init__()
        self.p = torch.nn.ParameterDict({k.replace(".", "__"): torch.nn.Parameter(v.clone()) for k, v in w.items()})
        self.layers = 1 + max(int(k.split(".")[2]) for k in w if k.startswith("transformer.h."))
        self.heads = heads

    def w(self, name):
        return self.p[name.replace(".", "__")]

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.w("transformer.wte.weight")[idx] + self.w("transformer.wpe.weight")[:T]
        for l in range(self.layers):
            h = lambda n: self.w(f"transformer.h.{l}.{n}")
            a = F.layer_norm(x, (x.shape[-1],), h("ln_1.weight"), h("ln_1.bias"), 1e-5)
            qkv = a @ h("attn.c_attn.weight") + h("attn.c_attn.bias")
            q, k, v = qkv.split(x.shape[-1], dim=-1)
            q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, -1)
            x = x + y @ h("attn.c_proj.weight") + h("attn.c_proj.bias")
            m = F.layer_norm(x, (x.shape[-1],), h("ln_2.weight"), h("ln_2.bias"), 1e-5)
            m = F.gelu(m @ h("mlp.c_fc.weight") + h("mlp.c_fc.bias"), approximate="tanh")
            x = x + m @ h("mlp.c_proj.weight") + h("mlp.c_proj.bias")
        x = F.layer_norm(x, (x.shape[-1],), self.w("transformer.ln_f.weight"), self.w("transformer.ln_f.bias"), 1e-5)
        logits = x @ self.w("transformer.wte.weight").t()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--grads", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--log", required=True, help="mgl's metrics.jsonl of the same run")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda"
    raw = open(a.data, "rb").read()
    tokens = torch.tensor(struct.unpack("<%dH" % ((len(raw) - 1024) // 2), raw[1024:]), dtype=torch.long)
    T = len(tokens) - 1
    idx = tokens[:T].repeat(a.batch, 1).to(dev)
    tgt = tokens[1:].repeat(a.batch, 1).to(dev)

    w0 = load_safetensors(a.weights)
    mgl_grads = load_safetensors(a.grads)
    mgl_losses = [json.loads(line)["loss"] for line in open(a.log)]
    passed = failed = 0

    def check(ok, what):
        nonlocal passed, failed
        print(("ok: " if ok else "FAIL: ") + what)
        passed, failed = passed + ok, failed + (not ok)

    def train(bf16):
        """a.steps of AdamW as mgl's from w0, in fp32 (the reference) or under autocast (bf16,
        as PyTorch users train): each step's loss, and the first step's gradients"""
        model = GPT2(w0, a.heads).to(dev)
        decay = [p for n, p in model.p.items() if p.dim() >= 2]
        other = [p for n, p in model.p.items() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                                lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
        losses, grads = [], None
        for step in range(a.steps):
            opt.zero_grad()
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
                loss = model(idx, tgt)
            loss.backward()
            losses.append(loss.item())
            if step == 0:
                # (a copy: clipping scales .grad in place)
                grads = {name: model.w(name).grad.float().cpu().clone() for name in mgl_grads}
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        return losses, grads

    def worst_grad(grads):   # the largest relative L2 error from the reference's gradients (a NaN the worst)
        e = [((g - ref_g[n]).norm().item() / (ref_g[n].norm().item() + 1e-4 * math.sqrt(g.numel())), n)
             for n, g in grads.items()]
        return max((x if math.isfinite(x) else math.inf, n) for x, n in e)

    def worst_loss(run):   # the largest relative loss difference from the reference's over the steps
        d = [abs(x - y) / abs(x) for x, y in zip(ref, run)]
        return max([x if math.isfinite(x) else math.inf for x in d] or [1])

    # PyTorch in fp32, the reference; and its own bf16 (autocast), printed beside mgl's as the
    # yardstick of what bf16 alone moves (docs/gpu.md, section 4)
    ref, ref_g = train(False)
    half, half_g = train(True)
    check(abs(ref[0] - mgl_losses[0]) < 1e-2, f"first loss: torch {ref[0]:.5f}, mgl {mgl_losses[0]:.5f}")
    worst_g, where = worst_grad(mgl_grads)
    theirs, their_where = worst_grad(half_g)
    print(f"  PyTorch's bf16, its worst gradient: {their_where} {theirs:.2e}")
    check(worst_g < 5e-2, f"{len(mgl_grads)} gradients: worst relative L2 error {worst_g:.2e} ({where})")
    n = min(len(ref), len(mgl_losses))
    print("losses, torch / mgl / PyTorch's bf16: " +
          " ".join(f"{x:.3f}/{y:.3f}/{z:.3f}" for x, y, z in zip(ref[:n], mgl_losses[:n], half)))
    worst_l = worst_loss(mgl_losses[:n])
    print(f"  PyTorch's bf16, its worst relative loss difference: {worst_loss(half):.2e}")
    check(n == a.steps and worst_l < 0.01,
          f"{n} training steps: worst relative loss difference {worst_l:.2e} "
          f"(torch {ref[0]:.4f} -> {ref[n - 1]:.4f}, mgl {mgl_losses[0]:.4f} -> {mgl_losses[n - 1]:.4f})")
    print(f"torch_gpt2: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
