"""The GPU check, run by benchmarks/gpu_check.sh on a machine with a CUDA device.

Built to get everything out of one short run: every line is printed (and appended to
$OUT/gpu_check.md) as soon as it is known, so a run killed at its time limit still returns
what it did; the most important row runs first.

0. First, what no CPU run can settle: (a) the fast-math Triton forward (div.approx,
   lg2.approx; the interpreter runs exact functions) against backend "torch" at eps 1e-3, 0.1
   and 10; (b) the forward with max_iter=1 against torch.mm(out_dtype=float32) at the key
   shape: does the sims part run at tensor-core rate, or is it bound by the tiles' operand
   reloads from L2, as benchmarks/triton_cost.py estimates; (c) each tile the autotuner keeps
   (OST_KERNELS_TRITON_TILE), at the default tol and at 100 iterations, beside the cost model's
   ESTIMATE (benchmarks/triton_cost.json), estimate / measured per row.
1. Key row: B=256, T=32, N=4, d=512, A=10,000, bfloat16, Triton forward (default tol and a
   fixed 100 iterations) and forward+backward against the bare bf16 sims GEMM; this also
   autotunes the kernels at the target shape before anything else compiles.
2. Triton correctness against backend "torch" (kernels without autotuning:
   OST_KERNELS_TRITON_AUTOTUNE=0, one compile per shape): float32 / bfloat16 / float16,
   masks, normalize=False, non-contiguous inputs, T=40, N=16 with A > 65,535 (more class tiles
   than a y grid axis allows), eps 1e-3 and 10, a NaN row (other scores unchanged), two runs
   bitwise equal, iterations / errors / plans against backend torch, gradients, an all-False
   mask row caught on the device, torch.compile(fullgraph=True) of the Triton op.
3. The CUDA extension (built in the background meanwhile by gpu_check.sh): the same
   correctness checks and torch.compile, then its key row (goal: forward within 3x the GEMM)
   beside backend torch; a failed build or a missing backend fails the run.
4. Timings at B=256, T in {8, 32}, A in {400, 10000}, fp32 / bf16, against einops, its
   torch.compile, backend torch and the matmul floor, with peak memory, until the budget is
   spent; the CUDA fallback slower than backend torch at any row fails the run.
5. The OST training-step overhead (ViT-B-16, random weights).

Exit status: 0 when every check passed, 1 otherwise. `--dry-run` runs the same code on the
CPU with tiny shapes (Triton interpreted) to check the script itself.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch

from ost_kernels import available_backends, clip_like_inputs, od_plan, od_solve, od_solve_einops

STOPS = {"tol": (dict(tol=1e-3, max_iter=100), dict(early_stop=True)),
         "fixed100": (dict(tol=0.0, max_iter=100), dict(early_stop=False, max_iter=100))}
DEVICE = "cuda"


class Report:
    """Lines printed and flushed (and appended to $OUT/gpu_check.md) as they are produced."""

    def __init__(self):
        self.ok = True
        self.path = os.path.join(os.environ["OUT"], "gpu_check.md") if os.environ.get("OUT") else None
        if self.path:
            open(self.path, "w").close()

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        if self.path:
            with open(self.path, "a") as fh:
                fh.write(line + "\n")

    def check(self, good: bool, what: str) -> None:
        self.ok &= bool(good)
        self(f"- {'ok' if good else 'FAIL'} {what}")


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def bench(fn, backward=False, inputs=()):
    """(median ms, peak extra MiB) of fn(*inputs) [+ backward]."""
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

    sync()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    call()
    sync()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return do_bench(call, warmup=5, rep=30, return_mode="median"), peak


def key_row(report, B, A, T, N, d, backend="triton", goals=(2.0, 3.0)):
    """`backend` at the key shape, bf16, against the bare bf16 sims GEMM (and, for the CUDA
    fallback, against backend torch: it must never be slower). goals: forward (tol) and
    forward+backward as multiples of the GEMM."""
    tuned = " (autotuned at this shape)" if backend == "triton" else ""
    report(f"## Key row, {backend}: B={B}, T={T}, N={N}, d={d}, A={A}, bfloat16{tuned}")
    v, w, _ = clip_like_inputs(B, A, T, N, d, dtype=torch.bfloat16, device=DEVICE)
    floor_fwd, _ = bench(lambda a, b: a.reshape(-1, d) @ b.reshape(-1, d).T, False, (v, w))
    vg, wg = v.clone().requires_grad_(True), w.clone().requires_grad_(True)
    floor_bwd, _ = bench(lambda a, b: a.reshape(-1, d) @ b.reshape(-1, d).T, True, (vg, wg))
    report(f"- bare bf16 sims GEMM: forward {floor_fwd:.3f} ms, forward+backward {floor_bwd:.3f} ms")
    names = (backend, "torch") if backend == "cuda" else (backend,)
    for stop, goal in (("tol", goals[0]), ("fixed100", None)):
        for name in names:
            t0 = time.time()
            ms, peak = bench(lambda a, b, _n=name: od_solve(a, b, backend=_n, **STOPS[stop][0]), False, (v, w))
            target = f" (goal <= {goal}x)" if goal and name == backend else ""
            report(f"- {name} forward, {stop}: {ms:.3f} ms = {ms / floor_fwd:.2f}x the GEMM{target}, "
                   f"peak {peak:.0f} MiB (first call incl. compiling / tuning {time.time() - t0:.0f} s)")
    for name in names:
        ms, peak = bench(lambda a, b, _n=name: od_solve(a, b, backend=_n), True, (vg, wg))
        target = f" (goal <= {goals[1]}x)" if goals[1] and name == backend else ""
        report(f"- {name} forward+backward, tol: {ms:.3f} ms = {ms / floor_bwd:.2f}x the GEMM floor{target}, "
               f"peak {peak:.0f} MiB")
    _, info = od_solve(v, w, backend=backend, return_info=True)
    report(f"- mean iterations {info.iterations.float().mean().item():.2f}")


COST_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "triton_cost.json")


def _mm_f32(a, b):
    # The GEMM the forward's sims part does: bf16 operands, float32 results.
    return torch.mm(a, b, out_dtype=torch.float32) if a.is_cuda else a.float() @ b.float()


def _estimates() -> dict:
    import json

    with open(COST_PATH) as fh:
        return json.load(fh)


def fast_math_check(report, dry):
    report("## Fast math: the compiled Triton forward (div.approx, lg2.approx) against backend torch")
    shape = dict(B=2, A=3, T=5, N=3, d=16) if dry else dict(B=4, A=50, T=32, N=4, d=512)
    for eps in (1e-3, 0.1, 10.0):
        try:
            compare(report, "triton", **shape, eps=eps, label="fast math")
        except Exception as exc:  # one failure must not hide the rest
            report.check(False, f"triton fast math eps={eps}: {type(exc).__name__}: {exc}")


def _with_tile(name, fn):
    from ost_kernels.triton.fused import TILE_ENV

    if DEVICE == "cpu":  # dry run: the key shape's tiles do not apply to its tiny shapes
        return fn()
    os.environ[TILE_ENV] = name
    try:
        return fn()
    finally:
        del os.environ[TILE_ENV]


def gemm_part_and_tiles(report, B, A, T, N, d, budget):
    """The forward with max_iter=1 against the float32-out GEMM, then every kept tile beside
    the cost model's estimate."""
    est = _estimates()
    report(f"## Sims part and tiles at B={B}, T={T}, N={N}, d={d}, A={A}, bfloat16 (ESTIMATE: {est['source']})")
    v, w, _ = clip_like_inputs(B, A, T, N, d, dtype=torch.bfloat16, device=DEVICE)
    mm, _ = bench(lambda a, b: _mm_f32(a.reshape(-1, d), b.reshape(-1, d).T), False, (v, w))
    report(f"- torch.mm(out_dtype=float32) of the sims: {mm:.3f} ms (cost model: {est['gemm_floor_ms']:.3f} ms at "
           "the dense peak)")
    report("| tile | max_iter=1 ms | vs mm | est. sims part ms | est / measured | tol ms | est. | est / measured | "
           "100 it ms | est. | est / measured |")
    report("|" + "---|" * 11)
    start = time.time()
    for name, e in est["tiles"].items():
        if time.time() - start > budget:
            report(f"- tile budget of {budget:.0f} s spent: remaining tiles skipped")
            return
        try:
            one, _ = _with_tile(name, lambda: bench(
                lambda a, b: od_solve(a, b, backend="triton-fused", max_iter=1, tol=0), False, (v, w)))
            tol, _ = _with_tile(name, lambda: bench(
                lambda a, b: od_solve(a, b, backend="triton-fused", **STOPS["tol"][0]), False, (v, w)))
            fixed, _ = _with_tile(name, lambda: bench(
                lambda a, b: od_solve(a, b, backend="triton-fused", **STOPS["fixed100"][0]), False, (v, w)))
        except Exception as exc:  # report and go on
            report.check(False, f"tile {name}: {type(exc).__name__}: {exc}")
            continue
        report(f"| {name} | {one:.3f} | {one / mm:.2f}x | {e['sims_ms']:.3f} | {e['sims_ms'] / one:.2f} | {tol:.3f} | "
               f"{e['tol_ms']:.3f} | {e['tol_ms'] / tol:.2f} | {fixed:.3f} | {e['fixed100_ms']:.3f} | "
               f"{e['fixed100_ms'] / fixed:.2f} |")


