"""The compile gate: Triton's interpreter never runs the code generator, so a kernel can pass
every interpreter test and still not compile for a GPU. This compiles a sample of kernel
variants that covers every code path (each kernel, input dtype and architecture, a d with a
K tail, TF32) for sm_80 and sm_90, without a GPU; `make triton-aot` compiles all of them and
refreshes the resource table the autotuner prunes with."""
import importlib.util
import os

import pytest

from ost_kernels.triton import aot, configs

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")


def test_sample_covers_every_code_path():
    sample = aot.sample_variants()
    assert {v.arch for v in sample} == set(configs.ARCHS)
    for arch in configs.ARCHS:
        for kernel in configs.KERNELS:
            mine = [v for v in sample if v.arch == arch and v.kernel == kernel]
            assert {v.dtype for v in mine} == set(configs.DTYPES)
            assert any(not v.even_k for v in mine) and any(v.precision == "tf32" for v in mine)
            if kernel == "forward":  # its compile-time specializations (tol = 0, scaling form alone)
                assert any(v.fixed for v in mine) and any(not v.log_domain for v in mine)
    assert {(v.TP, v.NP) for v in sample} == set(aot.SHAPES)


def test_one_variant_compiles_and_is_reported(tmp_path):
    """The daily suite's piece of the gate (a few seconds): one variant through the whole
    command, compile, ptxas resources, the table and its summary line; `make test-heavy` compiles
    the sample below."""
    out = tmp_path / "resources.md"
    assert aot.main(["--one-per-kernel", "--archs", "90", "--kernels", "chunk-weights", "--dtypes", "bf16",
                     "--jobs", "1", "--out", str(out)]) == 0, out.read_text()
    text = out.read_text()
    assert "1 variants: 0 failed to compile, 1 fit" in text, text
    row = [line for line in text.splitlines() if line.startswith("| sm_90 | chunk-weights | bf16 |")]
    assert len(row) == 1 and row[0].endswith("| yes |"), text


@pytest.mark.heavy  # ~40 s of compiling
def test_sample_compiles_for_sm80_and_sm90(tmp_path):
    out = tmp_path / "resources.md"
    assert aot.main(["--sample", "--jobs", str(min(2, os.cpu_count() or 1)), "--out", str(out)]) == 0, \
        out.read_text()
    text = out.read_text()
    assert "ERROR" not in text and "0 failed to compile" in text


def test_resource_table_leaves_a_fitting_config_everywhere():
    """The table the autotuner prunes with (written by `make triton-aot`) covers every shape,
    dtype, kernel and architecture with at least one config that fits."""
    table = configs._table()
    if not table:
        pytest.fail(f"{configs.RESOURCES_PATH} is missing: run `make triton-aot`")
    for arch in configs.ARCHS:
        for kernel in configs.KERNELS:
            for dtype in configs.DTYPES:
                for TP, NP in aot.SHAPES:
                    usable = configs.usable_configs(arch, kernel, dtype, TP, NP)
                    measured = [c for c in configs.candidates(TP, NP, dtype)
                                if configs.resources(arch, kernel, dtype, TP, NP, c) is not None]
                    assert measured, f"no measurement for sm_{arch} {kernel} {dtype} T{TP} N{NP}"
                    assert usable, f"no config fits for sm_{arch} {kernel} {dtype} T{TP} N{NP}"


def test_resources_apply_only_to_the_triton_that_measured_them(monkeypatch):
    """Another Triton compiles the same kernels to other registers: its pruning falls back to
    the geometric rule instead of reading rows measured with another compiler."""
    import importlib.metadata

    version = configs.measured_version()
    assert version, f"{configs.RESOURCES_PATH} names no Triton version: run `make triton-aot`"
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "3.6.0" if name == "triton" else real(name))
    configs._table.cache_clear()
    try:
        if version != "3.6.0":
            assert configs._table() == {}
        cfg = configs.candidates(32, 4)[0]
        assert configs.usable(90, "forward", "bf16", 32, 4, cfg)  # unmeasured: the geometric rule
    finally:
        configs._table.cache_clear()


SECOND_TRITON_ENV = "OST_KERNELS_SECOND_TRITON"  # a folder holding another Triton (pip install --target)


@pytest.mark.heavy  # ~15 s of compiling
def test_every_kernel_compiles_for_sm90_under_the_other_supported_triton(tmp_path):
    """The GPU machines run Triton 3.6, this one 3.8 (pyproject supports both): one variant of
    every kernel compiles for sm_90 under the other one too (`make install` puts Triton 3.6 in
    .venv/triton-3.6)."""
    import subprocess
    import sys

    folder = os.environ.get(SECOND_TRITON_ENV) or os.path.join(sys.prefix, "triton-3.6")
    if not os.path.isdir(os.path.join(folder, "triton")):
        pytest.fail(f"no second Triton in {folder}: `make install` puts Triton 3.6 there ({SECOND_TRITON_ENV} "
                    "names another folder)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([folder, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("TRITON_INTERPRET", None)
    out = tmp_path / "resources.md"
    done = subprocess.run([sys.executable, "-m", "ost_kernels.triton.aot", "--one-per-kernel", "--archs", "90",
                           "--jobs", "2", "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text()
    assert "Triton 3.6" in text and "0 failed to compile" in text, text
    for kernel in (*configs.KERNELS, *aot.TWO_PHASE_KERNELS):
        assert f"| {kernel} |" in text, kernel
