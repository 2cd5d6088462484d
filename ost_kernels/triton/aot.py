"""Compile the Triton kernels for GPUs ahead of time, on any machine (no GPU needed).

Triton's interpreter never runs the code generator, so a kernel can pass every interpreter
test and still not compile for a GPU. This tool compiles each kernel variant the op can launch
(TTIR -> PTX -> cubin with the ptxas Triton ships), for sm_80 and sm_90, and records what
ptxas reports: registers, spill bytes, shared memory, compile time.

    python -m ost_kernels.triton.aot --all --jobs 2 --write-table   # what `make triton-aot` runs
    python -m ost_kernels.triton.aot --sample                      # the CI compile gate's subset

Variants: the fused kernels (forward, forward-relaxed: weights and reg_m, weights) x dtype (fp32,
bf16, fp16) x T in {8, 16, 32} x N in {4, 8} x each candidate tile config (configs.candidates),
at d = 512; and the two-phase path's kernels (sinkhorn: every launch kind, SINKHORN_FLAGS, with
the tile the launcher picks; chunk-weights: every dtype) for the same (T, N). Masks and normalize are
runtime inputs of one kernel variant (masks are always passed; the inverse norms are ones
without normalization), so they add no variants. The sample compiles every code path: each
kernel, dtype and architecture, a d that is not a multiple of the K block, TF32, each (T, N),
the forward's fixed-iteration (tol = 0) and scaling-only (LOG_DOMAIN = False) specializations,
the balanced forward with weights (WEIGHTED) and the relaxed forward at tol = 0.
--all compiles the general forward: the stop rule and the log-domain path keep more values
live than the specializations, so it is the one that may spill.

--write-table stores the resources as configs.RESOURCES_PATH, which the autotuner's pruning
reads (configs.fits). The markdown table goes to benchmarks/out/triton_resources.md.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple

from . import configs

SHAPES = [(8, 4), (8, 8), (16, 4), (16, 8), (32, 4), (32, 8)]  # (T, N), padded sizes
D = 512


class Variant(NamedTuple):
    arch: int
    kernel: str
    dtype: str
    TP: int
    NP: int
    cfg: configs.TileConfig
    even_k: bool = True
    precision: str = "ieee"
    fixed: bool = False  # the forward's tol = 0 specialization (kernels.py, FIXED)
    log_domain: bool = True  # False: the forward without its log-domain path (LOG_DOMAIN)
    weighted: bool = False  # the balanced forward with frame / descriptor weights (WEIGHTED)
    # The two-phase path's Sinkhorn kernel (kernel "sinkhorn", sinkhorn.py): its launch flags,
    # and the lanes a pair spreads over (cfg.BA: classes a program, cfg.num_warps).
    relaxed: bool = False
    masked: bool = False
    dense: bool = False
    potentials: bool = True
    t_lo: int = 0

    @property
    def key(self) -> str:
        return configs.resource_key(self.arch, self.kernel, self.dtype, self.TP, self.NP, self.cfg)

    @property
    def label(self) -> str:
        extra = (("" if self.even_k else " d%64!=0") + ("" if self.precision == "ieee" else f" {self.precision}")
                 + (" tol=0" if self.fixed else "") + ("" if self.log_domain else " no-log")
                 + (" weights" if self.weighted else "") + (" reg_m" if self.relaxed else "")
                 + (" masks" if self.masked else "") + (" dense" if self.dense else "")
                 + ("" if self.potentials else " scores-only") + (f" T_LO{self.t_lo}" if self.t_lo else ""))
        return f"{self.key}{extra}"


# The two-phase path's kernels ("sinkhorn": the forward over a chunk's stored sims; "chunk-weights":
# the backward's weights), compiled with the tile ops.program_tile gives each launch.
TWO_PHASE_KERNELS = ("sinkhorn", "chunk-weights")
# The Sinkhorn kernel's launches: (log_domain, weighted, relaxed, masked, dense, fixed, potentials).
SINKHORN_FLAGS = {
    "dense": (False, False, False, False, True, False, True),       # the key case: default eps, no masks
    "scores-only": (False, False, False, False, True, False, False),
    "fixed": (False, False, False, False, True, True, True),
    "masked": (False, False, False, True, False, False, True),
    "log-domain": (True, False, False, True, False, False, True),
    "weighted": (False, True, False, True, False, False, True),
    "relaxed": (True, True, True, True, False, False, True),
    "relaxed-fixed": (True, True, True, False, False, True, True),
}


def two_phase_variants(archs=configs.ARCHS, shapes=SHAPES, flags=tuple(SINKHORN_FLAGS)) -> list[Variant]:
    """The Sinkhorn kernel for every (T, N) and launch kind, and the weights kernel for every
    input dtype, with the tiles the launcher picks at a large class count."""
    from .ops import NUM_WARPS, WEIGHTS_ENTRIES, program_tile

    out = []
    for arch in archs:
        for TP, NP in shapes:
            for name in flags:
                log, weighted, relaxed, masked, dense, fixed, potentials = SINKHORN_FLAGS[name]
                t_lo, ba = program_tile(TP, NP, 1 << 16, lean=dense and not log, interpreted=False)
                out.append(Variant(arch, "sinkhorn", "fp32", TP, NP, configs.TileConfig(1, ba, NUM_WARPS, 1),
                                   fixed=fixed, log_domain=log, weighted=weighted, relaxed=relaxed, masked=masked,
                                   dense=dense, potentials=potentials, t_lo=t_lo))
            for dtype in configs.DTYPES:
                out.append(Variant(arch, "chunk-weights", dtype, TP, NP,
                                   configs.TileConfig(1, max(16, WEIGHTS_ENTRIES // TP), NUM_WARPS, 1)))
    return out


def all_variants(archs=configs.ARCHS) -> list[Variant]:
    return [Variant(arch, kernel, dtype, TP, NP, cfg)
            for arch in archs for kernel in configs.KERNELS for dtype in configs.DTYPES
            for TP, NP in SHAPES for cfg in configs.candidates(TP, NP, dtype)] + two_phase_variants(archs)


def one_per_kernel(archs=configs.ARCHS) -> list[Variant]:
    """One bf16 variant of every kernel at T = 32, N = 4 (the first candidate tile of the fused
    ones; the two-phase Sinkhorn's general launch, with masks, weights and reg_m)."""
    out = []
    for arch in archs:
        for kernel in configs.KERNELS:
            out.append(Variant(arch, kernel, "bf16", 32, 4, configs.candidates(32, 4)[0]))
        out += [v for v in two_phase_variants((arch,), [(32, 4)], ("relaxed",)) if v.dtype in ("fp32", "bf16")]
    return out


def sample_variants(archs=configs.ARCHS) -> list[Variant]:
    """Every code path at least once: each (arch, kernel, dtype), each (T, N), the masked
    d-tail, TF32. Tiles rotate through the candidates."""
    out = []
    i = 0
    for arch in archs:
        for kernel in configs.KERNELS:
            for dtype in configs.DTYPES:
                TP, NP = SHAPES[i % len(SHAPES)]
                cands = configs.candidates(TP, NP, dtype)
                out.append(Variant(arch, kernel, dtype, TP, NP, cands[i % len(cands)]))
                i += 1
            TP, NP = SHAPES[i % len(SHAPES)]
            out.append(Variant(arch, kernel, "bf16", TP, NP, configs.candidates(TP, NP)[0], even_k=False))
            out.append(Variant(arch, kernel, "fp32", TP, NP, configs.candidates(TP, NP, "fp32")[0],
                               precision="tf32"))
        TP, NP = SHAPES[i % len(SHAPES)]
        cfg = configs.candidates(TP, NP)[-1]
        out.append(Variant(arch, "forward", "bf16", TP, NP, cfg, fixed=True))
        out.append(Variant(arch, "forward", "fp16", TP, NP, cfg, log_domain=False))
        out.append(Variant(arch, "forward", "fp32", TP, NP, cfg, weighted=True))
        out.append(Variant(arch, "forward-relaxed", "bf16", TP, NP, cfg, fixed=True))
    # The two-phase kernels: every launch kind on sm_90 at the key shape, the lean one and the
    # relaxed one on sm_80, the weights kernel in every dtype.
    for arch in archs:
        out += two_phase_variants((arch,), [(32, 4)], tuple(SINKHORN_FLAGS) if arch == 90 else ("dense", "relaxed"))
    return out


_PTR = {"V": "x", "D": "x", "W": "x", "VS": "fp32", "DS": "fp32", "FM": "i8", "DM": "i8", "FW": "fp32",
        "DW": "fp32", "SCORES": "fp32", "F": "fp32", "G": "fp32", "ITERS": "i32", "ERR": "fp32", "GO": "fp32"}
_FLOATS = {"scale2", "eps_ln2", "tol", "tau_f", "tau_d"}
# Ints that the runtime specializes as multiples of 16 in the usual case (d = 512, contiguous rows).
_DIVISIBLE = {"d", "svb", "svt", "sda", "sdn", "swr"}


_TWO_PHASE_PTR = {"S": "fp32", "VS": "fp32", "DS": "fp32", "FM": "i8", "DM": "i8", "FW": "fp32", "DW": "fp32",
                  "SCORES": "fp32", "F": "fp32", "G": "fp32", "ITERS": "i32", "ERR": "fp32", "GO": "fp32", "W": "x"}


def _two_phase_source(v: Variant):
    """The sinkhorn / chunk-weights kernel of a variant, as the launcher (ops.py) calls it at
    the key shape's strides: N = NP, the chunk's row length a multiple of 16."""
    from triton.compiler import ASTSource

    from .sinkhorn import od_chunk_weights_kernel, od_sinkhorn_kernel

    if v.kernel == "sinkhorn":
        fn = od_sinkhorn_kernel
        from .ops import T_LO_FIRST

        consts = dict(N=v.NP, INTERPRETED=False, FIXED=v.fixed, LOG_DOMAIN=v.log_domain, WEIGHTED=v.weighted,
                      RELAXED=v.relaxed, POTENTIALS=v.potentials, MASKED=v.masked, DENSE=v.dense, TP=v.TP, NP=v.NP,
                      BA=v.cfg.BA, T_LO=v.t_lo, T_LO_FIRST=T_LO_FIRST)
    else:
        fn = od_chunk_weights_kernel
        consts = dict(N=v.NP, TP=v.TP, BC=v.cfg.BA, MASKED=False)
    sig = {}
    for name in fn.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name in _TWO_PHASE_PTR:
            sig[name] = "*" + (v.dtype if _TWO_PHASE_PTR[name] == "x" else _TWO_PHASE_PTR[name])
        else:
            sig[name] = "fp32" if name in _FLOATS else "i32"
    divisible = {n for n in fn.arg_names if sig[n].startswith("*") or n == "ld"}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in divisible}
    return ASTSource(fn, sig, consts, attrs)