def _rel(x, y):
    return ((x.double() - y.double()).abs().max() / y.double().abs().max().clamp_min(1e-12)).item()


def _inputs(B, A, T, N, d, dtype, masks, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    v = (torch.randn(B, T, d, generator=g) + 0.5 * torch.randn(d, generator=g)).to(DEVICE, dtype)
    w = (torch.randn(A, N, d, generator=g) + 0.5 * torch.randn(d, generator=g)).to(DEVICE, dtype)
    fm = dm = None
    if masks:
        fm = (torch.rand(B, T, generator=g) < 0.7).to(DEVICE)
        dm = (torch.rand(A, N, generator=g) < 0.7).to(DEVICE)
        fm[:, 0] = True
        dm[:, 0] = True
    return v, w, fm, dm


def compare(report, backend, B, A, T, N, d, dtype=torch.float32, masks=True, eps=0.1, normalize=True,
            noncontig=False, grads=True, label="", reg_m=None, weights=False, grad="plan"):
    """Scores, iterations, errors, plans (small cases) and gradients of `backend` against torch;
    with weights (random in [0.5, 1.5]) and / or relaxed marginals (reg_m) where asked."""
    v, w, fm, dm = _inputs(B, A, T, N, d, dtype, masks)
    g = torch.Generator().manual_seed(2)
    extra = dict(reg_m=reg_m)
    if weights:
        extra.update(frame_weights=(torch.rand(B, T, generator=g) + 0.5).to(DEVICE),
                     desc_weights=(torch.rand(A, N, generator=g) + 0.5).to(DEVICE))
    if noncontig:
        v = v.transpose(0, 1).contiguous().transpose(0, 1)
        w = torch.stack([w, torch.zeros_like(w)], -1).flatten(-2)[..., ::2]
    if not normalize:
        v = torch.nn.functional.normalize(v.float(), dim=-1).to(dtype)
        w = torch.nn.functional.normalize(w.float(), dim=-1).to(dtype)
    kw = dict(frame_mask=fm, desc_mask=dm, eps=eps, normalize=normalize, return_info=True, grad=grad, **extra)
    # Seeded like the inputs: an unseeded upstream gradient made the check flaky (a draw whose
    # gradient nearly cancels inflates the relative error).
    go = torch.randn(B, A, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    res = {}
    for name in (backend, "torch"):
        vv, ww = v.detach().clone().requires_grad_(grads), w.detach().clone().requires_grad_(grads)
        s, info = od_solve(vv, ww, **kw, backend=name)
        g = torch.autograd.grad(s, (vv, ww), go) if grads else (None, None)
        res[name] = (s, info, g)
    (s, info, g), (s0, info0, g0) = res[backend], res["torch"]
    same = info.iterations == info0.iterations
    srel = ((s - s0).abs() / s0.abs().clamp_min(1e-6))[same].max().item() if same.any() else float("nan")
    good = (same.float().mean().item() >= 0.99 and srel < 1e-4 and torch.isfinite(s).all().item())
    text = f"{backend} {label or ''} B{B} A{A} T{T} N{N} d{d} {str(dtype)[6:]} eps={eps}: score rel {srel:.1e}, " \
           f"iterations equal on {100 * same.float().mean().item():.1f}%"
    if A * B * T * N <= 1 << 20:
        p = od_plan(v, w, frame_mask=fm, desc_mask=dm, eps=eps, normalize=normalize, backend=backend, tol=0,
                    **extra)
        p0 = od_plan(v, w, frame_mask=fm, desc_mask=dm, eps=eps, normalize=normalize, backend="torch", tol=0,
                     **extra)
        prel = _rel(p, p0)
        good &= prel < 1e-3
        text += f", plan rel {prel:.1e}"
    if grads:
        grel = max(_rel(g[0], g0[0]), _rel(g[1], g0[1]))
        # Low-precision gradients come back in the input dtype: one rounding step at the largest
        # entry is already torch.finfo(dtype).eps relative (7.8e-3 for bfloat16).
        good &= grel < (1e-4 if dtype == torch.float32 else max(8e-3, 2 * torch.finfo(dtype).eps))
        text += f", grad rel {grel:.1e}"
    report.check(good, text)


def special_checks(report, backend):
    B, A, T, N, d = 6, 9, 8, 4, 64
    v, w, _, _ = _inputs(B, A, T, N, d, torch.float32, False)
    clean = od_solve(v, w, backend=backend)
    again = od_solve(v, w, backend=backend)
    report.check(torch.equal(clean, again), f"{backend}: two runs bitwise equal")
    v2 = v.clone()
    v2[2, 3, 5] = float("nan")
    poisoned = od_solve(v2, w, backend=backend)
    keep = [b for b in range(B) if b != 2]
    report.check(torch.equal(poisoned[keep], clean[keep]) and torch.isnan(poisoned[2]).all().item(),
                 f"{backend}: a NaN frame poisons its own video's scores only")
    empty_mask_row_check(report, backend)


# A device-side assertion leaves the CUDA context unusable, so the empty-mask-row error is
# provoked in a child process: this one goes on with its checks.
EMPTY_MASK_ROW_SCRIPT = """
import sys, torch
from ost_kernels import od_solve
device, backend = sys.argv[1], sys.argv[2]
fm = torch.ones(2, 8, dtype=torch.bool, device=device)
fm[1] = False
od_solve(torch.randn(2, 8, 16, device=device), torch.randn(3, 4, 16, device=device), frame_mask=fm, backend=backend)
if device == "cuda":
    torch.cuda.synchronize()
"""


def empty_mask_row_check(report, backend):
    done = subprocess.run([sys.executable, "-c", EMPTY_MASK_ROW_SCRIPT, DEVICE, backend], capture_output=True,
                          text=True, timeout=300)
    said = done.stdout + done.stderr
    caught = done.returncode != 0 and ("no valid entry" in said or "device-side assert" in said)
    last = said.strip().splitlines()[-1] if said.strip() else "no output"
    report.check(caught, f"{backend}: an all-False mask row is an error (device-side assertion on GPU tensors; "
                         f"child process said: {last[:160]})")


def compile_check(report, backend):
    v = torch.randn(16, 8, 512, device=DEVICE, requires_grad=True)
    w = torch.randn(400, 4, 512, device=DEVICE, requires_grad=True)

    def loss(a, b):
        return torch.log_softmax(od_solve(a, b, backend=backend) / 0.01, dim=1)[:, 0].mean()

    got = torch.compile(loss, fullgraph=True)(v, w)
    gv = torch.autograd.grad(got, v)[0]
    want = loss(v, w)
    wv = torch.autograd.grad(want, v)[0]
    report.check(torch.allclose(got, want, rtol=1e-5, atol=1e-6) and torch.allclose(gv, wv, rtol=1e-4, atol=1e-6),
                 f"torch.compile(fullgraph=True) of od_solve(backend='{backend}'), forward and backward")


def correctness(report, backend, dry):
    report(f"## Correctness: {backend} against backend torch")
    if dry:
        cases = [dict(B=2, A=3, T=5, N=3, d=16), dict(B=2, A=3, T=5, N=3, d=16, dtype=torch.bfloat16)]
    else:
        cases = [
            dict(B=7, A=13, T=8, N=4, d=512, masks=False),
            dict(B=5, A=9, T=17, N=5, d=64),
            dict(B=3, A=300, T=32, N=4, d=512),
            dict(B=4, A=50, T=32, N=4, d=512, dtype=torch.bfloat16),
            dict(B=4, A=50, T=16, N=8, d=512, dtype=torch.float16),
            dict(B=4, A=50, T=8, N=4, d=512, normalize=False, label="normalize=False"),
            dict(B=4, A=50, T=8, N=4, d=500, noncontig=True, label="non-contiguous, d=500"),
            dict(B=3, A=20, T=40, N=4, d=128, label="T=40"),
            dict(B=3, A=20, T=8, N=4, d=128, eps=1e-3),
            dict(B=3, A=20, T=8, N=4, d=128, eps=10.0),
            dict(B=2, A=70_000, T=8, N=16, d=64, masks=False, grads=False, label="N=16, A > 65,535"),
        ]
    # Weights and relaxed marginals, where the backend takes them (Backend.features).
    from ost_kernels.backends import REGISTRY

    if {"weights", "reg_m"} <= REGISTRY[backend].features:
        shape = dict(B=2, A=3, T=5, N=3, d=16) if dry else dict(B=4, A=50, T=8, N=4, d=512)
        cases += [dict(**shape, weights=True, label="weights"),
                  dict(**shape, weights=True, reg_m=(float("inf"), 0.5), label="weights, reg_m=(inf, 0.5)"),
                  dict(**shape, reg_m=0.5, eps=0.05, label="reg_m=0.5, eps=0.05"),
                  # grad="implicit": the shared PyTorch backward on this backend's potentials.
                  dict(**shape, weights=True, reg_m=(float("inf"), 0.5), grad="implicit",
                       label="grad=implicit, weights, reg_m=(inf, 0.5)")]
    else:
        report(f"- {backend} takes no weights / reg_m yet (auto passes over it for them)")
    for case in cases:
        try:
            compare(report, backend, **case)
        except Exception as exc:  # one failure must not hide the rest
            report.check(False, f"{backend} {case}: {type(exc).__name__}: {exc}")
    try:
        special_checks(report, backend)
    except Exception as exc:
        report.check(False, f"{backend} special checks: {type(exc).__name__}: {exc}")


def timings(report, budget, dry):
    report("## Timings (B=256, N=4, d=512; ratios are time / other, < 1 is faster)")
    B, d, classes, frames = (2, 16, (3,), (4,)) if dry else (256, 512, (10_000, 400), (32, 8))
    start = time.time()
    compiled_einops = torch.compile(od_solve_einops, dynamic=True) if DEVICE == "cuda" else od_solve_einops
    report("| A | T | dtype | stop | mode | provider | ms | vs matmul | vs einops | vs einops compiled | vs torch "
           "| peak MiB |")
    report("|" + "---|" * 12)
    for A in classes:
        for T in frames:
            for dtype in (torch.bfloat16, torch.float32):
                for stop in ("tol", "fixed100"):
                    for mode in ("fwd", "fwd+bwd"):
                        if time.time() - start > budget:
                            report(f"- timing budget of {budget:.0f} s spent: remaining rows skipped")
                            return
                        timing_rows(report, B, A, T, 4, d, dtype, stop, mode, compiled_einops)


def timing_rows(report, B, A, T, N, d, dtype, stop, mode, compiled_einops):
    v, w, _ = clip_like_inputs(B, A, T, N, d, dtype=dtype, device=DEVICE)
    bwd = mode == "fwd+bwd"
    v.requires_grad_(bwd)
    w.requires_grad_(bwd)
    kw, ekw = STOPS[stop]
    providers = {"matmul": lambda a, b: a.reshape(-1, d) @ b.reshape(-1, d).T,
                 "einops": lambda a, b: od_solve_einops(a, b, **ekw),
                 "einops compiled": lambda a, b: compiled_einops(a, b, **ekw)}
    for backend in ("triton", "cuda", "torch"):
        if available_backends(DEVICE, dtype)[backend] is None:
            providers[backend] = lambda a, b, _n=backend: od_solve(a, b, backend=_n, **kw)
    res = {}
    for name, fn in providers.items():
        try:
            res[name] = bench(fn, bwd, (v, w))
        except Exception as exc:  # report and go on
            report(f"- {name} A={A} T={T} {dtype} {stop} {mode}: {type(exc).__name__}: {exc}")
    floor, ref, refc, torch_ms = (res.get(k, (None,))[0] for k in ("matmul", "einops", "einops compiled", "torch"))
    for name, (ms, peak) in res.items():
        r = lambda x: f"{ms / x:.2f}x" if x else "-"  # noqa: E731
        report(f"| {A} | {T} | {str(dtype)[6:]} | {stop} | {mode} | {name} | {ms:.3f} | {r(floor)} | {r(ref)} | "
               f"{r(refc)} | {r(torch_ms)} | {peak:.1f} |")
    if "cuda" in res and torch_ms:
        report.check(res["cuda"][0] <= torch_ms, f"cuda no slower than backend torch at A={A} T={T} "
                     f"{str(dtype)[6:]} {stop} {mode} ({res['cuda'][0] / torch_ms:.2f}x)")
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def train_step_overhead(report, batch=32, frames=8, classes=400):
    """One training step of a randomly initialized ViT-B-16 with OST logits against pooled-only
    logits (the ViFi-CLIP baseline), bf16 autocast."""
    import open_clip
    from triton.testing import do_bench

    from ost.descriptors.descriptors import DescriptorSet
    from ost.model.loss import symmetric_kl_loss
    from ost.model.logits import ODLogitsConfig
    from ost.model.model import OSTModel

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
    report(f"- training step, ViT-B-16 random, B={batch}, T={frames}, bf16: pooled-only {base:.1f} ms, "
           f"OST {ost:.1f} ms: {100 * (ost / base - 1):+.1f}% (target <= +5%)")


def wait_for_build(report, log_path, deadline):
    """Wait for gpu_check.sh's background build of the CUDA extension (its exit status file)."""
    status_path = log_path + ".status"
    while not os.path.exists(status_path) and time.time() < deadline:
        time.sleep(2)
    if not os.path.exists(status_path):
        report.check(False, "the CUDA extension build did not finish in time")
        return False
    status = open(status_path).read().strip()
    if status != "0":
        tail = subprocess.run(["tail", "-n", "25", log_path], capture_output=True, text=True).stdout
        report.check(False, f"the CUDA extension build failed (exit {status}):\n```\n{tail}\n```")
        return False
    report.check(True, "the CUDA extension built")
    return True


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=150.0, help="seconds for the timing table")
    parser.add_argument("--tile-budget", type=float, default=120.0, help="seconds for the per-tile rows")
    parser.add_argument("--build-log", default=None, help="log of gpu_check.sh's background CUDA build")
    parser.add_argument("--dry-run", action="store_true",
                        help="check this script on the CPU: tiny shapes, Triton interpreted")
    args = parser.parse_args(argv)
    global DEVICE
    started = time.time()
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
        DEVICE = "cpu"
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (--dry-run checks the script on the CPU)")
        return 2
    import triton

    report = Report()
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU (dry run)"
    report(f"# GPU check, {time.strftime('%Y-%m-%d')}, {name}, torch {torch.__version__}, triton {triton.__version__}")
    why = available_backends(DEVICE, torch.bfloat16)["triton"]
    report.check(why is None, f"backend triton is available{'' if why is None else ': ' + why}")
    if why is None:
        os.environ["OST_KERNELS_TRITON_AUTOTUNE"] = "0"
        fast_math_check(report, args.dry_run)
        os.environ.pop("OST_KERNELS_TRITON_AUTOTUNE")
        gemm_part_and_tiles(report, *((2, 3, 4, 4, 16) if args.dry_run else (256, 10_000, 32, 4, 512)),
                            budget=args.tile_budget)
        report(f"- elapsed {time.time() - started:.0f} s")
        if args.dry_run:
            key_row(report, 2, 3, 4, 4, 16)
        else:
            key_row(report, 256, 10_000, 32, 4, 512)
        os.environ["OST_KERNELS_TRITON_AUTOTUNE"] = "0"  # correctness: one compile per shape
        correctness(report, "triton", args.dry_run)
        if not args.dry_run:
            try:
                compile_check(report, "triton")
            except Exception as exc:
                report.check(False, f"torch.compile of the Triton op: {type(exc).__name__}: {exc}")
        report(f"- elapsed {time.time() - started:.0f} s")
    if args.build_log and wait_for_build(report, args.build_log, time.time() + 240):
        why = available_backends(DEVICE, torch.float32)["cuda"]
        report.check(why is None, f"backend cuda is available{'' if why is None else ': ' + why}")
        if why is None:
            correctness(report, "cuda", args.dry_run)
            try:
                compile_check(report, "cuda")
            except Exception as exc:
                report.check(False, f"torch.compile of the CUDA op: {type(exc).__name__}: {exc}")
            try:
                key_row(report, *((2, 3, 4, 4, 16) if args.dry_run else (256, 10_000, 32, 4, 512)),
                        backend="cuda", goals=(3.0, None))
            except Exception as exc:
                report.check(False, f"cuda key row: {type(exc).__name__}: {exc}")
        report(f"- elapsed {time.time() - started:.0f} s")
    os.environ.pop("OST_KERNELS_TRITON_AUTOTUNE", None)
    timings(report, args.budget, args.dry_run)
    if not args.dry_run:
        report("## OST training step")
        try:
            train_step_overhead(report)
        except Exception as exc:  # report, keep the rest of the output
            report(f"- training step check failed: {type(exc).__name__}: {exc}")
    report(f"- total {time.time() - started:.0f} s; {'all checks passed' if report.ok else 'SOME CHECKS FAILED'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
