"""Tile configurations of the Triton kernels, and the rule that keeps only those that fit.

A config is a tile of BB videos x BA classes (BB * TP matmul rows, BA * NP columns), a warp
count and a pipeline depth. The rule `fits` drops configs that spill registers or need more
shared memory than the architecture gives a block; it reads the resources measured by
compiling every config ahead of time (`python -m ost_kernels.triton.aot`, which writes
resources.json beside this file), so a GPU never compiles or times a config that does not
fit. Shapes the table does not cover fall back to a register estimate.

Nothing here imports Triton: the AOT tool and the tests use it without a GPU.
"""
from __future__ import annotations

import functools
import json
import os
from typing import NamedTuple

RESOURCES_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources.json")

# Shared memory a block may use (opt-in maximum), per architecture.
SHARED_MEMORY_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
ARCHS = (80, 90)  # compiled ahead of time and by CI
# Resource rows per kernel variant: "forward" is the general forward (uniform, balanced);
# "forward-relaxed" the forward with weights and a relaxed side (WEIGHTED, RELAXED), whose
# resources prune every launch with weights or reg_m; "weights" the backward's kernel.
KERNELS = ("forward", "forward-relaxed", "weights")
DTYPES = ("fp32", "bf16", "fp16")

MIN_SIDE, MAX_SIDE = 32, 256  # tl.dot needs >= 16 rows / columns; 16 wastes the MMA shapes
MAX_PAIR_SIDE = 128  # T and N, padded: a pair's T x N block stays within one CTA's registers
MAX_VIDEO_TILES = 65_535  # the launch grid's axis 1 (video tiles; ops._grid) allows this many programs
# Tiles of 64 x 64 to 64 x 128 entries, 32 a thread: smaller tiles reload their operands from
# L2 more often (the forward is bound by those reloads: benchmarks/triton_cost.py), and with 16
# a thread the 8-warp tiles cost more per Sinkhorn iteration than the 4-warp ones (a descriptor
# bit on the lanes; the counts: benchmarks/RESULTS.md); with more than 32 a thread the
# Sinkhorn state spills registers (`python -m ost_kernels.triton.aot`).
# float32 operands take the FMA dot (no tensor cores unless TF32 is allowed), whose operand
# registers leave room for 8 to 16 entries a thread (every 32-a-thread tile spilled, and on
# sm_80 the backward's 16-a-thread ones too), from 32 x 64 entries.
MIN_TILE = {"bf16": 64 * 64, "fp16": 64 * 64, "fp32": 32 * 64}
MAX_TILE = 64 * 128
VALUES_PER_THREAD = {"bf16": (32,), "fp16": (32,), "fp32": (8, 16)}


class TileConfig(NamedTuple):
    BB: int
    BA: int
    num_warps: int
    num_stages: int

    @property
    def name(self) -> str:
        return f"BB{self.BB}_BA{self.BA}_w{self.num_warps}_s{self.num_stages}"


CANDIDATES = tuple(
    TileConfig(bb, ba, w, s)
    for bb in (1, 2, 4, 8, 16, 32, 64, 128)
    for ba in (1, 2, 4, 8, 16, 32, 64, 128)
    for w in (4, 8)
    for s in (3,)
)


def pow2(n: int, lo: int = 1) -> int:
    p = lo
    while p < n:
        p *= 2
    return p