def _source(v: Variant):
    from triton.compiler import ASTSource

    from .kernels import od_forward_kernel, od_weights_kernel

    if v.kernel in TWO_PHASE_KERNELS:
        return _two_phase_source(v)

    forward = v.kernel.startswith("forward")
    fn = od_forward_kernel if forward else od_weights_kernel
    consts = dict(EVEN_K=v.even_k, INTERPRETED=False, INPUT_PRECISION=v.precision, TP=v.TP, NP=v.NP, BB=v.cfg.BB,
                  BA=v.cfg.BA, BD=64, svd=1, sdd=1)
    if forward:
        relaxed = v.kernel == "forward-relaxed"  # weights and reg_m, the log domain compiled in
        consts.update(FIXED=v.fixed, LOG_DOMAIN=v.log_domain or relaxed, WEIGHTED=v.weighted or relaxed,
                      RELAXED=relaxed, NW=v.cfg.num_warps, POTENTIALS=v.potentials)
    sig = {}
    for name in fn.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name in _PTR:
            sig[name] = "*" + (v.dtype if _PTR[name] == "x" else _PTR[name])
        else:
            sig[name] = "fp32" if name in _FLOATS else "i32"
    divisible = {n for n in fn.arg_names if sig[n].startswith("*") or (n in _DIVISIBLE and v.even_k)}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in divisible}
    return ASTSource(fn, sig, consts, attrs)


