"""A static cost model of the Triton kernels (and the CUDA fallback's) on an H200, from what the
GPU executes: the SASS of the compiled cubins. An ESTIMATE, not a measurement: it is there to compare designs while
no GPU is at hand, and benchmarks/gpu_check.sh prints it beside the measured times.

    python benchmarks/triton_cost.py [--out benchmarks/out/triton_cost.md]
    python benchmarks/triton_cost.py --two-phase-only   # backend "triton" and the CUDA fallback only
    python benchmarks/triton_cost.py --gpu-check        # benchmarks/gpu_check_estimates.json
    PYTHONPATH=<a Triton 3.6 installed with pip --target> python benchmarks/triton_cost.py --two-phase-only

For each forward tile the autotuner keeps at the key shape (B = 256, T = 32, N = 4, d = 512,
A = 10,000, bfloat16, sm_90; configs.usable_configs), the variants that run there are compiled
(the scaling form alone, LOG_DOMAIN = False, as at the default eps with normalized sims; the
general kernel for the log-domain loop; the fixed-iteration one for tol = 0) and disassembled
with the nvdisasm Triton ships. Loops are found in the SASS (a label and the branch back to
it) and classified: the GEMM K-loop (tensor-core instructions), the log-domain loop
(MUFU.EX2), the scaling-form loop (the rest). Per (video, class) pair, with the CTA's threads
and pairs, the model counts the instructions of one Sinkhorn iteration, of the code run once
(everything outside the loops) and of the K-loop, and the special-function (MUFU) ones. Times:

  issue        instructions / (SMs x 128 lanes x clock): 4 schedulers, one warp each a clock
  SFU          MUFU instructions / (SMs x 16 lanes x clock)
  tensor       the tile's FLOPs, padding included, at the rate of the instruction used:
               wgmma (HGMMA) at the dense bf16 peak, mma.sync (HMMA) at 2/3 of it
  L2           operand reloads: every program reads its tile's rows and columns over all of d
               (programs x (BA N + BB T) x d x 2 bytes) at the L2 bandwidth below
  estimate     max(tensor, L2, issue of the K-loop) + max(issue, SFU of the rest): the GEMM
               phase and the Sinkhorn phase of a tile do not overlap (other CTAs on the SM may
               overlap them: max of the two is the optimistic bound, also printed)

With weights and reg_m ("forward-relaxed") a third table puts the relaxed loop's SASS per pair
iteration beside the balanced one's.

Iterations at the default tol: a tile runs until its slowest pair stops, so the count that
matters is the tile's maximum; it is measured here with backend "cpu" on
ost_kernels.clip_like_inputs (B = 64, A = 2048: 2.0 for every tile), and fixed at 100 for tol = 0.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ost_kernels.triton import aot, configs  # noqa: E402

# NVIDIA H200 SXM (GH100, as H100 SXM; H200 differs in HBM only).
SMS, CLOCK = 132, 1.98e9
ISSUE = 128            # thread-instructions issued per SM per clock (4 schedulers x 32 lanes)
SFU_LANES = 16         # special-function (MUFU: ex2, lg2, rcp) lanes per SM per clock
TENSOR_BF16 = 989e12   # dense bf16 FLOP/s with wgmma (NVIDIA H100 SXM datasheet)
# mma.sync reaches about 2/3 of the Hopper peak (FlashAttention-3, Shah et al. 2024, citing
# Luo et al., arXiv 2402.13499, "Benchmarking and dissecting the Nvidia Hopper GPU").
MMA_SYNC_FRACTION = 2 / 3
# L2 read bandwidth: Chips and Cheese measured "over 5.5 TB/s" from the near L2 partition and
# 3.8 TB/s over the whole 50 MB on an H100 PCIe (114 SMs, <= 1.755 GHz); scaled to 132 SMs at
# 1.98 GHz that is 7.2 and 5.0 TB/s. The whole-L2 figure, as the tiles' rows spread over it.
L2_BW = 5.0e12
HBM = 4.8e12

JSON_PATH = os.path.join(ROOT, "benchmarks", "triton_cost.json")
KEY = dict(B=256, T=32, N=4, d=512, A=10_000)
NVDISASM = None

_INSTR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)(\.[A-Z0-9_.]*)?(.*?);")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


class Instr(NamedTuple):
    op: str          # opcode without modifiers: FFMA, MUFU, SHFL, ...
    full: str        # with modifiers: MUFU.EX2, HGMMA.64x32x16.F32.BF16, ...
    target: str | None  # branch target label


def nvdisasm() -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")


def disassemble(cubin: bytes) -> tuple[list[Instr], dict[str, int]]:
    """The kernel's instructions in order, and the index of the instruction after each label."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(cubin)
        fh.flush()
        text = subprocess.run([nvdisasm(), "-c", fh.name], capture_output=True, text=True, check=True).stdout
    instrs, labels = [], {}
    for line in text.splitlines():
        m = _LABEL.match(line)
        if m:
            labels[m.group(1)] = len(instrs)
            continue
        m = _INSTR.match(line)
        if m:
            t = _TARGET.search(line)
            instrs.append(Instr(m.group(2), m.group(2) + (m.group(3) or ""), t.group(1) if t else None))
    return instrs, labels


