"""Benchmark options, result collection and the summary table printed at the end.

    pytest benchmarks --benchmark-only                       # the default grid
    pytest benchmarks --benchmark-only --bench-classes 51,400 --bench-batch 8

The summary gives each provider's median time as a ratio to the einops reference and to the
bare matmul (the floor), with peak extra memory; it is also written to benchmarks/out/.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict

import pytest
import torch

OUT_DIR = os.path.join(os.path.dirname(__file__), "out")
RESULTS: dict[str, dict[str, dict]] = defaultdict(dict)  # group -> provider -> record


def pytest_addoption(parser):
    group = parser.getgroup("ost-kernels benchmarks")
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    group.addoption("--bench-device", default=default_device, help="device to benchmark on (default: cuda if present)")
    group.addoption("--bench-batch", type=int, default=32, help="videos per batch B (default 32)")
    group.addoption("--bench-classes", default="51,101,160,400,10000",
                    help="comma-separated class counts A (HMDB, UCF, K600 split, K400, large)")
    group.addoption("--bench-frames", default="8,32", help="comma-separated frame counts T")
    group.addoption("--bench-dtype", default="float32", help="input dtype: float32, bfloat16, float16")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def pytest_generate_tests(metafunc):
    cfg = metafunc.config
    if "num_classes" in metafunc.fixturenames:
        metafunc.parametrize("num_classes", _ints(cfg.getoption("--bench-classes")), ids=lambda a: f"A{a}")
    if "num_frames" in metafunc.fixturenames:
        metafunc.parametrize("num_frames", _ints(cfg.getoption("--bench-frames")), ids=lambda t: f"T{t}")


@pytest.fixture(scope="session")
def bench_device(pytestconfig) -> torch.device:
    return torch.device(pytestconfig.getoption("--bench-device"))


@pytest.fixture(scope="session")
def bench_batch(pytestconfig) -> int:
    return pytestconfig.getoption("--bench-batch")


@pytest.fixture(scope="session")
def bench_dtype(pytestconfig) -> torch.dtype:
    return getattr(torch, pytestconfig.getoption("--bench-dtype"))


def record(group: str, provider: str, benchmark, peak_bytes, **extra) -> None:
    stats = getattr(benchmark, "stats", None)
    median = stats.stats.median if stats is not None else None
    benchmark.extra_info.update(peak_extra_mib=None if peak_bytes is None else peak_bytes / 2**20, **extra)
    RESULTS[group][provider] = dict(median_s=median, peak_bytes=peak_bytes, **extra)


def _fmt_time(s):
    return "-" if s is None else (f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s")


def _fmt_ratio(x, ref):
    return "-" if x is None or not ref else f"{x / ref:.2f}x"


def _fmt_mib(b):
    return "-" if b is None else f"{b / 2**20:.1f}"


def pipeline_lines() -> list[str]:
    """The input-pipeline groups: clips/s per provider, per loader worker, and new / old."""
    lines = ["| case | old clips/s | new clips/s (x old) | new+cpu clips/s (x old) | new per worker |",
             "|---|---|---|---|---|"]
    for group in sorted(g for g in RESULTS if g.startswith("pipeline ")):
        recs = RESULTS[group]
        rate = {p: r["clips"] / r["median_s"] for p, r in recs.items() if r.get("median_s")}
        old = rate.get("old")

        def cell(provider):
            if provider not in rate:
                return "-"
            return f"{rate[provider]:.1f}" + (f" ({rate[provider] / old:.2f}x)" if old else "")

        per_worker = f"{rate['new'] / recs['new']['workers']:.1f}" if "new" in rate else "-"
        lines.append(f"| {group[len('pipeline '):]} | {'-' if old is None else f'{old:.1f}'} | {cell('new')} | "
                     f"{cell('new+cpu')} | {per_worker} |")
    return lines if len(lines) > 2 else []


def summary_lines() -> list[str]:
    lines = ["| case | provider | median | vs einops | vs matmul | peak extra MiB | iters (mean) |",
             "|---|---|---|---|---|---|---|"]
    for group in sorted((g for g in RESULTS if not g.startswith("pipeline ")), key=_group_key):
        recs = RESULTS[group]
        ref = recs.get("einops", {}).get("median_s")
        floor = recs.get("matmul", {}).get("median_s")
        for provider, rec in sorted(recs.items(), key=lambda kv: _provider_key(kv[0])):
            it = rec.get("mean_iterations")
            lines.append(
                f"| {group} | {provider} | {_fmt_time(rec['median_s'])} | {_fmt_ratio(rec['median_s'], ref)} | "
                f"{_fmt_ratio(rec['median_s'], floor)} | {_fmt_mib(rec['peak_bytes'])} | "
                f"{'-' if it is None else f'{it:.1f}'} |"
            )
    return lines


def _group_key(group: str):
    # "A400 T32 fwd tol" sorts by the numbers; other groups after, by name.
    toks = group.split()
    return tuple((0, int(t[1:]), "") if t[1:].isdigit() else (1, 0, t) for t in toks)


def _provider_key(p: str):
    order = ["einops", "matmul", "torch", "cpu", "cuda", "triton"]
    return order.index(p) if p in order else len(order)


def write_scaling_plot(path) -> bool:
    """Time and peak memory against class count, forward at the default tol, one line per
    provider and frame count. False when there is nothing to plot (a single class count)."""
    series = defaultdict(list)  # (provider, T or kind) -> [(A, seconds, MiB)]
    for group, recs in RESULTS.items():
        toks = group.split()
        if len(toks) == 4 and toks[0][0] == "A" and toks[2:] == ["fwd", "tol"]:
            a, label = int(toks[0][1:]), toks[1]
        elif len(toks) == 3 and toks[0] == "large":  # test_bench_large_classes.py
            a, label = int(toks[2][1:]), toks[1]
        else:
            continue
        for provider, rec in recs.items():
            if rec["median_s"] is not None:
                mib = None if rec["peak_bytes"] is None else rec["peak_bytes"] / 2**20
                series[(provider, label)].append((a, rec["median_s"], mib))
    if not series or max(len(v) for v in series.values()) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for (provider, T), pts in sorted(series.items()):
        pts.sort()
        xs = [p[0] for p in pts]
        ax_t.plot(xs, [p[1] * 1e3 for p in pts], marker="o", label=f"{provider} {T}")
        if all(p[2] is not None for p in pts):
            ax_m.plot(xs, [max(p[2], 0.1) for p in pts], marker="o", label=f"{provider} {T}")
    for ax, ylabel in ((ax_t, "median time (ms)"), (ax_m, "peak extra memory (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("classes A")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.suptitle("against class count: od_solve forward at the default tol (providers x T), "
                 "OST eval / train step (ost x kind)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RESULTS:
        return
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "results.json"), "w") as fh:
        json.dump(RESULTS, fh, indent=1)
    lines = summary_lines()
    terminalreporter.write_sep("=", "od_solve benchmark summary (ratios: time / einops, time / bare matmul)")
    for line in lines:
        terminalreporter.write_line(line)
    pipeline = pipeline_lines()
    if pipeline:
        terminalreporter.write_sep("=", "video input pipeline (clips/s through a DataLoader; new / old in one run)")
        for line in pipeline:
            terminalreporter.write_line(line)
        lines += ["", *pipeline]
    with open(os.path.join(OUT_DIR, "summary.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    terminalreporter.write_line(f"(written to {os.path.relpath(OUT_DIR)}/summary.md and results.json)")
    if write_scaling_plot(os.path.join(OUT_DIR, "scaling.png")):
        terminalreporter.write_line(f"(plot of time and memory against class count: {os.path.relpath(OUT_DIR)}/scaling.png)")
