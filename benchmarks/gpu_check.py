"""GPU check, run by benchmarks/gpu_check.sh on a machine with a CUDA device.

1. Correctness of every GPU backend (triton, cuda once built) against backend "torch" on the
   same inputs, float32 and bfloat16, forward and backward, masks, default tol and fixed
   iterations; torch.compile(fullgraph=True) of od_solve with the Triton op.
2. Timings at B=256, T in {8, 32}, N=4, d=512, A in {400, 10000}, float32 and bfloat16,
   default tol and fixed 100 iterations, forward and forward+backward, against
   od_solve_einops, torch.compile of it, and the bare matmul that computes the sims in the
   same dtype (the floor), with peak extra memory. Prints each ratio and a markdown table
   (also written to $OUT/gpu_check.md when $OUT is set).

Stops timing new rows once --budget seconds have passed, so that it fits one device call.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from ost_kernels import available_backends, clip_like_inputs, od_solve, od_solve_einops

STOPS = {"tol": (dict(tol=1e-3, max_iter=100), dict(early_stop=True)),
         "fixed100": (dict(tol=0.0, max_iter=100), dict(early_stop=False, max_iter=100))}


DEVICE = "cuda"


def gpu_backends(dtype):
    return [b for b in ("triton", "cuda") if available_backends(DEVICE, dtype)[b] is None]


def check_correctness(lines, shapes):
    torch.manual_seed(0)
    ok = True
    for dtype in (torch.float32, torch.bfloat16):
        unavailable = {b: why for b, why in available_backends(DEVICE, dtype).items() if why and b in ("triton", "cuda")}
        for b, why in unavailable.items():
            lines.append(f"- {b} {dtype}: not available: {why}")
        for backend in gpu_backends(dtype):
            worst_f = worst_g = 0.0
            for (B, A, T, N, d, masks) in shapes:
                v = torch.randn(B, T, d, device=DEVICE).to(dtype)
                w = torch.randn(A, N, d, device=DEVICE).to(dtype)
                fm = torch.rand(B, T, device=DEVICE) < 0.7 if masks else None
                dm = torch.rand(A, N, device=DEVICE) < 0.7 if masks else None
                if masks:
                    fm[:, 0] = True
                    dm[:, 0] = True
                go = torch.randn(B, A, device=DEVICE)
                for stop in ("fixed100", "tol"):
                    res = {}
                    for name in (backend, "torch"):
                        vv = v.clone().requires_grad_(True)
                        ww = w.clone().requires_grad_(True)
                        s, info = od_solve(vv, ww, frame_mask=fm, desc_mask=dm, backend=name, return_info=True,
                                           **STOPS[stop][0])
                        gv, gw = torch.autograd.grad(s, (vv, ww), go)
                        res[name] = (s, info.iterations, gv.float(), gw.float())
                    s, it, gv, gw = res[backend]
                    s0, it0, gv0, gw0 = res["torch"]
                    same_iters = it == it0
                    rel = ((s - s0).abs() / s0.abs().clamp_min(1e-6))[same_iters].max().item()
                    grel = max(((gv - gv0).abs().max() / gv0.abs().max().clamp_min(1e-12)).item(),
                               ((gw - gw0).abs().max() / gw0.abs().max().clamp_min(1e-12)).item())
                    worst_f, worst_g = max(worst_f, rel), max(worst_g, grel if stop == "fixed100" else 0.0)
                    if stop == "tol" and same_iters.float().mean().item() < 0.99:
                        ok = False
                        lines.append(f"- FAIL {backend} {dtype}: iterations differ from torch on "
                                     f"{(~same_iters).sum().item()} pairs")
            # Gradients come back in the input dtype: bfloat16 ones may differ by an ulp (2^-8).
            good = worst_f < 1e-4 and worst_g < (1e-4 if dtype == torch.float32 else 8e-3)
            ok &= good
            lines.append(f"- {'ok' if good else 'FAIL'} {backend} {dtype}: max rel score error {worst_f:.2e}, "
                         f"max rel grad error {worst_g:.2e} (vs backend torch, same inputs)")
    if "triton" in gpu_backends(torch.float32) and DEVICE == "cuda":
        v = torch.randn(16, 8, 512, device=DEVICE, requires_grad=True)
        w = torch.randn(400, 4, 512, device=DEVICE, requires_grad=True)

        def loss(a, b):
            return torch.log_softmax(od_solve(a, b, backend="triton") / 0.01, dim=1)[:, 0].mean()

        got = torch.compile(loss, fullgraph=True)(v, w)
        want = loss(v, w)
        good = torch.allclose(got, want, rtol=1e-5, atol=1e-6)
        ok &= good
        lines.append(f"- {'ok' if good else 'FAIL'} torch.compile(fullgraph=True) of od_solve(backend='triton')")
    return ok


def timed(fn, backward, inputs):
    """(median ms, peak extra MiB) of fn(*inputs) [+ backward], synchronized."""
    def call():
        out = fn(*inputs)
        if backward:
            for x in inputs:
                x.grad = None
            out.sum().backward()

    if DEVICE == "cpu":  # dry run: exercise the code, not a measurement
        t0 = time.perf_counter()
        call()
        return (time.perf_counter() - t0) * 1e3, 0.0
    from triton.testing import do_bench

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    call()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    ms = do_bench(call, warmup=10, rep=50, return_mode="median")
    return ms, peak


def run_timings(lines, budget, B=256, N=4, d=512, classes=(400, 10000), frames=(8, 32)):
    start = time.time()
    compiled_einops = torch.compile(od_solve_einops, dynamic=True) if DEVICE == "cuda" else od_solve_einops
    header = "| A | T | dtype | stop | mode | provider | ms | vs matmul | vs einops | vs einops compiled | peak MiB |"
    table = [header, "|" + "---|" * 11]
    for A in classes:
        for T in frames:
            for dtype in (torch.float32, torch.bfloat16):
                for stop in ("tol", "fixed100"):
                    for mode in ("fwd", "fwd+bwd"):
                        if time.time() - start > budget:
                            lines.append(f"- timing budget of {budget} s spent: remaining rows skipped")
                            return table
                        v, w, _ = clip_like_inputs(B, A, T, N, d, dtype=dtype, device=DEVICE)
                        bwd = mode == "fwd+bwd"
                        v.requires_grad_(bwd)
                        w.requires_grad_(bwd)
                        kw, ekw = STOPS[stop]
                        providers = {
                            "matmul": lambda a, b: a.reshape(-1, d) @ b.reshape(-1, d).T,
                            "einops": lambda a, b: od_solve_einops(a, b, **ekw),
                            "einops compiled": lambda a, b: compiled_einops(a, b, **ekw),
                        }
                        for backend in gpu_backends(dtype):
                            providers[backend] = lambda a, b, _n=backend: od_solve(a, b, backend=_n, **kw)
                        res = {}
                        for name, fn in providers.items():
                            try:
                                res[name] = timed(fn, bwd, (v, w))
                            except Exception as exc:  # report and go on: one failure must not hide the rest
                                lines.append(f"- {name} A={A} T={T} {dtype} {stop} {mode}: {type(exc).__name__}: {exc}")
                        floor = res.get("matmul", (None,))[0]
                        ref = res.get("einops", (None,))[0]
                        refc = res.get("einops compiled", (None,))[0]
                        for name, (ms, peak) in res.items():
                            r = lambda x: f"{ms / x:.2f}x" if x else "-"
                            table.append(f"| {A} | {T} | {str(dtype)[6:]} | {stop} | {mode} | {name} | {ms:.3f} | "
                                         f"{r(floor)} | {r(ref)} | {r(refc)} | {peak:.1f} |")
                        del v, w
                        if DEVICE == "cuda":
                            torch.cuda.empty_cache()
    return table


def train_step_overhead(lines, batch=32, frames=8, classes=400):
    """One training step of a randomly initialized ViT-B-16 with OST logits against pooled-only
    logits (the ViFi-CLIP baseline), bf16 autocast: the OST step should cost at most 5% more."""
    import open_clip
    from triton.testing import do_bench

    from ost.descriptors import DescriptorSet
    from ost.loss import symmetric_kl_loss
    from ost.model import ODLogitsConfig, OSTModel

    names = [f"action {a}" for a in range(classes)]
    descs = DescriptorSet(names, [[f"object {a}.{k}" for k in range(4)] for a in range(classes)],
                          [[f"step {k} of action {a}" for k in range(4)] for a in range(classes)])
    clip = open_clip.create_model("ViT-B-16", pretrained=None).to(DEVICE)
    model = OSTModel(clip, open_clip.get_tokenizer("ViT-B-16"), descs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    x = torch.randn(batch, frames, 3, 224, 224, device=DEVICE)
    labels = torch.randint(0, classes, (batch,), device=DEVICE)
    res = {}
    for name, use_ot in (("pooled only (ViFi-CLIP)", False), ("OST (pooled + OD solver)", True)):
        model.config = ODLogitsConfig(use_ot=use_ot)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = symmetric_kl_loss(model(x, class_ids=labels), labels)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        res[name] = do_bench(step, warmup=3, rep=20, return_mode="median")
    base, ost = res["pooled only (ViFi-CLIP)"], res["OST (pooled + OD solver)"]
    lines.append(f"- training step, ViT-B-16 random, B={batch}, T={frames}, bf16: pooled-only {base:.1f} ms, "
                 f"OST {ost:.1f} ms: {100 * (ost / base - 1):+.1f}% (target <= +5%)")


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=360.0, help="seconds for the timing part")
    parser.add_argument("--dry-run", action="store_true",
                        help="check this script on the CPU: correctness only, tiny shapes, Triton interpreted")
    args = parser.parse_args(argv)
    global DEVICE
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
        DEVICE = "cpu"
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (--dry-run checks the script on the CPU)")
        return 2
    import triton

    device_name = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU (dry run)"
    lines = [f"# GPU check, {time.strftime('%Y-%m-%d')}, {device_name}, torch {torch.__version__}, "
             f"triton {triton.__version__}", "", "## Correctness"]
    shapes = [(7, 13, 8, 4, 512, False), (5, 9, 17, 5, 64, True), (3, 300, 32, 4, 512, True)]
    ok = check_correctness(lines, [(2, 3, 8, 4, 16, False), (2, 3, 5, 3, 8, True)] if args.dry_run else shapes)
    lines += ["", "## Timings (B=256, N=4, d=512; ratios are time / other, <1 is faster)"]
    if args.dry_run:
        lines += run_timings(lines, args.budget, B=2, d=16, classes=(3,), frames=(4,))
    else:
        lines += run_timings(lines, args.budget)
        lines += ["", "## OST training step"]
        try:
            train_step_overhead(lines)
        except Exception as exc:  # report, keep the rest of the output
            lines.append(f"- training step check failed: {type(exc).__name__}: {exc}")
    text = "\n".join(lines)
    print(text)
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_check.md"), "w") as fh:
            fh.write(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