def loops(instrs: list[Instr], labels: dict[str, int]) -> list[tuple[int, int]]:
    """(first, last) instruction indices of each innermost loop: a label and a branch back to it."""
    spans = [(labels[i.target], k) for k, i in enumerate(instrs)
             if i.op == "BRA" and i.target in labels and labels[i.target] <= k]
    return [s for s in spans if not any(o != s and s[0] <= o[0] and o[1] <= s[1] for o in spans)]


def counts(body: list[Instr]) -> dict:
    ops = [i for i in body if i.op != "NOP"]
    return dict(total=len(ops), mufu=sum(i.op == "MUFU" for i in ops), shfl=sum(i.op == "SHFL" for i in ops),
                bar=sum(i.op == "BAR" for i in ops), tensor=sum(i.op in ("HGMMA", "HMMA") for i in ops),
                wgmma=any(i.op == "HGMMA" for i in ops))


def kernel_profile(v: aot.Variant) -> dict:
    """Per-thread SASS counts of a compiled variant: its loops by kind, and the rest ("once")."""
    # In a fresh process (aot.run): a caller that imported the kernels under the interpreter
    # (the test suite) holds interpreter functions, which Triton's compiler cannot take.
    res = aot.run([v], jobs=1, progress=False)[v]
    if "error" in res:
        raise RuntimeError(f"{v.label}: {res['error']}")
    instrs, labels = disassemble(res["cubin"])
    found, inside = {}, set()
    for first, last in loops(instrs, labels):
        c = counts(instrs[first:last + 1])
        # The log-domain loop takes an exp2 per entry; the scaling loop one special function per
        # row and column (an RCP, or relaxed an LG2 and an EX2): more EX2 than other MUFU is the log loop.
        ex2 = sum(i.full.startswith("MUFU.EX2") for i in instrs[first:last + 1])
        kind = "gemm" if c["tensor"] else "log" if ex2 > c["mufu"] - ex2 else "scaling"
        found.setdefault(kind, c)
        inside.update(range(first, last + 1))
    # Once: outside the loops, without the trailing self-branch padding after EXIT.
    once = [i for k, i in enumerate(instrs) if k not in inside]
    found["once"] = counts(once)
    found.update(registers=res["registers"], spill_bytes=res["spill_bytes"], shared_bytes=res["shared_bytes"])
    return found


@functools.cache
def _iterations(B: int, A: int):
    from ost_kernels import od_solve
    from ost_kernels.synthetic import clip_like_inputs

    video, desc = clip_like_inputs(B, A, KEY["T"], KEY["N"], KEY["d"])[:2]
    return od_solve(video, desc, backend="cpu", return_info=True)[1].iterations.float()


