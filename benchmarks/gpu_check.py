"""The GPU check: everything a first run on a CUDA device must settle, in about 4 minutes.

    bash benchmarks/gpu_check.sh [--out DIR]        # on the device machine (DIR: benchmarks/out/)
    bash benchmarks/gpu_check.sh --dry-run          # the same flow on the CPU (part of the tests)

gpu_check.sh builds the CUDA extension in the background and runs this script, which fills the
rows below, each within its own time budget (compiles included), and rewrites DIR/gpu_check.json
and DIR/gpu_check.md after every row: a run cut short still leaves what it did. The rows, in the
order they are written (they run in another order: the CUDA rows wait for the build, the
resources row reads what the others compiled):

  device             GPU, driver, Python, torch, Triton, CUDA; the ost_kernels commit
  triton-resources   registers / spills / shared memory of every Triton kernel variant this run
                     compiled, as compiled on this machine (a run that compiled none, the dry run,
                     compiles the key-shape variants ahead of time for sm_90 instead)
  gemm               the bf16 sims GEMM at the key shape with bf16 and with float32 output
  correctness-*      triton, triton-fused and cuda against backend torch at eps 1e-3, 0.1 and 10
                     (the compiled kernels' fast math included), then dtypes, masks, odd shapes,
                     weights / reg_m, gradients, NaN isolation, bitwise repeatability, torch.compile
  timing-*           triton (a sweep of chunk sizes, 8-256 MiB), triton-fused, cuda and torch at
                     the key shape (B=256, T=32, N=4, d=512, A=10,000, bfloat16), forward and
                     forward + backward, beside the cost model's ESTIMATE (estimate / measured)
  auto               what backend "auto" measures and picks at the key shape
  memory             A = 100,000 classes, scores only (no gradient): peak extra memory
  train-step         one OST training step (ViT-B-16, random weights) against the pooled-only one

A GPU backend that should be there and is not (the extension did not build, Triton does not
import) fails its rows with the reason; it is never a row left out. The CUDA extension is
probed in a child process once the build has finished, so this process never caches an
import made against a half-built library. Exit status: 0 when every row passed and nothing was
skipped, 1 when a row failed (or was dropped), 3 when rows passed but some work was skipped
for time (the markdown says what and why).

--dry-run runs the same rows on CPU tensors at tiny shapes: Triton under its interpreter, the
CUDA code through the test backend "cuda-emulated" (tests/helpers/cuda_emulation, which
gpu_check.sh builds in the background), a tiny open_clip model; timings are single calls.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from ost_kernels import clip_like_inputs, od_plan, od_solve  # noqa: E402

ESTIMATES_PATH = os.path.join(ROOT, "benchmarks", "gpu_check_estimates.json")
KEY = dict(B=256, A=10_000, T=32, N=4, d=512)
DRY_KEY = dict(B=2, A=5, T=4, N=3, d=16)
CHUNK_SWEEP_MB = (8, 16, 24, 32, 64, 128, 256)  # benchmarks/triton_cost.py CHUNK_SWEEP_MB
GPU_BACKENDS = ("triton", "triton-fused", "cuda")

# (key, title, budget s on the GPU, budget s in the dry run), in the order they are written.
ROWS = (
    ("device", "Device and versions", 5, 10),
    ("triton-resources", "Triton kernels as compiled here: registers, spills, shared memory", 5, 60),
    ("gemm", "bf16 sims GEMM at the key shape", 10, 10),
    ("correctness-triton", "Correctness: triton (two-phase) against backend torch", 35, 60),
    ("correctness-triton-fused", "Correctness: triton-fused against backend torch", 35, 60),
    ("correctness-cuda", "Correctness: cuda against backend torch", 20, 60),
    ("timing-triton", "Timing: triton (two-phase) at the key shape, chunk sizes 8-256 MiB", 25, 30),
    ("timing-triton-fused", "Timing: triton-fused at the key shape", 20, 20),
    ("timing-cuda", "Timing: cuda at the key shape", 10, 20),
    ("timing-torch", "Timing: torch at the key shape", 15, 20),
    ("auto", "Backend auto: what it measures and picks at the key shape", 10, 30),
    ("memory", "A = 100,000 classes, scores only: peak extra memory", 10, 20),
    ("train-step", "OST training step", 25, 60),
)
TOTAL_BUDGET_S = 235  # the whole run on the GPU, start-up included (the lease allows ~4 minutes)
DRY_TOTAL_BUDGET_S = 170


class Row:
    """One row of the report: its lines, its data for the JSON, and its time budget."""

    def __init__(self, report: "Report", key: str, title: str, budget: float):
        self.report, self.key, self.title, self.budget = report, key, title, budget
        self.status = "dropped"  # until it runs: a row that never ran fails the check
        self.lines: list[str] = []
        self.data: dict = {}
        self.skipped: list[str] = []
        self.failures = 0
        self.start = None
        self.seconds = 0.0

    def left(self) -> float:
        return self.budget - (time.time() - self.start)

    def item(self, what: str) -> bool:
        """Whether there is time left for `what`; if not, it is listed as skipped."""
        if self.left() > 0:
            return True
        self.skipped.append(f"{what}: the row's budget of {self.budget:.0f} s was spent")
        self.report.say(f"  skipped {what} (budget spent)")
        return False

    def line(self, text: str) -> None:
        self.lines.append(text)
        self.report.say(text)

    def check(self, good: bool, text: str) -> bool:
        self.failures += not good
        self.line(f"- {'ok' if good else 'FAIL'} {text}")
        return bool(good)

    def attempt(self, what: str, fn, *args, **kwargs):
        """fn(*args, **kwargs), or a FAIL line naming `what` if it raises (the row goes on)."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            self.check(False, f"{what}: {_describe(exc)}")
            return None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