_PTXAS = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def compile_variant(v: Variant) -> dict:
    """Compile one variant; its resources, or {"error": ...}."""
    import triton
    from triton.backends.compiler import GPUTarget

    triton.knobs.nvidia.dump_ptxas_log = True
    triton.knobs.compilation.always_compile = True  # a cached cubin would print no ptxas log
    log = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            k = triton.compile(_source(v), target=GPUTarget("cuda", v.arch, 32),
                               options=dict(num_warps=v.cfg.num_warps, num_stages=v.cfg.num_stages))
    except Exception as exc:  # reported, and fails the gate
        return dict(error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}")
    seconds = time.perf_counter() - start
    text = log.getvalue()
    regs, spill = _PTXAS.search(text), _SPILL.search(text)
    if regs is None or spill is None:
        return dict(error=f"no ptxas report in the compile log: {text[-300:]!r}")
    return dict(registers=int(regs.group(1)), spill_bytes=int(spill.group(1)) + int(spill.group(2)),
                shared_bytes=int(k.metadata.shared), compile_s=round(seconds, 2), ptx=k.asm["ptx"],
                cubin=k.asm["cubin"], ttgir=k.asm["ttgir"])


def run(variants: list[Variant], jobs: int, progress=True) -> dict[Variant, dict]:
    results = {}
    # Fresh processes without TRITON_INTERPRET: a parent that imported the kernels under the
    # interpreter (the tests) holds interpreter functions, which Triton's compiler cannot take.
    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for i, (v, res) in enumerate(zip(variants, pool.map(compile_variant, variants)), 1):
                results[v] = res
                if progress:
                    status = res.get("error") or (f"{res['registers']} regs, {res['spill_bytes']} B spilled, "
                                                  f"{res['shared_bytes'] // 1024} KiB smem, {res['compile_s']} s")
                    print(f"[{i}/{len(variants)}] {v.label}: {status}", flush=True)
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved
    return results