def geometric(cfg: TileConfig, TP: int, NP: int, dtype: str = "bf16") -> bool:
    """The tile's matmul is 32..256 rows and columns, MIN_TILE[dtype] to MAX_TILE entries in
    all, VALUES_PER_THREAD[dtype] a thread."""
    rows, cols = cfg.BB * TP, cfg.BA * NP
    return (MIN_SIDE <= rows <= MAX_SIDE and MIN_SIDE <= cols <= MAX_SIDE
            and MIN_TILE[dtype] <= rows * cols <= MAX_TILE
            and rows * cols // (32 * cfg.num_warps) in VALUES_PER_THREAD[dtype])


def candidates(TP: int, NP: int, dtype: str = "bf16") -> list[TileConfig]:
    """The configs worth trying for padded sizes TP x NP and input dtype ("bf16", "fp16",
    "fp32"). Where no tile meets the geometric rule (tiny T x N, where none reaches MIN_TILE,
    or large ones, where all pass MAX_TILE), the tiles nearest to the range: the largest below
    MAX_TILE, else the smallest."""
    found = [c for c in CANDIDATES if geometric(c, TP, NP, dtype)]
    if found or TP > MAX_SIDE or NP > MAX_SIDE:
        return found
    fit = [c for c in CANDIDATES if c.BB * TP <= MAX_SIDE and c.BA * NP <= MAX_SIDE]
    size = lambda c: c.BB * TP * c.BA * NP  # noqa: E731
    small = [size(c) for c in fit if size(c) <= MAX_TILE]
    target = max(small) if small else min(map(size, fit))
    return [c for c in fit if size(c) == target]


def by_name(name: str, TP: int, NP: int) -> TileConfig:
    """The candidate config called `name` (TileConfig.name) for TP x NP, for any input dtype
    (pinning a tile is the caller's choice: a float32 run may spill on a bf16 tile);
    ValueError if none."""
    pool = list(dict.fromkeys(c for dtype in DTYPES for c in candidates(TP, NP, dtype)))
    for c in pool:
        if c.name == name:
            return c
    raise ValueError(f"tile {name!r} is not a candidate for T, N padded to {TP}, {NP}; expected one of "
                     f"{', '.join(c.name for c in pool)}")


# The Triton that measured resources.json: another version compiles the same kernels to other
# registers (Triton 3.6: a weights tile at 254 where 3.8 uses 183), so its rows do not apply.
MEASURED_WITH = "triton"


@functools.cache
def _file() -> dict:
    try:
        with open(RESOURCES_PATH) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {}


def measured_version() -> str | None:
    """The Triton version the table was measured with (None: no table)."""
    return _file().get(MEASURED_WITH, {}).get("version") if _file() else None


@functools.cache
def _table() -> dict:
    """The resource rows, if the installed Triton is the one that measured them; else none (the
    geometric rule alone then prunes, and the autotuner times what it keeps)."""
    import importlib.metadata

    try:
        installed = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    rows = {k: v for k, v in _file().items() if k != MEASURED_WITH}
    return rows if installed is None or installed == measured_version() else {}


def forward_resources(weighted: bool, relaxed: bool) -> str:
    """The KERNELS row that prunes a forward launch with these flags."""
    return "forward-relaxed" if weighted or relaxed else "forward"


def resource_key(arch: int, kernel: str, dtype: str, TP: int, NP: int, cfg: TileConfig) -> str:
    return f"sm{arch}/{kernel}/{dtype}/T{TP}N{NP}/{cfg.name}"


def resources(arch: int, kernel: str, dtype: str, TP: int, NP: int, cfg: TileConfig) -> dict | None:
    """{"registers", "spill_bytes", "shared_bytes", ...} measured ahead of time, or None."""
    return _table().get(resource_key(arch, kernel, dtype, TP, NP, cfg))


def fits(res: dict, arch: int) -> bool:
    """The one rule: no register spills and shared memory within the architecture's limit."""
    return res["spill_bytes"] == 0 and res["shared_bytes"] <= SHARED_MEMORY_LIMIT.get(arch, 99 * 1024)


def usable(arch: int, kernel: str, dtype: str, TP: int, NP: int, cfg: TileConfig) -> bool:
    res = resources(arch, kernel, dtype, TP, NP, cfg)
    if res is not None:
        return fits(res, arch)
    return True  # not measured: the geometric rule (candidates) is all there is


def usable_configs(arch: int, kernel: str, dtype: str, TP: int, NP: int) -> list[TileConfig]:
    return [c for c in candidates(TP, NP, dtype) if usable(arch, kernel, dtype, TP, NP, c)]


def default_config(arch: int, kernel: str, dtype: str, TP: int, NP: int) -> TileConfig:
    """The config used without autotuning: the largest fitting tile, more warps first."""
    pool = usable_configs(arch, kernel, dtype, TP, NP) or candidates(TP, NP, dtype)
    return max(pool, key=lambda c: (c.BB * TP * c.BA * NP, c.num_warps, -c.BB))


def interpreter_tile(TP: int, NP: int) -> TileConfig:
    """The one small tile used under Triton's interpreter (tl.dot needs 16 rows / columns):
    small, so the tests' shapes span several tiles on both sides."""
    return TileConfig(max(1, 16 // TP), max(1, 16 // NP), 4, 1)