def tile_iterations(cfg: configs.TileConfig, B: int = 64, A: int = 2048) -> float:
    """Mean over tiles of the tile's largest iteration count at the default tol (backend cpu)."""
    it = _iterations(B, A)
    bb, ba = min(cfg.BB, B), min(cfg.BA, A)
    return it[: B // bb * bb, : A // ba * ba].reshape(B // bb, bb, A // ba, ba).amax((1, 3)).mean().item()


def gemm_floor_s() -> float:
    """The bf16 GEMM of the sims, (B T, d) x (d, A N), at the dense peak."""
    return 2 * KEY["B"] * KEY["T"] * KEY["A"] * KEY["N"] * KEY["d"] / TENSOR_BF16


def estimate(cfg: configs.TileConfig, iterations: float) -> dict:
    TP, NP = configs.pow2(KEY["T"]), configs.pow2(KEY["N"])
    B, A, d = KEY["B"], KEY["A"], KEY["d"]
    mk = lambda **kw: aot.Variant(90, "forward", "bf16", TP, NP, cfg, **kw)  # noqa: E731
    default = kernel_profile(mk(log_domain=False))
    fixed = kernel_profile(mk(log_domain=False, fixed=True))
    general = kernel_profile(mk())
    threads, pairs_cta = 32 * cfg.num_warps, cfg.BB * cfg.BA
    per_pair = threads / pairs_cta
    pairs = B * A
    programs = -(-A // cfg.BA) * -(-B // cfg.BB)
    k_steps = -(-d // 64)
    gemm = default["gemm"]
    rate = TENSOR_BF16 * (1.0 if gemm["wgmma"] else MMA_SYNC_FRACTION)
    tensor_s = programs * 2 * cfg.BA * NP * cfg.BB * TP * d / rate
    l2_s = programs * (cfg.BA * NP + cfg.BB * TP) * d * 2 / L2_BW
    kloop_issue_s = pairs * gemm["total"] * per_pair * k_steps / (SMS * ISSUE * CLOCK)
    gemm_phase = max(tensor_s, l2_s, kloop_issue_s)
    out = dict(config=cfg.name, registers=general["registers"], spill=general["spill_bytes"],
               shared_kib=general["shared_bytes"] // 1024, tensor_op="wgmma" if gemm["wgmma"] else "mma.sync",
               tensor_s=tensor_s, l2_s=l2_s, kloop_issue_s=kloop_issue_s, iterations=iterations,
               loop_tol=default["scaling"]["total"] * per_pair, loop_fixed=fixed["scaling"]["total"] * per_pair,
               loop_log=general.get("log", {}).get("total", 0) * per_pair,
               mufu_tol=default["scaling"]["mufu"] * per_pair, once=default["once"]["total"] * per_pair,
               once_general=general["once"]["total"] * per_pair, kloop=gemm["total"] * per_pair * k_steps)
    for label, prof, its in (("tol", default, iterations), ("fixed100", fixed, 100), ("iter1", fixed, 1)):
        instr = pairs * (prof["once"]["total"] + its * prof["scaling"]["total"]) * per_pair
        mufu = pairs * (prof["once"]["mufu"] + its * prof["scaling"]["mufu"]) * per_pair
        issue_s, sfu_s = instr / (SMS * ISSUE * CLOCK), mufu / (SMS * SFU_LANES * CLOCK)
        solve = max(issue_s, sfu_s)
        out[f"sfu_{label}_s"] = sfu_s
        out[f"total_{label}_s"] = gemm_phase + solve
        out[f"overlap_{label}_s"] = max(gemm_phase, solve)
    return out


def backward_estimate(cfg: configs.TileConfig) -> dict:
    """The backward at the key shape: the weights kernel (the sims GEMM again, one exp2 per
    entry, W = grad_scores * P written in bf16) counted like the forward, then the two
    gradient GEMMs W @ unit(desc) and W^T @ unit(video) (cuBLAS, each the size of the sims
    GEMM, at the dense peak; W read from HBM meanwhile)."""
    TP, NP = configs.pow2(KEY["T"]), configs.pow2(KEY["N"])
    B, A, T, N, d = (KEY[k] for k in ("B", "A", "T", "N", "d"))
    prof = kernel_profile(aot.Variant(90, "weights", "bf16", TP, NP, cfg))
    per_pair, pairs = 32 * cfg.num_warps / (cfg.BB * cfg.BA), B * A
    programs = -(-A // cfg.BA) * -(-B // cfg.BB)
    gemm = prof["gemm"]
    rate = TENSOR_BF16 * (1.0 if gemm["wgmma"] else MMA_SYNC_FRACTION)
    tensor_s = programs * 2 * cfg.BA * NP * cfg.BB * TP * d / rate
    l2_s = programs * (cfg.BA * NP + cfg.BB * TP) * d * 2 / L2_BW
    kloop_s = pairs * per_pair * gemm["total"] * -(-d // 64) / (SMS * ISSUE * CLOCK)
    issue_s = pairs * per_pair * prof["once"]["total"] / (SMS * ISSUE * CLOCK)
    sfu_s = pairs * per_pair * prof["once"]["mufu"] / (SMS * SFU_LANES * CLOCK)
    write_s = B * T * A * N * 2 / HBM
    weights_s = max(tensor_s, l2_s, kloop_s) + max(issue_s, sfu_s, write_s)
    grads_s = max(2 * gemm_floor_s(), 2 * B * T * A * N * 2 / HBM)
    return dict(config=cfg.name, registers=prof["registers"], spill=prof["spill_bytes"],
                tensor_op="wgmma" if gemm["wgmma"] else "mma.sync", tensor_s=tensor_s, l2_s=l2_s, issue_s=issue_s,
                sfu_s=sfu_s, write_s=write_s, weights_s=weights_s, grads_s=grads_s, total_s=weights_s + grads_s,
                once=prof["once"]["total"] * per_pair, kloop=gemm["total"] * per_pair * -(-d // 64))


def relaxed_estimate(cfg: configs.TileConfig) -> dict:
    """Per-pair SASS of one Sinkhorn iteration of the forward with weights and a relaxed side
    ("forward-relaxed": WEIGHTED, RELAXED, the log domain compiled in) beside the balanced
    general forward's, for the same tile at the key shape."""
    TP, NP = configs.pow2(KEY["T"]), configs.pow2(KEY["N"])
    per_pair = 32 * cfg.num_warps / (cfg.BB * cfg.BA)
    balanced = kernel_profile(aot.Variant(90, "forward", "bf16", TP, NP, cfg))
    relaxed = kernel_profile(aot.Variant(90, "forward-relaxed", "bf16", TP, NP, cfg))
    fixed = kernel_profile(aot.Variant(90, "forward-relaxed", "bf16", TP, NP, cfg, fixed=True))
    return dict(config=cfg.name, registers=relaxed["registers"], spill=relaxed["spill_bytes"],
                balanced_loop=balanced["scaling"]["total"] * per_pair, loop_tol=relaxed["scaling"]["total"] * per_pair,
                loop_fixed=fixed["scaling"]["total"] * per_pair, mufu=relaxed["scaling"]["mufu"] * per_pair,
                balanced_mufu=balanced["scaling"]["mufu"] * per_pair,
                balanced_log=balanced["log"]["total"] * per_pair, log=relaxed["log"]["total"] * per_pair,
                once=relaxed["once"]["total"] * per_pair, balanced_once=balanced["once"]["total"] * per_pair)


# The two-phase path (backend "triton"): cuBLAS's bf16 GEMM at the rate measured on an H200 for
# a large product (issue 34: 790 TFLOP/s) and at the datasheet peak.
GEMM_MEASURED = 790e12


def executed_profile(v: aot.Variant) -> dict:
    """Per-thread SASS of a two-phase kernel's fast path: the instructions up to its first
    EXIT (after it lie the divergent-warp fallbacks of the shuffles, which a converged warp
    never runs), split into its one loop (the scaling form's; the two-phase kernel's dense
    launch has no other) and the rest."""
    res = aot.run([v], jobs=1, progress=False)[v]
    if "error" in res:
        raise RuntimeError(f"{v.label}: {res['error']}")
    instrs, labels = disassemble(res["cubin"])
    end = next((k for k, i in enumerate(instrs) if i.op == "EXIT"), len(instrs) - 1) + 1
    spans = [(a, b) for a, b in loops(instrs[:end], labels) if b < end]
    inside = {k for a, b in spans for k in range(a, b + 1)}
    loop = counts([i for k, i in enumerate(instrs[:end]) if k in inside])
    once = counts([i for k, i in enumerate(instrs[:end]) if k not in inside])
    return dict(loop=loop, once=once, loops=len(spans), registers=res["registers"], spill_bytes=res["spill_bytes"],
                shared_bytes=res["shared_bytes"])


@functools.cache
def _program_iterations(ba: int, B: int = 64, A: int = 2048) -> float:
    """Mean over programs (one video, BA consecutive classes) of their largest iteration count
    at the default tol: a program's loop runs until its slowest pair stops."""
    it = _iterations(B, A)
    ba = min(ba, A)
    return it[:, : A // ba * ba].reshape(B, A // ba, ba).amax(-1).mean().item()


def two_phase_estimate(A: int, chunk_mb: float = 24.0) -> dict:
    """The two-phase forward and forward + backward at the key shape with A classes: per chunk,
    the sims GEMM (float32 output) then the Sinkhorn kernel over them (counted from its SASS),
    one after the other on the stream; the chunk's sims written and read once through L2
    (they fit: chunk_mb of a 50 MB L2), or through HBM where they do not."""
    from ost_kernels.triton.ops import NUM_WARPS, WEIGHTS_ENTRIES, chunk_classes, program_tile

    B, T, N, d = (KEY[k] for k in ("B", "T", "N", "d"))
    TP, NP = configs.pow2(T), configs.pow2(N)
    out = dict(A=A, chunk_mb=chunk_mb, chunk_classes=chunk_classes(B, T, N, A, chunk_mb))
    pairs, entries = B * A, B * T * A * N
    flops = 2 * entries * d
    floor = flops / TENSOR_BF16
    sims_bytes = entries * 4
    through = L2_BW if chunk_mb * 2**20 <= 25e6 else HBM
    for label, potentials in (("scores", False), ("potentials", True)):
        t_lo, ba = program_tile(TP, NP, 1 << 16, lean=True, interpreted=False)
        v = aot.Variant(90, "sinkhorn", "fp32", TP, NP, configs.TileConfig(1, ba, NUM_WARPS, 1), log_domain=False,
                        dense=True, potentials=potentials, t_lo=t_lo)
        prof = executed_profile(v)
        per_pair = 32 * NUM_WARPS / ba
        iters = _program_iterations(ba)
        sass = (prof["once"]["total"] + iters * prof["loop"]["total"]) * per_pair
        mufu = (prof["once"]["mufu"] + iters * prof["loop"]["mufu"]) * per_pair
        issue_s = pairs * sass / (SMS * ISSUE * CLOCK)
        sfu_s = pairs * mufu / (SMS * SFU_LANES * CLOCK)
        kernel_s = max(issue_s, sfu_s, sims_bytes / through)
        out[label] = dict(tile=f"T_LO{t_lo} BA{ba} w{NUM_WARPS}", registers=prof["registers"],
                          spill=prof["spill_bytes"], iterations=iters, once=prof["once"]["total"] * per_pair,
                          loop=prof["loop"]["total"] * per_pair, sass=sass, mufu=mufu, issue_s=issue_s, sfu_s=sfu_s,
                          kernel_s=kernel_s)
        for rate_name, rate in (("measured", GEMM_MEASURED), ("peak", TENSOR_BF16)):
            gemm_s = max(flops / rate, sims_bytes / through)
            out[label][f"fwd_{rate_name}_s"] = gemm_s + kernel_s
    # Backward (plan gradient): per chunk the sims GEMM again, the weights kernel (reads the
    # sims, writes W = grad_scores * P in bf16), then W @ unit(desc) and W^T @ unit(video).
    bc = max(16, WEIGHTS_ENTRIES // TP)
    w = executed_profile(aot.Variant(90, "chunk-weights", "bf16", TP, NP, configs.TileConfig(1, bc, NUM_WARPS, 1)))
    per_entry = 32 * NUM_WARPS / (TP * bc)
    weights_s = max(entries * w["once"]["total"] * per_entry / (SMS * ISSUE * CLOCK),
                    entries * w["once"]["mufu"] * per_entry / (SMS * SFU_LANES * CLOCK),
                    entries * (4 + 2) / through)
    for rate_name, rate in (("measured", GEMM_MEASURED), ("peak", TENSOR_BF16)):
        gemm_s = max(flops / rate, sims_bytes / through)
        grads_s = 2 * max(flops / rate, entries * 2 / HBM)
        out[f"bwd_{rate_name}_s"] = gemm_s + weights_s + grads_s
        out[f"fwd_bwd_{rate_name}_s"] = out["potentials"][f"fwd_{rate_name}_s"] + out[f"bwd_{rate_name}_s"]
    out.update(floor_s=floor, weights_s=weights_s, weights_sass_per_entry=w["once"]["total"] * per_entry,
               weights_registers=w["registers"], weights_spill=w["spill_bytes"],
               extra_mib_forward=chunk_mb, extra_mib_backward=chunk_mb * 1.5)
    return out


def two_phase_section() -> str:
    rows = []
    for A in (10_000, 100_000):
        e = two_phase_estimate(A)
        for label in ("scores", "potentials"):
            p = e[label]
            rows.append(
                f"| {A:,} | {label} | {p['tile']} | {p['registers']} / {p['spill']} | {p['iterations']:.1f} | "
                f"{p['once']:.0f} | {p['loop']:.0f} | {p['sass']:.0f} | {p['mufu']:.0f} | {_ms(p['issue_s'])} | "
                f"{_ms(p['sfu_s'])} | {_ms(p['kernel_s'])} | {_ms(p['fwd_measured_s'])} | "
                f"{p['fwd_measured_s'] / e['floor_s']:.2f}x | {_ms(p['fwd_peak_s'])} | {p['fwd_peak_s'] / e['floor_s']:.2f}x |")
        rows.append(f"| {A:,} | fwd + bwd | weights kernel {e['weights_sass_per_entry']:.1f} SASS / entry, "
                    f"{e['weights_registers']} regs | | | | | | | | | {_ms(e['weights_s'])} | "
                    f"{_ms(e['fwd_bwd_measured_s'])} | {e['fwd_bwd_measured_s'] / (3 * e['floor_s']):.2f}x of 3 GEMMs | "
                    f"{_ms(e['fwd_bwd_peak_s'])} | {e['fwd_bwd_peak_s'] / (3 * e['floor_s']):.2f}x of 3 GEMMs |")
    e10 = two_phase_estimate(10_000)
    return (
        "\nTwo-phase path (backend \"triton\"), ESTIMATE at the key shape: per chunk of classes (24 MiB of float32 "
        f"sims, {e10['chunk_classes']} classes, kept in L2) the bf16 GEMM of the sims with float32 output, then the "
        "Sinkhorn kernel over them (its SASS fast path per pair: once + the measured iterations x the loop; "
        "MUFU likewise); the chunk's sims written and read once through L2. 'scores' is the launch without "
        "potentials (no gradient needed), 'potentials' the training forward. GEMM at the measured H200 rate "
        f"(790 TFLOP/s) and at the datasheet peak; ratios against the bf16 GEMM at peak ({_ms(e10['floor_s'])} ms "
        "at A = 10,000). Extra memory: the chunk buffer (24 MiB) forward, plus a bf16 weights chunk (12 MiB) "
        "backward, whatever A is.\n\n"
        "| A | launch | tile | regs / spill B | iters | once / pair | loop / pair / it | SASS / pair | MUFU / pair | "
        "issue ms | SFU ms | kernel ms | fwd ms (790) | vs GEMM | fwd ms (peak) | vs GEMM |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def cuda_estimate(A: int = 10_000) -> dict:
    """The CUDA fallback's forward at the key shape, counted as the two-phase path: per tile of
    chunk_mb (24 MiB) the cuBLAS GEMM of the sims with float32 output, then
    sinkhorn_groups_kernel<4, 8> (N <= 4 descriptors, groups of 8 lanes for T = 32) from the
    SASS nvcc compiles for sm_90 (its fast path: up to EXIT), once per pair plus the measured
    iterations (a warp runs while any of its 4 pairs is active) times the scaling loop."""
    from ost_kernels import cuda_resources

    B, T, N, d = (KEY[k] for k in ("B", "T", "N", "d"))
    G, pairs_per_warp = 8, 4
    instrs, labels, end = [], {}, None
    for line in cuda_resources.sass(90, "void sinkhorn_groups_kernel<4, 8>").splitlines():
        m = _LABEL.match(line)
        if m:
            labels[m.group(1)] = len(instrs)
            continue
        m = _INSTR.match(line)
        if m:
            t = _TARGET.search(line)
            instrs.append(Instr(m.group(2), m.group(2) + (m.group(3) or ""), t.group(1) if t else None))
            # The main path ends at the first unconditional EXIT (an early @P EXIT drops the
            # threads past the tile; after the last lie the shuffles' divergent fallbacks).
            if end is None and m.group(2) == "EXIT" and not re.search(r"@!?P\w+\s+EXIT", line):
                end = len(instrs)
    end = end or len(instrs)
    spans = [(a, b) for a, b in loops(instrs[:end], labels) if b < end]
    # The scaling loop: the one with MUFU.RCP; the log loop's MUFU are EX2.
    scaling = [sp for sp in spans if any(i.full.startswith("MUFU.RCP") for i in instrs[sp[0]:sp[1] + 1])]
    inside = {k for a, b in spans for k in range(a, b + 1)}
    once = counts([i for k, i in enumerate(instrs[:end]) if k not in inside])
    loop = counts(instrs[scaling[0][0]:scaling[0][1] + 1]) if scaling else dict(total=0, mufu=0)
    it = _iterations(64, 2048)
    iters = it.reshape(64, -1, pairs_per_warp).amax(-1).mean().item()
    per_pair = 32 / pairs_per_warp  # the lanes of a pair (G = 8), each running the whole stream
    sass_pair = (once["total"] + iters * loop["total"]) * per_pair
    mufu_pair = (once["mufu"] + iters * loop["mufu"]) * per_pair
    pairs, entries = B * A, B * T * A * N
    flops = 2 * entries * d
    issue_s = pairs * sass_pair / (SMS * ISSUE * CLOCK)
    sfu_s = pairs * mufu_pair / (SMS * SFU_LANES * CLOCK)
    kernel_s = max(issue_s, sfu_s, entries * 4 / L2_BW)
    return dict(once=once["total"] * per_pair, loop=loop["total"] * per_pair, iterations=iters, sass=sass_pair,
                mufu=mufu_pair, issue_s=issue_s, sfu_s=sfu_s, kernel_s=kernel_s,
                fwd_measured_s=max(flops / GEMM_MEASURED, entries * 4 / L2_BW) + kernel_s,
                fwd_peak_s=max(flops / TENSOR_BF16, entries * 4 / L2_BW) + kernel_s, floor_s=flops / TENSOR_BF16)


def cuda_section() -> str:
    try:
        e = cuda_estimate()
    except (RuntimeError, KeyError, FileNotFoundError) as exc:  # no nvcc here
        return f"\nCUDA fallback: not counted ({exc}).\n"
    return ("\nCUDA fallback (backend \"cuda\"), ESTIMATE at the key shape, A = 10,000, counted the same way from "
            "nvcc's sm_90 cubin of sinkhorn_groups_kernel<4, 8> (a pair in a group of 8 lanes): tiles of 24 MiB of "
            "float32 sims, each the cuBLAS GEMM then the kernel.\n\n"
            "| once / pair | loop / pair / it | iters | SASS / pair | MUFU / pair | issue ms | SFU ms | kernel ms | "
            "fwd ms (790) | vs GEMM | fwd ms (peak) | vs GEMM |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
            f"| {e['once']:.0f} | {e['loop']:.0f} | {e['iterations']:.1f} | {e['sass']:.0f} | {e['mufu']:.0f} | "
            f"{_ms(e['issue_s'])} | {_ms(e['sfu_s'])} | {_ms(e['kernel_s'])} | {_ms(e['fwd_measured_s'])} | "
            f"{e['fwd_measured_s'] / e['floor_s']:.2f}x | {_ms(e['fwd_peak_s'])} | {e['fwd_peak_s'] / e['floor_s']:.2f}x |\n")


GPU_CHECK_JSON = os.path.join(ROOT, "benchmarks", "gpu_check_estimates.json")
# The chunk sizes benchmarks/gpu_check.py sweeps backend "triton" over (MiB of float32 sims).
CHUNK_SWEEP_MB = (8, 16, 24, 32, 64, 128, 256)


def gpu_check_estimates() -> dict:
    """What benchmarks/gpu_check.py prints beside its key-shape timings (ESTIMATES): backend
    "triton" forward (scores only: no gradient needed) and forward + backward at every chunk size
    of its sweep; "triton-fused" with the tile the cost model ranks first (its forward at the
    default tol, its backward with the same tile, as gpu_check pins it); the CUDA fallback's
    forward. GEMM at the measured H200 rate (790 TFLOP/s)."""
    import triton

    out = dict(source="python benchmarks/triton_cost.py --gpu-check", triton_version=triton.__version__, key=KEY,
               gemm_floor_ms=gemm_floor_s() * 1e3, gemm_rate="790 TFLOP/s (measured H200 rate), else the dense peak")
    chunks = {}
    for mb in CHUNK_SWEEP_MB:
        e = two_phase_estimate(KEY["A"], mb)
        chunks[str(mb)] = dict(fwd_ms=e["scores"]["fwd_measured_s"] * 1e3, fwd_bwd_ms=e["fwd_bwd_measured_s"] * 1e3)
    out["triton"] = dict(chunks=chunks)
    TP, NP = configs.pow2(KEY["T"]), configs.pow2(KEY["N"])
    with open(JSON_PATH) as fh:  # the kept tiles' forward estimates (python benchmarks/triton_cost.py)
        tiles = json.load(fh)["tiles"]
    best = min(tiles, key=lambda name: tiles[name]["tol_ms"])
    bwd = backward_estimate(configs.by_name(best, TP, NP))
    out["triton-fused"] = dict(tile=best, fwd_ms=tiles[best]["tol_ms"],
                               fwd_bwd_ms=tiles[best]["tol_ms"] + bwd["total_s"] * 1e3)
    try:
        out["cuda"] = dict(fwd_ms=cuda_estimate()["fwd_measured_s"] * 1e3)
    except (RuntimeError, KeyError, FileNotFoundError) as exc:  # no nvcc here
        out["cuda"] = dict(error=str(exc))
    return out


def _ms(s: float) -> str:
    return f"{s * 1e3:.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "out", "triton_cost.md"))
    parser.add_argument("--configs", default="", help="comma-separated tile names (default: every kept tile)")
    parser.add_argument("--two-phase-only", action="store_true",
                        help="only the two-phase path and the CUDA fallback (no fused tiles: seconds, not minutes)")
    parser.add_argument("--gpu-check", action="store_true",
                        help=f"only the estimates benchmarks/gpu_check.py prints, written to {GPU_CHECK_JSON}")
    args = parser.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)
    if args.gpu_check:
        est = gpu_check_estimates()
        with open(GPU_CHECK_JSON, "w") as fh:
            json.dump(est, fh, indent=1)
            fh.write("\n")
        print(json.dumps(est, indent=1))
        return 0
    if args.two_phase_only:
        import triton

        text = f"Triton {triton.__version__}\n" + two_phase_section() + cuda_section()
        print(text)
        return 0
    TP, NP = configs.pow2(KEY["T"]), configs.pow2(KEY["N"])
    cfgs = configs.usable_configs(90, "forward", "bf16", TP, NP)
    if args.configs:
        cfgs = [c for c in configs.candidates(TP, NP) if c.name in args.configs.split(",")]
    floor = gemm_floor_s()
    rows, ests = [], []
    for cfg in cfgs:
        e = estimate(cfg, tile_iterations(cfg))
        ests.append(e)
        rows.append(
            f"| {e['config']} | {e['registers']} / {e['spill']} | {e['shared_kib']} | {e['tensor_op']} | "
            f"{e['loop_tol']:.0f} | {e['loop_fixed']:.0f} | {e['loop_log']:.0f} | {e['mufu_tol']:.0f} | "
            f"{e['once']:.0f} ({e['once_general']:.0f}) | {e['kloop']:.0f} | "
            f"{_ms(e['tensor_s'])} | {_ms(e['l2_s'])} | {e['iterations']:.1f} | "
            f"{_ms(e['total_tol_s'])} ({_ms(e['overlap_tol_s'])}) | {e['total_tol_s'] / floor:.2f}x | "
            f"{e['total_tol_s'] / max(floor, e['sfu_tol_s']):.2f}x | "
            f"{_ms(e['total_fixed100_s'])} ({_ms(e['overlap_fixed100_s'])}) | {e['total_fixed100_s'] / floor:.2f}x | "
            f"{e['total_fixed100_s'] / max(floor, e['sfu_fixed100_s']):.2f}x |")
        print(rows[-1], flush=True)
    header = (
        f"ESTIMATE (static, from the sm_90 SASS; not measured) of the Triton forward on an H200 at B={KEY['B']}, "
        f"T={KEY['T']}, N={KEY['N']}, d={KEY['d']}, A={KEY['A']}, bfloat16. SASS counts are per (video, class) "
        f"pair. The bf16 GEMM of the sims at the dense peak: {_ms(floor)} ms.\n\n"
        "| tile | regs / spill B | smem KiB | tensor op | loop / it (tol) | loop / it (tol=0) | log loop / it | "
        "MUFU / it | once (general) | K-loop | tensor ms | L2 ms | iters | est. tol ms (overlap) | vs GEMM | "
        "vs max(GEMM, SFU) | est. 100 it ms (overlap) | vs GEMM | vs max(GEMM, SFU) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    text = header + "\n".join(rows) + "\n"
    text += (f"\nBackward at the same shape: the weights kernel (every tile the autotuner keeps) and the two "
             f"gradient GEMMs at peak ({_ms(2 * floor)} ms). Floors: backward {_ms(2 * floor)} ms (two GEMMs), forward + "
             f"backward {_ms(3 * floor)} ms (three).\n\n"
             "| weights tile | regs / spill B | tensor op | once / pair | K-loop / pair | tensor ms | L2 ms | issue ms | "
             "W written ms | weights kernel ms | backward ms | vs 2 GEMMs | fwd (tol) + bwd vs 3 GEMMs |\n"
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    best_fwd = min((e["total_tol_s"] for e in ests), default=float("nan"))
    for cfg in configs.usable_configs(90, "weights", "bf16", TP, NP):
        b = backward_estimate(cfg)
        text += (f"| {b['config']} | {b['registers']} / {b['spill']} | {b['tensor_op']} | {b['once']:.0f} | "
                 f"{b['kloop']:.0f} | {_ms(b['tensor_s'])} | {_ms(b['l2_s'])} | {_ms(b['issue_s'])} | "
                 f"{_ms(b['write_s'])} | {_ms(b['weights_s'])} | {_ms(b['total_s'])} | {b['total_s'] / (2 * floor):.2f}x | "
                 f"{(best_fwd + b['total_s']) / (3 * floor):.2f}x |\n")
    text += ("\nWeights and relaxed marginals (reg_m), the same tiles: SASS per pair of one Sinkhorn iteration "
             "of the forward with WEIGHTED and RELAXED (the damped update u = (mu / K v)^tau as one exp2 of a "
             "log2 per row and column) beside the balanced general forward's.\n\n"
             "| tile | regs / spill B | balanced loop / it (tol) | relaxed loop / it (tol) | relaxed (tol=0) | "
             "MUFU / it balanced, relaxed | log loop / it balanced, relaxed | once balanced, relaxed |\n"
             "|---|---|---|---|---|---|---|---|\n")
    for cfg in cfgs:
        r = relaxed_estimate(cfg)
        text += (f"| {r['config']} | {r['registers']} / {r['spill']} | {r['balanced_loop']:.0f} | {r['loop_tol']:.0f} | "
                 f"{r['loop_fixed']:.0f} | {r['balanced_mufu']:.0f}, {r['mufu']:.0f} | {r['balanced_log']:.0f}, "
                 f"{r['log']:.0f} | {r['balanced_once']:.0f}, {r['once']:.0f} |\n")
    text += two_phase_section() + cuda_section()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write(text)
    if not args.configs:  # the kept tiles' estimates (--gpu-check picks the first of them)
        with open(JSON_PATH, "w") as fh:
            json.dump(dict(source="python benchmarks/triton_cost.py", gemm_floor_ms=floor * 1e3,
                           tiles={e["config"]: dict(sims_ms=e["total_iter1_s"] * 1e3, tol_ms=e["total_tol_s"] * 1e3,
                                                    fixed100_ms=e["total_fixed100_s"] * 1e3) for e in ests}),
                      fh, indent=1)
            fh.write("\n")
    print(text)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