class Report:
    """The rows, written as JSON and markdown after every change."""

    def __init__(self, out_dir: str, dry: bool, header: dict):
        self.out_dir, self.dry, self.header = out_dir, dry, header
        self.started = time.time()
        factor = 1 if dry else 0
        self.rows = {key: Row(self, key, title, (budget, dry_budget)[factor])
                     for key, title, budget, dry_budget in ROWS}
        self.total_budget = DRY_TOTAL_BUDGET_S if dry else TOTAL_BUDGET_S
        os.makedirs(out_dir, exist_ok=True)
        self.json_path = os.path.join(out_dir, "gpu_check.json")
        self.md_path = os.path.join(out_dir, "gpu_check.md")
        self.write()

    def say(self, text: str) -> None:
        print(text, flush=True)

    def run(self, key: str, fn, *args) -> Row:
        row = self.rows[key]
        elapsed = time.time() - self.started
        if elapsed > self.total_budget:
            row.status = "skipped"
            row.skipped.append(f"the run's budget of {self.total_budget} s was spent ({elapsed:.0f} s elapsed)")
            self.say(f"## {row.title}: skipped, the run's budget was spent")
            self.write()
            return row
        self.say(f"## {row.title} (budget {row.budget:.0f} s)")
        row.start = time.time()
        row.status = "running"
        try:
            fn(row, *args)
        except Exception as exc:  # the row fails; the run goes on
            row.check(False, f"{_describe(exc)}\n```\n{traceback.format_exc()[-1500:]}```")
        row.seconds = time.time() - row.start
        row.status = "fail" if row.failures else ("pass, some skipped" if row.skipped else "pass")
        self.say(f"  [{row.status}: {row.seconds:.1f} s of {row.budget:.0f}]")
        self.write()
        return row

    def outcome(self) -> tuple[int, str]:
        rows = self.rows.values()
        failed = [r.key for r in rows if r.status in ("fail", "dropped", "running")]
        skipped = [r.key for r in rows if r.skipped]
        if failed:
            return 1, f"FAILED: {', '.join(failed)}"
        if skipped:
            return 3, f"every row that ran passed; skipped for time: {', '.join(skipped)}"
        return 0, "all rows passed"

    def as_json(self) -> dict:
        code, summary = self.outcome()
        return dict(self.header, total_s=round(time.time() - self.started, 1), exit_status=code, summary=summary,
                    rows=[dict(key=r.key, title=r.title, status=r.status, seconds=round(r.seconds, 1),
                               budget_s=r.budget, lines=r.lines, skipped=r.skipped, data=r.data)
                          for r in self.rows.values()])

    def markdown(self) -> str:
        h = self.header
        code, summary = self.outcome()
        out = [f"# GPU check, {h['date']}: {h['device']}{' (DRY RUN on the CPU)' if self.dry else ''}", "",
               f"{h['versions']}; command `{h['command']}`; {time.time() - self.started:.0f} s; {summary}", ""]
        for r in self.rows.values():
            out += [f"## {r.title}: {r.status} ({r.seconds:.0f} s of {r.budget:.0f})", ""] + r.lines
            out += [f"- skipped: {s}" for s in r.skipped] + [""]
        return "\n".join(out)

    def write(self) -> None:
        # Whole files replaced atomically: a run killed mid-write leaves the previous version.
        texts = ((self.json_path, json.dumps(self.as_json(), indent=1) + "\n"), (self.md_path, self.markdown()))
        for path, text in texts:
            with open(path + ".tmp", "w") as fh:
                fh.write(text)
            os.replace(path + ".tmp", path)


