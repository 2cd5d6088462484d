"""What ptxas reports for the CUDA fallback's kernels: registers, spills, stack, shared memory.

Compiles csrc/cuda/od_cuda.cu's device code to a cubin (no GPU needed) with `nvcc -Xptxas -v`
(the report `--resource-usage` prints in the build) for one architecture and parses it per
kernel. tests/kernels/test_cuda_build.py runs it for sm_90, fails on any spill and writes
benchmarks/out/cuda_resources.md, which CI prints; `make cuda-resources` writes the table for
sm_80 and sm_90.

    python -m ost_kernels.cuda_resources --arch 80 --arch 90 --write-table
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "csrc", "cuda", "od_cuda.cu")
TABLE_PATH = os.path.join(ROOT, "benchmarks", "out", "cuda_resources.md")
# As torch.utils.cpp_extension compiles CUDA sources (its COMMON_NVCC_FLAGS).
TORCH_NVCC_FLAGS = ["-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
                    "--expt-relaxed-constexpr"]


class KernelUsage(NamedTuple):
    arch: int
    kernel: str  # demangled, without the namespace
    registers: int
    stack: int  # bytes of stack frame (local memory)
    shared: int  # bytes of static shared memory
    spill_stores: int
    spill_loads: int


def cuda_home() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    return home if os.path.exists(os.path.join(home, "bin", "nvcc")) else None


def _nvcc_command(home: str, arch: int, out: str) -> list[str]:
    from torch.utils.cpp_extension import include_paths

    includes = [os.path.join(ROOT, "csrc"), sysconfig.get_paths()["include"], *include_paths(device_type="cuda")]
    return [os.path.join(home, "bin", "nvcc"), "-cubin", "-o", out, f"-arch=sm_{arch}", "-O3", "-std=c++20",
            "-Xptxas", "-v", *TORCH_NVCC_FLAGS, *[f"-I{p}" for p in includes], SOURCE]


def _demangle(names: list[str], home: str) -> list[str]:
    tool = os.path.join(home, "bin", "cu++filt")
    tool = tool if os.path.exists(tool) else shutil.which("c++filt")
    if not tool:
        return names
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return [re.sub(r"ost_kernels::cuda::\(anonymous namespace\)::", "", n) for n in out] if len(out) == len(names) \
        else names


def parse_ptxas(text: str, arch: int, home: str) -> list[KernelUsage]:
    """KernelUsage per entry function in `ptxas -v` output."""
    rows = []
    current = None
    props: dict[str, tuple[int, int, int]] = {}
    for line in text.splitlines():
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and current:
            props[current] = tuple(int(x) for x in m.groups())
            continue
        m = re.search(r"Compiling entry function '(\S+)'", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"Used (\d+) registers.*?(?:(\d+) bytes smem)?", line)
        if m and current:
            smem = re.search(r"(\d+) bytes smem", line)
            rows.append((current, int(m.group(1)), int(smem.group(1)) if smem else 0))
    names = _demangle([r[0] for r in rows], home)
    usage = []
    for (raw, regs, smem), name in zip(rows, names):
        stack, spill_stores, spill_loads = props.get(raw, (0, 0, 0))
        usage.append(KernelUsage(arch, name, regs, stack, smem, spill_stores, spill_loads))
    return usage


def resource_usage(arch: int) -> tuple[list[KernelUsage], str]:
    """Compile the device code for sm_<arch>; the kernels' usage and ptxas's raw report."""
    home = cuda_home()
    if home is None:
        raise RuntimeError("nvcc not found (set CUDA_HOME to the CUDA toolkit)")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(_nvcc_command(home, arch, os.path.join(tmp, "od_cuda.cubin")), capture_output=True,
                              text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nvcc failed for sm_{arch}:\n{done.stderr[-4000:]}")
    report = done.stdout + done.stderr
    return parse_ptxas(report, arch, home), report


def _nvdisasm(home: str) -> str:
    """The toolkit's nvdisasm, else the one Triton ships."""
    tool = os.path.join(home, "bin", "nvdisasm")
    if os.path.exists(tool):
        return tool
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")


def sass(arch: int, kernel: str) -> str:
    """nvdisasm's SASS of one kernel of the device code compiled for sm_<arch>; `kernel` is the
    start of its demangled name, e.g. "void sinkhorn_groups_kernel<4, 8>" (for the cost model,
    benchmarks/triton_cost.py)."""
    home = cuda_home()
    if home is None:
        raise RuntimeError("nvcc not found (set CUDA_HOME to the CUDA toolkit)")
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "od_cuda.cubin")
        done = subprocess.run(_nvcc_command(home, arch, cubin), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"nvcc failed for sm_{arch}:\n{done.stderr[-4000:]}")
        text = subprocess.run([_nvdisasm(home), "-c", cubin], capture_output=True, text=True, check=True).stdout
    # One section a kernel: ".text.<mangled name>:" up to the next section.
    sections = re.split(r"^\s*\.section\s+\.text\.", text, flags=re.M)
    names = [sec.split(",", 1)[0].strip() for sec in sections[1:]]
    for name, pretty, body in zip(names, _demangle(names, home), sections[1:]):
        if pretty.startswith(kernel):
            return body
    raise KeyError(f"no kernel {kernel!r} in the sm_{arch} cubin (has: {', '.join(_demangle(names, home))})")


def local_memory_users(rows: list[KernelUsage]) -> list[KernelUsage]:
    """Kernels that spill registers or keep a stack frame: either puts per-thread data (a pair's
    T x N block) in local memory, which the register-resident design exists to avoid."""
    return [r for r in rows if r.spill_stores or r.spill_loads or r.stack]


def table(rows: list[KernelUsage]) -> str:
    lines = ["| arch | kernel | registers | stack B | shared B | spill stores B | spill loads B |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| sm_{r.arch} | `{r.kernel}` | {r.registers} | {r.stack} | {r.shared} | {r.spill_stores} | "
              f"{r.spill_loads} |" for r in sorted(rows)]
    return "\n".join(lines)


def write_table(rows: list[KernelUsage], path: str = TABLE_PATH) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(f"ptxas report of {os.path.relpath(SOURCE, ROOT)} (nvcc -Xptxas -v, as --resource-usage)\n\n")
        fh.write(table(rows) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, action="append", help="e.g. 90 (repeatable; default 80 and 90)")
    parser.add_argument("--write-table", action="store_true", help=f"write {os.path.relpath(TABLE_PATH, ROOT)}")
    args = parser.parse_args(argv)
    rows = []
    for arch in args.arch or [80, 90]:
        rows += resource_usage(arch)[0]
    text = table(rows)
    print(text)
    if args.write_table:
        write_table(rows)
    spills = local_memory_users(rows)
    if spills:
        print(f"{len(spills)} kernel(s) use local memory (spills or a stack frame)", file=sys.stderr)
    return 1 if spills else 0


if __name__ == "__main__":
    sys.exit(main())
