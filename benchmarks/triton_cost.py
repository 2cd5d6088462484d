"""A static cost model of the Triton kernels on an H200, from what the GPU executes: the SASS
of the compiled cubins. An ESTIMATE, not a measurement: it is there to compare designs while
no GPU is at hand, and benchmarks/gpu_check.sh prints it beside the measured times.

    python benchmarks/triton_cost.py [--out benchmarks/out/triton_cost.md]

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


def _ms(s: float) -> str:
    return f"{s * 1e3:.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "out", "triton_cost.md"))
    parser.add_argument("--configs", default="", help="comma-separated tile names (default: every kept tile)")
    args = parser.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)
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
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write(text)
    if not args.configs:  # the kept tiles' estimates, for gpu_check.py to print beside its timings
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