class Env:
    """Where the check runs: the device, the backends' names there, and how to time."""

    def __init__(self, dry: bool):
        self.dry = dry
        self.device = "cpu" if dry else "cuda"
        self.key = DRY_KEY if dry else KEY
        # The CUDA code runs on the CPU as the test backend "cuda-emulated" in a dry run.
        self.names = {"triton": "triton", "triton-fused": "triton-fused", "cuda": "cuda-emulated" if dry else "cuda"}

    def sync(self):
        if not self.dry:
            torch.cuda.synchronize()

    def bench(self, fn, backward=False, inputs=()):
        """(median ms, peak extra MiB) of fn(*inputs) [+ backward]; one call in a dry run."""
        def call():
            out = fn(*inputs)
            if backward:
                for x in inputs:
                    x.grad = None
                out.float().sum().backward()

        if self.dry:
            t0 = time.perf_counter()
            call()
            return (time.perf_counter() - t0) * 1e3, 0.0
        from triton.testing import do_bench

        self.sync()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        call()
        self.sync()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        return do_bench(call, warmup=3, rep=25, return_mode="median"), peak


# --- device ---------------------------------------------------------------------------------

def header(env: Env, command: str) -> dict:
    import triton

    if env.dry:
        device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    else:
        props = torch.cuda.get_device_properties(0)
        device = f"{props.name}, sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB"
    versions = (f"Python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
                f"Triton {triton.__version__}")
    return dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), device=device, versions=versions,
                command=command, dry_run=env.dry)


def device_row(row: Row, env: Env, hdr: dict) -> None:
    row.line(f"- {hdr['device']}")
    row.line(f"- {hdr['versions']}")
    if not env.dry:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True)
        row.line(f"- nvidia-smi: {smi.stdout.strip() or smi.stderr.strip()[:200]}")
    commit = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True)
    row.line(f"- ost_kernels at {commit.stdout.strip()[:100] or 'an unknown commit (no git)'}"
             f"{' (with uncommitted changes)' if dirty.stdout.strip() else ''}")
    row.data.update(hdr, commit=commit.stdout.strip())
    from ost_kernels.backends import unavailable_reason

    for name in ("triton", "triton-fused"):  # not "cuda" here: its build is still running
        why = unavailable_reason(name, env.device, torch.bfloat16 if not env.dry else torch.float32)
        row.check(why is None, f"backend {name} is available{'' if why is None else ': ' + why}")


# --- triton resources -----------------------------------------------------------------------

def _jit_functions():
    from ost_kernels.triton import kernels, sinkhorn

    return {"fused forward": kernels.od_forward_kernel, "fused weights": kernels.od_weights_kernel,
            "sinkhorn": sinkhorn.od_sinkhorn_kernel, "chunk weights": sinkhorn.od_chunk_weights_kernel}


# Constexprs that name a variant in the table (the rest are fixed flags of the launch).
_LABEL_CONSTS = ("TP", "NP", "BB", "BA", "T_LO", "FIXED", "LOG_DOMAIN", "WEIGHTED", "RELAXED", "MASKED", "DENSE",
                 "POTENTIALS", "EVEN_K", "INPUT_PRECISION")


def compiled_variants() -> list[dict]:
    """Registers, spills and shared memory of every Triton kernel variant compiled in this
    process (read from Triton's per-device kernel caches), one dict each."""
    out = []
    for label, fn in _jit_functions().items():
        while not hasattr(fn, "device_caches") and hasattr(fn, "fn"):  # an autotuner's wrapped kernel
            fn = fn.fn
        for caches in list(getattr(fn, "device_caches", {}).values()):
            for kernel in list(caches[0].values()):
                if getattr(kernel, "n_regs", None) is None:
                    kernel._init_handles()
                src = getattr(kernel, "src", None)
                consts = {}
                for k, v in getattr(src, "constants", {}).items():
                    name = src.fn.arg_names[k[0]] if isinstance(k, tuple) else k
                    if name in _LABEL_CONSTS:
                        consts[name] = v
                out.append(dict(kernel=label, variant=" ".join(f"{k}={v}" for k, v in consts.items()),
                                num_warps=kernel.metadata.num_warps, registers=int(kernel.n_regs),
                                spill_bytes=int(kernel.n_spills), shared_bytes=int(kernel.metadata.shared)))
    return out


def ahead_of_time_variants(arch: int) -> list[dict]:
    """The key shape's variants of every kernel compiled for `arch` with this Triton
    (ost_kernels.triton.aot), for a run that compiled none (the interpreter's)."""
    from ost_kernels.triton import aot

    variants = aot.one_per_kernel((arch,)) + aot.two_phase_variants((arch,), [(32, 4)], ("dense", "scores-only"))
    results = aot.run(variants, jobs=max(1, min(8, os.cpu_count() or 1)), progress=False)
    out = []
    for v, r in results.items():
        if "error" in r:
            out.append(dict(kernel=v.kernel, variant=v.label, error=r["error"]))
        else:
            out.append(dict(kernel=v.kernel, variant=v.label, num_warps=v.cfg.num_warps, registers=r["registers"],
                            spill_bytes=r["spill_bytes"], shared_bytes=r["shared_bytes"]))
    return out


