"""scripts/flash_delta.py — what flash attention's bf16 roundings alone move BERT's gradients by.

usage: python3 scripts/flash_delta.py DIR [--heads H]

DIR is `mgl train models/bert.mgl ... --dump-first DIR` (its first step's weights and batch,
any backend). The first step's gradients of mgl's BERT (tests/gpu/torch_bert.py's forward) in
PyTorch fp32 on the cpu, against the same with the attention computed as mgl's flash kernels
(kernels/ops.cu) round it, one rounding at a time and then all of them:
  - o: the attention's output stored in bf16, which the backward's delta = rowsum(dO o)
    reads (as FlashAttention-2 and PyTorch's SDPA keep it: Dao, "FlashAttention-2", 2023);
  - q, k, v, dO: the inputs in bf16 (GEMM outputs in mgl's bf16 activations);
  - P and dS: rounded to bf16 before the GEMMs that take them (P V, dV = P^T dO, dK, dQ).
For each, the four gradients furthest from fp32 (relative L2 error; attention key biases,
zero in exact arithmetic, left out). First it checks itself: with no rounding the emulated
attention's gradients must equal autograd's within 1e-4, or it exits 1.

Why (twenty-eighth sitting, docs/perf-notes.md): gpu-check section 9 found the cuda
gradients of a 2-layer BERT's last q and k 15% from the cpu's; o's rounding alone moves them
14% on that batch: at initialization the last layer's attention is near uniform, and dS =
P (dP - delta) is a small difference that delta's rounding error is a large part of.
Needs numpy and torch (the cpu suffices); exits 77 (after SKIP) without them.
"""
import argparse
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "gpu"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="mgl train --dump-first DIR of a BERT run")
    ap.add_argument("--heads", type=int, default=16)
    a = ap.parse_args()
    try:
        import numpy as np
        import torch
        from compare_runs import load
        import torch_bert
    except ImportError as e:
        print("SKIP: flash_delta.py: %s" % e)
        sys.exit(77)
    bf = lambda t: t.to(torch.bfloat16).float()

    class Flash(torch.autograd.Function):
        """softmax(q k^T / sqrt(dh)) v over the kept keys, rounded where r (a set) says"""
        @staticmethod
        def forward(ctx, q, k, v, keep, r):
            if "in" in r:
                q, k, v = bf(q), bf(k), bf(v)
            s = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~keep, float("-inf"))
            lse = torch.logsumexp(s, -1, keepdim=True)
            p = torch.exp(s - lse)
            o = (bf(p) if "p" in r else p) @ v
            o = bf(o) if "o" in r else o
            ctx.save_for_backward(q, k, v, o, p)
            ctx.r = r
            return o

        @staticmethod
        def backward(ctx, do):
            q, k, v, o, p = ctx.saved_tensors
            r, scale = ctx.r, 1 / math.sqrt(q.shape[-1])
            do = bf(do) if "in" in r else do
            delta = (do * o).sum(-1, keepdim=True)   # from o as stored
            ds = p * (do @ v.transpose(-1, -2) - delta) * scale
            ds = bf(ds) if "p" in r else ds
            pv = bf(p) if "p" in r else p
            return ds @ k, ds.transpose(-1, -2) @ q, pv.transpose(-1, -2) @ do, None, None

    class Ops(torch_bert.Torch):
        def __init__(self, r):
            super().__init__(torch)
            self.r = r

        def attention(self, q, k, v, mask, heads):
            if self.r is None:
                return super().attention(q, k, v, mask, heads)
            B, T, D = q.shape
            q, k, v = (t.view(B, T, heads, D // heads).transpose(1, 2) for t in (q, k, v))
            keep = (mask != 0)[:, None, None, :].expand(B, heads, T, T)
            return Flash.apply(q, k, v, keep, self.r).transpose(1, 2).reshape(B, T, D)

    w0 = load(a.dir + "/checkpoint.safetensors")
    batch = {k: torch.from_numpy(v).long() for k, v in load(a.dir + "/batch.safetensors").items()}

    def grads(r):
        w = {k: torch.from_numpy(v.astype(np.float32)).requires_grad_() for k, v in w0.items()}
        torch_bert.forward(w, batch, a.heads, Ops(r))[0].backward()
        return {k: p.grad.double().numpy() for k, p in w.items()}

    def errors(g):
        return sorted(((np.linalg.norm(g[k] - ref[k]) / (np.linalg.norm(ref[k]) + 1e-30), k)
                       for k in ref if not k.endswith("attention.k.bias")), reverse=True)

    ref = grads(None)
    worst = errors(grads(frozenset()))[0]
    print("%s: the emulated attention, unrounded, against autograd's: worst %.1e (%s)"
          % (("ok" if worst[0] < 1e-4 else "FAIL",) + worst))
    if worst[0] >= 1e-4:
        sys.exit(1)
    for what, r in (("o in bf16 (delta from it)", {"o"}), ("q, k, v and dO in bf16", {"in"}),
                    ("P and dS in bf16", {"p"}), ("all of these", {"o", "in", "p"})):
        print("%-26s " % what + ", ".join("%s %.2e" % (k, e) for e, k in errors(grads(frozenset(r)))[:4]))


if __name__ == "__main__":
    main()
