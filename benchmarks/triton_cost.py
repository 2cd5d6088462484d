"""A static cost estimate of the Triton forward while no GPU is at hand. An ESTIMATE, not a
measurement: it is there to compare designs, and is replaced by benchmarks/gpu_check.sh's
timings whenever a GPU is lent.

    python benchmarks/triton_cost.py [--iterations 2.0] [--out benchmarks/out/triton_cost.md]

For each tile config that fits (configs.usable_configs) at the benchmark's key shape (B = 256,
T = 32, N = 4, d = 512, A = 10,000, bfloat16, sm_90), the forward kernel is compiled ahead of
time and its PTX is read: the instructions of one Sinkhorn iteration (the scaling-form loop:
the loop without tensor-core or exp2 instructions; the log-domain loop: the one with exp2)
and of one K step of the sims GEMM (the loop with mma), counted per thread and turned into
counts per (video, class) pair with the CTA's threads and pairs. With an H200's published
peak rates (below) these give times for the key shape at the default tol (mean iterations
per pair measured on the CPU with the same CLIP-like inputs: ~2.0) and at a fixed 100.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ost_kernels.triton import aot, configs  # noqa: E402

# NVIDIA H200 SXM (Hopper GH100, as H100 SXM): published peaks.
SMS, CLOCK = 132, 1.98e9
ALU_LANES = 128       # FP32 lanes per SM per clock (67 TFLOPS FP32 = 33.5 T FMA/s)
SFU_LANES = 16        # special-function (MUFU: ex2, lg2, rcp) lanes per SM per clock
ISSUE = 128           # thread-instructions issued per SM per clock (4 schedulers x 32 lanes)
TENSOR_BF16 = 989e12  # dense bf16 tensor-core FLOP/s
HBM = 4.8e12          # bytes/s

KEY = dict(B=256, T=32, N=4, d=512, A=10_000)

_LOOP = re.compile(r"^(\$L__BB\d+_\d+):.*Loop Header")


def loops(ptx: str) -> list[list[str]]:
    """The instruction lines of each innermost loop: from its header label to the branch back."""
    lines = ptx.splitlines()
    out = []
    for i, line in enumerate(lines):
        m = _LOOP.match(line)
        if not m:
            continue
        label = m.group(1)
        end = max((j for j in range(i + 1, len(lines)) if re.search(rf"\bbra(\.uni)?\s+{re.escape(label)};", lines[j])),
                  default=None)
        if end is not None:
            out.append([l.strip() for l in lines[i + 1:end + 1]])
    return out


def _is_instruction(l: str) -> bool:
    return bool(l) and not l.startswith(("//", ".", "$", "{", "}")) and not l.startswith("@!") or l.startswith("@")


def classify(body: list[str]) -> dict:
    """Per-thread instruction counts of one pass through a loop body."""
    ops = [l.split()[1] if l.startswith("@") else l.split()[0] for l in body
           if l and not l.startswith(("//", ".", "$", "{", "}"))]
    count = lambda *prefixes: sum(any(o.startswith(p) for p in prefixes) for o in ops)  # noqa: E731
    sfu = count("ex2.", "lg2.", "rcp.", "div.full", "sqrt.approx", "rsqrt.")
    mma = count("mma.", "wgmma.")
    return dict(total=len(ops), sfu=sfu, mma=mma, fma=count("fma.", "mul.f32", "add.f32", "sub.f32"),
                shfl=count("shfl."), smem=count("ld.shared", "st.shared", "cp.async"), bar=count("bar."))


def estimate(cfg: configs.TileConfig, iterations: float) -> dict:
    v = aot.Variant(90, "forward", "bf16", configs.pow2(KEY["T"]), configs.pow2(KEY["N"]), cfg)
    res = aot.compile_variant(v)
    if "error" in res:
        raise RuntimeError(f"{v.label}: {res['error']}")
    threads = 32 * cfg.num_warps
    pairs_per_cta = cfg.BB * cfg.BA
    per_pair = threads / pairs_per_cta
    kinds = {}
    for body in loops(res["ptx"]):
        c = classify(body)
        kind = "gemm" if c["mma"] else ("log" if any("ex2." in l for l in body) else "scaling")
        kinds.setdefault(kind, c)
    pairs = KEY["B"] * KEY["A"]
    gemm_s = 2 * KEY["B"] * KEY["T"] * KEY["A"] * KEY["N"] * KEY["d"] / TENSOR_BF16
    out = dict(config=cfg.name, registers=res["registers"], shared_kib=res["shared_bytes"] // 1024, gemm_s=gemm_s)
    scaling = kinds.get("scaling")
    if scaling:
        per_iter = {k: scaling[k] * per_pair for k in ("total", "sfu", "fma", "shfl")}
        out["per_pair_iteration"] = per_iter
        for label, its in (("tol", iterations), ("fixed100", 100)):
            issue_s = pairs * its * per_iter["total"] / (SMS * ISSUE * CLOCK)
            sfu_s = pairs * its * per_iter["sfu"] / (SMS * SFU_LANES * CLOCK)
            out[f"solve_{label}_s"] = max(issue_s, sfu_s)
    # Once per solve: K = exp2(z) and the plan's log2, one each per entry.
    entries = pairs * KEY["T"] * KEY["N"]
    out["once_s"] = 2 * entries / (SMS * SFU_LANES * CLOCK)
    out["outputs_s"] = pairs * (KEY["T"] + KEY["N"] + 3) * 4 / HBM
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=float, default=2.0, help="mean iterations per pair at the default tol")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "out", "triton_cost.md"))
    args = parser.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)
    TP, NP = configs.pow2(KEY["T"]), configs.pow2(KEY["N"])
    rows = []
    for cfg in configs.usable_configs(90, "forward", "bf16", TP, NP):
        e = estimate(cfg, args.iterations)
        it = e.get("per_pair_iteration", {})
        total = {k: e["gemm_s"] + e["once_s"] + e["outputs_s"] + e[f"solve_{k}_s"] for k in ("tol", "fixed100")}
        rows.append(
            f"| {e['config']} | {e['registers']} | {e['shared_kib']} | {it.get('total', 0):.0f} | {it.get('sfu', 0):.0f} | "
            f"{it.get('fma', 0):.0f} | {it.get('shfl', 0):.0f} | {e['gemm_s'] * 1e3:.2f} | {e['solve_tol_s'] * 1e3:.3f} | "
            f"{e['solve_fixed100_s'] * 1e3:.2f} | {e['once_s'] * 1e3:.3f} | {e['outputs_s'] * 1e3:.3f} | "
            f"{total['tol'] * 1e3:.2f} ({total['tol'] / e['gemm_s']:.2f}x) | "
            f"{total['fixed100'] * 1e3:.2f} ({total['fixed100'] / e['gemm_s']:.2f}x) |")
        print(rows[-1], flush=True)
    header = (f"ESTIMATE (static, from PTX; not measured) of the Triton forward on an H200 at B={KEY['B']}, "
              f"T={KEY['T']}, N={KEY['N']}, d={KEY['d']}, A={KEY['A']}, bfloat16; {args.iterations} mean iterations "
              "at the default tol.\n\n"
              "| tile | regs | smem KiB | instr / pair / iter | SFU | FMA-class | shfl | GEMM at peak ms | "
              "solve (tol) ms | solve (100 it) ms | exp2 + log2 once ms | outputs ms | total tol (vs GEMM) | "
              "total 100 it (vs GEMM) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    # Backward: the weights kernel (the sims GEMM again, one exp2 per entry, W written once in
    # bf16), then W @ unit(desc) and W^T @ unit(video) (two GEMMs of the same size, W read twice).
    entries = KEY["B"] * KEY["A"] * KEY["T"] * KEY["N"]
    gemm = 2 * entries * KEY["d"] / TENSOR_BF16
    w_traffic = 3 * 2 * entries / HBM
    exps = entries / (SMS * SFU_LANES * CLOCK)
    backward = 3 * gemm + w_traffic + exps
    note = (f"\n\nBackward (weights kernel + two GEMMs), same shape: 3 GEMMs at peak {3 * gemm * 1e3:.2f} ms + W "
            f"written once and read twice in bf16 {w_traffic * 1e3:.2f} ms + one exp2 per entry {exps * 1e3:.3f} ms "
            f"= {backward * 1e3:.2f} ms. The forward+backward GEMM floor (the sims GEMM and its two gradient "
            f"GEMMs) is {3 * gemm * 1e3:.2f} ms at peak.\n")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write(header + "\n".join(rows) + note)
    print(note)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