def resources_row(row: Row, env: Env) -> None:
    found = compiled_variants()
    source = "compiled by this run"
    if not found:
        arch = 90
        if not env.dry:
            major, minor = torch.cuda.get_device_capability()
            arch = 10 * major + minor
        source = f"none compiled by this run (Triton interpreted); the key-shape variants compiled for sm_{arch}"
        found = ahead_of_time_variants(arch)
    row.line(f"{len(found)} variants, {source}.")
    row.line("")
    row.line("| kernel | variant | warps | registers | spill bytes | shared KiB |")
    row.line("|---|---|---|---|---|---|")
    for r in found:
        if "error" in r:
            row.check(False, f"{r['kernel']} {r['variant']} failed to compile: {r['error']}")
            continue
        row.line(f"| {r['kernel']} | {r['variant']} | {r['num_warps']} | {r['registers']} | {r['spill_bytes']} | "
                 f"{r['shared_bytes'] / 1024:.1f} |")
    row.line("")
    spilled = [r for r in found if r.get("spill_bytes")]
    row.check(not spilled, f"no variant spills ({len(spilled)} do)")
    row.data["variants"] = found


# --- gemm -----------------------------------------------------------------------------------

def _mm(a, b, out_dtype):
    if a.is_cuda:
        return torch.mm(a, b, out_dtype=out_dtype) if out_dtype == torch.float32 else a @ b
    return (a.float() @ b.float()).to(out_dtype)


def gemm_row(row: Row, env: Env) -> None:
    k = env.key
    v, w, _ = clip_like_inputs(k["B"], k["A"], k["T"], k["N"], k["d"], dtype=torch.bfloat16, device=env.device)
    a, b = v.reshape(-1, k["d"]), w.reshape(-1, k["d"]).T
    flops = 2 * a.shape[0] * b.shape[1] * k["d"]
    for label, out_dtype in (("bf16 output", torch.bfloat16), ("float32 output", torch.float32)):
        ms, _ = env.bench(lambda x, y, _o=out_dtype: _mm(x, y, _o), False, (a, b))
        row.line(f"- ({a.shape[0]}, {k['d']}) x ({k['d']}, {b.shape[1]}), {label}: {ms:.3f} ms = "
                 f"{flops / ms / 1e9:.0f} TFLOP/s")
        row.data[label] = ms
    row.check(all(x > 0 for x in row.data.values()), "both GEMMs ran")


# --- correctness ----------------------------------------------------------------------------