def markdown(results: dict[Variant, dict]) -> str:
    lines = ["| arch | kernel | dtype | T x N (padded) | tile | registers | spill bytes | shared KiB | "
             "compile s | fits |", "|---|---|---|---|---|---|---|---|---|---|"]
    for v, r in results.items():
        if "error" in r:
            lines.append(f"| sm_{v.arch} | {v.kernel} | {v.dtype} | {v.TP} x {v.NP} | {v.cfg.name} | "
                         f"ERROR: {r['error']} | | | | no |")
            continue
        lines.append(f"| sm_{v.arch} | {v.kernel} | {v.dtype}{'' if v.even_k else ' (d%64!=0)'}"
                     f"{'' if v.precision == 'ieee' else ' ' + v.precision}{' tol=0' if v.fixed else ''}"
                     f"{'' if v.log_domain else ' no-log'} | {v.TP} x {v.NP} | {v.cfg.name} | "
                     f"{r['registers']} | {r['spill_bytes']} | {r['shared_bytes'] / 1024:.0f} | {r['compile_s']} | "
                     f"{'yes' if configs.fits(r, v.arch) else 'no'} |")
    return "\n".join(lines) + "\n"


def summary(results: dict[Variant, dict]) -> str:
    ok = [r for r in results.values() if "error" not in r]
    fit = sum(configs.fits(r, v.arch) for v, r in results.items() if "error" not in r)
    total_s = sum(r["compile_s"] for r in ok)
    return (f"{len(results)} variants: {len(results) - len(ok)} failed to compile, {fit} fit (no spills, shared "
            f"memory within the limit), {len(ok) - fit} pruned; {total_s:.0f} s of compile time in all "
            f"({total_s / max(1, len(ok)):.1f} s a variant)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ost_kernels.triton.aot", description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every variant (make triton-aot)")
    which.add_argument("--sample", action="store_true", help="the CI subset that covers every code path (default)")
    which.add_argument("--one-per-kernel", action="store_true",
                       help="one variant of every kernel at the key shape (the check under a second Triton)")
    parser.add_argument("--archs", default=",".join(map(str, configs.ARCHS)))
    parser.add_argument("--dtypes", default=",".join(configs.DTYPES),
                        help="input dtypes to compile; with --write-table, the other dtypes' rows are kept")
    parser.add_argument("--kernels", default=",".join(configs.KERNELS + TWO_PHASE_KERNELS),
                        help="kernels to compile; with --write-table, the other kernels' rows are kept")
    parser.add_argument("--jobs", type=int, default=max(1, min(8, os.cpu_count() or 1)))
    parser.add_argument("--out", default=os.path.join("benchmarks", "out", "triton_resources.md"))
    parser.add_argument("--write-table", action="store_true", help=f"store the resources in {configs.RESOURCES_PATH}")
    args = parser.parse_args(argv)
    archs = tuple(int(a) for a in args.archs.split(","))
    dtypes = tuple(args.dtypes.split(","))
    kernels = tuple(args.kernels.split(","))
    variants = all_variants(archs) if args.all else one_per_kernel(archs) if args.one_per_kernel \
        else sample_variants(archs)
    variants = [v for v in variants if (v.dtype in dtypes or v.kernel == "sinkhorn") and v.kernel in kernels]
    results = run(variants, args.jobs)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        import triton

        fh.write(f"# Triton kernels compiled ahead of time (Triton {triton.__version__})\n\n{summary(results)}\n\n"
                 f"{markdown(results)}")
    if args.write_table:
        # Rows of dtypes (and architectures) not compiled this time are kept.
        import triton

        same = configs.measured_version() == triton.__version__  # another Triton's rows are all replaced
        kept = {k: r for k, r in configs._file().items() if same and k != configs.MEASURED_WITH
                and not any(k.startswith(f"sm{a}/{kn}/{dt}/") for a in archs for kn in kernels for dt in dtypes)}
        table = kept | {v.key: {k: r[k] for k in ("registers", "spill_bytes", "shared_bytes", "compile_s")}
                        for v, r in results.items()
                        if "error" not in r and v.even_k and v.precision == "ieee" and not v.fixed and v.log_domain
                        and not v.weighted and v.kernel in configs.KERNELS}
        with open(configs.RESOURCES_PATH, "w") as fh:
            json.dump({configs.MEASURED_WITH: {"version": triton.__version__}, **dict(sorted(table.items()))}, fh,
                      indent=0)
            fh.write("\n")
    print(summary(results))
    print(f"table: {args.out}" + (f"; resources: {configs.RESOURCES_PATH}" if args.write_table else ""))
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