def _inputs(env, B, A, T, N, d, dtype, masks, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    v = (torch.randn(B, T, d, generator=g) + 0.5 * torch.randn(d, generator=g)).to(env.device, dtype)
    w = (torch.randn(A, N, d, generator=g) + 0.5 * torch.randn(d, generator=g)).to(env.device, dtype)
    fm = dm = None
    if masks:
        fm = (torch.rand(B, T, generator=g) < 0.7).to(env.device)
        dm = (torch.rand(A, N, generator=g) < 0.7).to(env.device)
        fm[:, 0] = True
        dm[:, 0] = True
    return v, w, fm, dm


def _rel(x, y):
    return ((x.double() - y.double()).abs().max() / y.double().abs().max().clamp_min(1e-12)).item()


def compare(row, env, backend, B, A, T, N, d, dtype=torch.float32, masks=True, eps=0.1, normalize=True,
            noncontig=False, grads=True, label="", reg_m=None, weights=False, grad="plan"):
    """Scores, iterations, plans (small cases) and gradients of `backend` against torch."""
    v, w, fm, dm = _inputs(env, B, A, T, N, d, dtype, masks)
    g = torch.Generator().manual_seed(2)
    extra = dict(reg_m=reg_m)
    if weights:
        extra.update(frame_weights=(torch.rand(B, T, generator=g) + 0.5).to(env.device),
                     desc_weights=(torch.rand(A, N, generator=g) + 0.5).to(env.device))
    if noncontig:
        v = v.transpose(0, 1).contiguous().transpose(0, 1)
        w = torch.stack([w, torch.zeros_like(w)], -1).flatten(-2)[..., ::2]
    if not normalize:
        v = torch.nn.functional.normalize(v.float(), dim=-1).to(dtype)
        w = torch.nn.functional.normalize(w.float(), dim=-1).to(dtype)
    kw = dict(frame_mask=fm, desc_mask=dm, eps=eps, normalize=normalize, return_info=True, grad=grad, **extra)
    go = torch.randn(B, A, generator=torch.Generator().manual_seed(1)).to(env.device)  # seeded: no flaky draws
    res = {}
    for name in (backend, "torch"):
        vv, ww = v.detach().clone().requires_grad_(grads), w.detach().clone().requires_grad_(grads)
        s, info = od_solve(vv, ww, **kw, backend=name)
        gr = torch.autograd.grad(s, (vv, ww), go) if grads else (None, None)
        res[name] = (s, info, gr)
    (s, info, gr), (s0, info0, g0) = res[backend], res["torch"]
    same = info.iterations == info0.iterations
    srel = ((s - s0).abs() / s0.abs().clamp_min(1e-6))[same].max().item() if same.any() else float("nan")
    good = same.float().mean().item() >= 0.99 and srel < 1e-4 and torch.isfinite(s).all().item()
    text = (f"{label + ': ' if label else ''}B{B} A{A} T{T} N{N} d{d} {str(dtype)[6:]} eps={eps}: "
            f"score rel {srel:.1e}, iterations equal on {100 * same.float().mean().item():.1f}%")
    if A * B * T * N <= 1 << 20:
        p = od_plan(v, w, frame_mask=fm, desc_mask=dm, eps=eps, normalize=normalize, backend=backend, tol=0, **extra)
        p0 = od_plan(v, w, frame_mask=fm, desc_mask=dm, eps=eps, normalize=normalize, backend="torch", tol=0, **extra)
        prel = _rel(p, p0)
        good &= prel < 1e-3
        text += f", plan rel {prel:.1e}"
    if grads:
        grel = max(_rel(gr[0], g0[0]), _rel(gr[1], g0[1]))
        # Low-precision gradients come back in the input dtype: one rounding step at the largest
        # entry is already finfo(dtype).eps relative (7.8e-3 for bfloat16).
        good &= grel < (1e-4 if dtype == torch.float32 else max(8e-3, 2 * torch.finfo(dtype).eps))
        text += f", grad rel {grel:.1e}"
    row.check(good, text)


def correctness_cases(env: Env, features: set) -> list[dict]:
    """In priority order (a spent budget cuts the tail): the three eps first."""
    if env.dry:
        s = dict(B=2, A=3, T=5, N=3, d=16)
        cases = [dict(s, eps=e) for e in (1e-3, 0.1, 10.0)] + [dict(s, dtype=torch.bfloat16, masks=False)]
        wshape = s
    else:
        cases = [dict(B=5, A=9, T=17, N=5, d=64, eps=e) for e in (1e-3, 0.1, 10.0)] + [
            dict(B=4, A=50, T=32, N=4, d=512, dtype=torch.bfloat16, masks=False, label="key dtype and T, N"),
            dict(B=4, A=50, T=16, N=8, d=512, dtype=torch.float16),
            dict(B=3, A=300, T=32, N=4, d=512, eps=1e-3, label="log domain at the key T, N"),
            dict(B=4, A=50, T=8, N=4, d=500, noncontig=True, label="non-contiguous, d=500"),
            dict(B=4, A=50, T=8, N=4, d=512, normalize=False, label="normalize=False"),
            dict(B=3, A=20, T=40, N=4, d=128, label="T=40"),
            dict(B=2, A=70_000, T=8, N=16, d=64, masks=False, grads=False, label="N=16, A > 65,535"),
        ]
        wshape = dict(B=4, A=50, T=8, N=4, d=512)
    if {"weights", "reg_m"} <= features:
        cases += [dict(wshape, weights=True, label="weights"),
                  dict(wshape, weights=True, reg_m=(float("inf"), 0.5), label="weights, reg_m=(inf, 0.5)"),
                  dict(wshape, reg_m=0.5, eps=0.05, label="reg_m=0.5, eps=0.05"),
                  dict(wshape, weights=True, reg_m=(float("inf"), 0.5), grad="implicit",
                       label="grad=implicit, weights, reg_m=(inf, 0.5)")]
    return cases


def special_checks(row: Row, env: Env, backend: str) -> None:
    B, A, T, N, d = 6, 9, 8, 4, 64
    v, w, _, _ = _inputs(env, B, A, T, N, d, torch.float32, False)
    clean = od_solve(v, w, backend=backend)
    again = od_solve(v, w, backend=backend)
    row.check(torch.equal(clean, again), "two runs bitwise equal")
    v2 = v.clone()
    v2[2, 3, 5] = float("nan")
    poisoned = od_solve(v2, w, backend=backend)
    keep = [b for b in range(B) if b != 2]
    row.check(torch.equal(poisoned[keep], clean[keep]) and torch.isnan(poisoned[2]).all().item(),
              "a NaN frame poisons its own video's scores only")


def compile_check(row: Row, env: Env, backend: str) -> None:
    v = torch.randn(16, 8, 64, device=env.device, requires_grad=True)
    w = torch.randn(40, 4, 64, device=env.device, requires_grad=True)

    def loss(a, b):
        return torch.log_softmax(od_solve(a, b, backend=backend) / 0.01, dim=1)[:, 0].mean()

    got = torch.compile(loss, fullgraph=True)(v, w)
    gv = torch.autograd.grad(got, v)[0]
    want = loss(v, w)
    wv = torch.autograd.grad(want, v)[0]
    row.check(torch.allclose(got, want, rtol=1e-5, atol=1e-6) and torch.allclose(gv, wv, rtol=1e-4, atol=1e-6),
              "torch.compile(fullgraph=True), forward and backward")


def correctness_row(row: Row, env: Env, which: str, why: str | None) -> None:
    backend = env.names[which]
    if why is not None:
        row.check(False, f"backend {backend} is unavailable: {why}")
        return
    from ost_kernels.backends import REGISTRY

    if env.dry:
        row.line("(dry run: the kernels run exactly as compiled here; on a GPU, with their fast math)")
    for case in correctness_cases(env, REGISTRY[backend].features):
        what = case.get("label") or f"eps={case.get('eps', 0.1)}"
        if row.item(what):
            row.attempt(what, compare, row, env, backend, **case)
    if row.item("bitwise repeatability and NaN isolation"):
        row.attempt("special checks", special_checks, row, env, backend)
    if env.dry and backend.startswith("triton"):
        row.line("- torch.compile of a Triton op needs CUDA tensors: checked on the GPU only")
    elif row.item("torch.compile(fullgraph=True)"):
        row.attempt("torch.compile", compile_check, row, env, backend)


# --- timings --------------------------------------------------------------------------------

def _estimates() -> dict:
    try:
        with open(ESTIMATES_PATH) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {}


def _key_inputs(env: Env, grads: bool):
    k = env.key
    v, w, _ = clip_like_inputs(k["B"], k["A"], k["T"], k["N"], k["d"], dtype=torch.bfloat16, device=env.device)
    return v.requires_grad_(grads), w.requires_grad_(grads)


def _timing_line(row, env, label, mode, kw, estimate_ms):
    grads = mode == "fwd+bwd"
    v, w = _key_inputs(env, grads)
    t0 = time.time()
    ms, peak = env.bench(lambda a, b: od_solve(a, b, **kw), grads, (v, w))
    gemm = row.report.rows["gemm"].data.get("bf16 output")
    vs = f"{ms / gemm:.2f}x the bf16 GEMM" if gemm else "-"
    est = f"ESTIMATE {estimate_ms:.3f} ms, estimate / measured {estimate_ms / ms:.2f}" if estimate_ms else \
        "no estimate"
    row.line(f"| {label} | {mode} | {ms:.3f} | {vs} | {est} | {peak:.0f} | {time.time() - t0:.1f} |")
    row.data[f"{label} {mode}"] = dict(ms=ms, peak_mib=peak, estimate_ms=estimate_ms)


def timing_row(row: Row, env: Env, which: str, why: str | None) -> None:
    backend = env.names.get(which, which)
    if why is not None:
        row.check(False, f"backend {backend} is unavailable: {why}")
        return
    est = _estimates()
    k = env.key
    row.line(f"B={k['B']}, T={k['T']}, N={k['N']}, d={k['d']}, A={k['A']}, bfloat16, default eps and tol; fwd: no "
             "input requires grad (scores only); estimates: `python benchmarks/triton_cost.py --gpu-check` "
             f"(Triton {est.get('triton_version', '?')}). Peak: extra MiB over the inputs.")
    row.line("")
    row.line("| run | mode | ms | vs GEMM | cost model | peak MiB | s incl. compile |")
    row.line("|---|---|---|---|---|---|---|")
    runs = []
    if which == "triton":
        chunks = CHUNK_SWEEP_MB if not env.dry else (24, 1e-4)  # dry: a chunk of one class, to chunk for real
        for mb in chunks:
            e = est.get("triton", {}).get("chunks", {}).get(str(mb), {})
            for mode in ("fwd", "fwd+bwd"):
                runs.append((f"triton chunk_mb={mb}", mode, dict(backend=backend, chunk_mb=mb),
                             e.get(f"{mode.replace('+', '_')}_ms")))
    else:
        e = est.get(which, {})
        for mode in ("fwd", "fwd+bwd"):
            runs.append((backend, mode, dict(backend=backend), e.get(f"{mode.replace('+', '_')}_ms")))
    tile_env = None
    if which == "triton-fused" and not env.dry and est.get("triton-fused", {}).get("tile"):
        from ost_kernels.triton.fused import TILE_ENV

        tile_env = TILE_ENV
        os.environ[TILE_ENV] = est["triton-fused"]["tile"]  # no autotuning: one compile, the estimated tile
        row.line(f"(tile {est['triton-fused']['tile']}, the cost model's first)")
    try:
        for label, mode, kw, e in runs:
            if row.item(f"{label} {mode}"):
                row.attempt(f"{label} {mode}", _timing_line, row, env, label, mode, kw, e)
    finally:
        if tile_env:
            os.environ.pop(tile_env, None)
    row.line("")
    row.check(bool(row.data) or bool(row.skipped), f"{len(row.data)} timings")
    if not env.dry:
        torch.cuda.empty_cache()


def _wall_clock_timer(fn, device, name=""):
    from ost_kernels.backends import auto

    fn()
    times = []
    for _ in range(auto.ROUNDS):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def auto_row(row: Row, env: Env) -> None:
    from ost_kernels.backends import auto

    if env.dry:  # the measuring path on CPU tensors, timed by the wall clock (no CUDA events)
        auto.MEASURED_DEVICE_TYPES.add("cpu")
        auto.TIMER = _wall_clock_timer
    for mode in ("fwd", "fwd+bwd"):
        if not row.item(f"auto {mode}"):
            continue
        v, w = _key_inputs(env, mode == "fwd+bwd")
        t0 = time.time()
        _, info = od_solve(v, w, backend="auto", return_info=True)
        measured = info.choice.startswith("measured")
        row.check(measured, f"{mode}: ran {info.backend} ({info.choice}; first call {time.time() - t0:.1f} s)")
        row.data[mode] = dict(backend=info.backend, choice=info.choice)


def memory_row(row: Row, env: Env, cuda_why: str | None) -> None:
    from benchmarks.memory import peak_extra_bytes

    k = env.key
    A = 100_000 if not env.dry else 300  # the interpreter: about 10 ms a pair
    v, w, _ = clip_like_inputs(k["B"], A, k["T"], k["N"], k["d"], dtype=torch.bfloat16, device=env.device)
    inputs_mib = (v.numel() + w.numel()) * 2 / 2**20
    outputs_mib = k["B"] * A * 4 / 2**20
    limit_mib = 2048 if not env.dry else 64
    for which in ("triton", "cuda"):
        backend = env.names[which]
        if which == "cuda" and cuda_why is not None:
            row.check(False, f"{backend}: unavailable ({cuda_why.splitlines()[0]})")
            continue
        if not row.item(backend):
            continue
        with torch.no_grad():
            _, extra = peak_extra_bytes(lambda: od_solve(v, w, backend=backend), torch.device(env.device))
        if extra is None:
            row.line(f"- {backend}: peak memory not measurable here")
            continue
        mib = extra / 2**20
        row.check(mib < limit_mib, f"{backend}: B={k['B']}, A={A:,}, T={k['T']}, N={k['N']}, d={k['d']}, bf16, "
                  f"no_grad: peak extra {mib:.1f} MiB (goal < {limit_mib} MiB; inputs {inputs_mib:.0f} MiB, "
                  f"the (B, A) outputs {outputs_mib:.1f} MiB)")
        row.data[backend] = mib


def train_step_row(row: Row, env: Env) -> None:
    """One training step with OST logits against pooled-only logits (the ViFi-CLIP baseline):
    ViT-B-16, random weights, bf16 autocast on the GPU; a tiny model in the dry run."""
    import logging

    import open_clip

    from ost.descriptors.descriptors import DescriptorSet
    from ost.model.logits import ODLogitsConfig
    from ost.model.loss import symmetric_kl_loss
    from ost.model.model import OSTModel

    logging.getLogger().setLevel(logging.ERROR)  # open_clip: no pretrained weights
    batch, frames, classes, size = (32, 8, 400, 224) if not env.dry else (2, 2, 3, 32)
    names = [f"action {a}" for a in range(classes)]
    descs = DescriptorSet(names, [[f"object {a}.{k}" for k in range(4)] for a in range(classes)],
                          [[f"step {k} of action {a}" for k in range(4)] for a in range(classes)])
    if env.dry:
        from tests.helpers.tiny_clip import tiny_clip

        clip, tokenizer = tiny_clip()
    else:
        clip, tokenizer = open_clip.create_model("ViT-B-16", pretrained=None).to(env.device), \
            open_clip.get_tokenizer("ViT-B-16")
    model = OSTModel(clip, tokenizer, descs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    x = torch.randn(batch, frames, 3, size, size, device=env.device)
    labels = torch.randint(0, classes, (batch,), device=env.device)
    res = {}
    for name, use_ot in (("pooled only (ViFi-CLIP)", False), ("OST (pooled + OD solver)", True)):
        model.config = ODLogitsConfig(use_ot=use_ot)

        def step():
            with torch.autocast(env.device, dtype=torch.bfloat16, enabled=not env.dry):
                loss = symmetric_kl_loss(model(x, class_ids=labels), labels)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        res[name], _ = env.bench(step)
    base, ost = res["pooled only (ViFi-CLIP)"], res["OST (pooled + OD solver)"]
    model_name = "ViT-B-16 random" if not env.dry else "tiny open_clip"
    row.check(base > 0 and ost > 0, f"{model_name}, B={batch}, T={frames}, {classes} classes: "
              f"pooled-only {base:.1f} ms, OST {ost:.1f} ms: {100 * (ost / base - 1):+.1f}% (target <= +5% on the GPU)")
    row.data.update(pooled_ms=base, ost_ms=ost)


# --- the CUDA extension: build and probe ------------------------------------------------------

# Run in a child process once the build has finished: it prints None or the reason. The dry
# run's "cuda" is the emulation (tests/helpers/cuda_emulation), registered first.
PROBE = """
import sys, torch
from ost_kernels.backends import REGISTRY, register_backend, unavailable_reason
name, device = sys.argv[1], sys.argv[2]
if name == "cuda-emulated":
    from tests.helpers.cuda_emulation.backend import BACKEND
    register_backend(BACKEND)
print("PROBE:", unavailable_reason(name, device, torch.float32))
"""


def wait_for_build(log_path: str | None, deadline: float) -> str | None:
    """None once gpu_check.sh's background build has succeeded, else why not."""
    if log_path is None:
        return "no build log given (gpu_check.py runs from gpu_check.sh, which builds the extension)"
    status_path = log_path + ".status"
    while not os.path.exists(status_path) and time.time() < deadline:
        time.sleep(1)
    if not os.path.exists(status_path):
        return "the build did not finish in time"
    status = open(status_path).read().strip()
    if status != "0":
        with open(log_path, errors="replace") as fh:
            tail = fh.read()[-1500:]
        return f"the build failed (exit {status}):\n```\n{tail}\n```"
    return None


def probe_cuda(env: Env) -> str | None:
    """None if the CUDA backend loads, checked in a child process first (a fresh import of the
    finished build), then here."""
    name = env.names["cuda"]
    done = subprocess.run([sys.executable, "-c", PROBE, name, env.device], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    said = [ln for ln in done.stdout.splitlines() if ln.startswith("PROBE:")]
    if done.returncode != 0 or not said:
        return f"the probe failed (exit {done.returncode}): {(done.stdout + done.stderr).strip()[-500:]}"
    child = said[-1][len("PROBE:"):].strip()
    if child != "None":
        return child
    if env.dry:
        from tests.helpers.cuda_emulation.backend import BACKEND

        from ost_kernels.backends import REGISTRY, register_backend

        if BACKEND.name not in REGISTRY:
            register_backend(BACKEND)
    from ost_kernels.backends import unavailable_reason

    here = unavailable_reason(name, env.device, torch.float32)
    return None if here is None else f"the child process loads it, this one does not: {here}"


# --- main -----------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "out"),
                        help="folder for gpu_check.json and gpu_check.md (default benchmarks/out/)")
    parser.add_argument("--build-log", default=None, help="log of gpu_check.sh's background build")
    parser.add_argument("--dry-run", action="store_true", help="the same rows on the CPU: tiny shapes, Triton "
                        "interpreted, the CUDA code emulated")
    parser.add_argument("--command", default="bash benchmarks/gpu_check.sh", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
    elif not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device here (--dry-run runs the same rows on the CPU)", file=sys.stderr)
        return 2
    env = Env(args.dry_run)
    os.environ.setdefault("OST_KERNELS_CACHE_DIR", os.path.join(args.out, "cache"))  # auto measures afresh
    hdr = header(env, args.command + (" --dry-run" if args.dry_run else ""))
    report = Report(args.out, args.dry_run, hdr)
    report.run("device", device_row, env, hdr)
    report.run("gemm", gemm_row, env)
    from ost_kernels.backends import unavailable_reason

    def why(which):
        dtype = torch.float32 if env.dry else torch.bfloat16
        return unavailable_reason(env.names[which], env.device, dtype)

    os.environ["OST_KERNELS_TRITON_AUTOTUNE"] = "0"  # correctness: one compile a shape
    for which in ("triton", "triton-fused"):
        report.run(f"correctness-{which}", correctness_row, env, which, why(which))
    os.environ.pop("OST_KERNELS_TRITON_AUTOTUNE")
    for which in ("triton", "triton-fused"):
        report.run(f"timing-{which}", timing_row, env, which, why(which))
    report.run("timing-torch", timing_row, env, "torch", None)
    # The CUDA extension: wait for the background build (leaving time for the rows after it).
    deadline = report.started + report.total_budget - 60
    cuda_why = wait_for_build(args.build_log, deadline) or probe_cuda(env)
    report.say(f"- backend {env.names['cuda']}: {'available' if cuda_why is None else cuda_why}")
    report.run("correctness-cuda", correctness_row, env, "cuda", cuda_why)
    report.run("timing-cuda", timing_row, env, "cuda", cuda_why)
    report.run("auto", auto_row, env)
    report.run("memory", memory_row, env, cuda_why)
    report.run("train-step", train_step_row, env)
    report.run("triton-resources", resources_row, env)
    code, summary = report.outcome()
    report.write()
    report.say(f"gpu_check: {summary} ({time.time() - report.started:.0f} s); {report.md_path}, {report.json_path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
