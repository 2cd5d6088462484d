"""benchmarks/gpu_check.sh runs rarely (when a session is lent a GPU, with minutes of device
time), so a broken check would waste that run: its dry run (the same flow on the CPU: the
background build, the child-process probe, every row, both files) must pass on every CI run, and
the rules that make a row fail must hold."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, "benchmarks", "gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.heavy  # about a minute
def test_the_shell_scripts_dry_run_passes_every_row_and_writes_both_files(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "TRITON_INTERPRET")}
    env["PYTHON"] = sys.executable
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--dry-run", "--out",
                           str(tmp_path)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    said = done.stdout + done.stderr
    assert done.returncode == 0 and "all rows passed" in said, said[-6000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [r["key"] for r in report["rows"]] == [r[0] for r in _gpu_check().ROWS]
    assert all(r["status"] == "pass" and r["lines"] for r in report["rows"]), report
    assert report["exit_status"] == 0 and report["dry_run"]
    rows = {r["key"]: r for r in report["rows"]}
    # The CUDA code ran (emulated), after the background build and the child-process probe.
    assert any("ok" in line for line in rows["correctness-cuda"]["lines"])
    assert rows["triton-resources"]["data"]["variants"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.count("\n## ") == len(rows) and "DRY RUN" in md


def test_a_failed_dropped_or_cut_row_decides_the_exit_status(tmp_path):
    gc = _gpu_check()

    def report_with(**rows):
        report = gc.Report(str(tmp_path), True, dict(date="d", device="cpu", versions="v", command="c", dry_run=True))
        for key in report.rows:
            if rows.get(key, True):
                report.run(key, rows.get(key) or (lambda row: row.check(True, "fine")))
        return report

    assert report_with().outcome() == (0, "all rows passed")
    dropped = report_with(gemm=False)  # never ran: a dropped row fails the check
    assert dropped.outcome()[0] == 1 and dropped.rows["gemm"].status == "dropped"
    failed = report_with(gemm=lambda row: 1 / 0)
    assert failed.outcome()[0] == 1 and "ZeroDivisionError" in failed.rows["gemm"].lines[0]

    def spends_its_budget(row):
        row.budget = 0
        assert not row.item("the second half")

    cut = report_with(memory=spends_its_budget)
    code, summary = cut.outcome()
    assert code == 3 and "memory" in summary  # passed, but something was skipped for time
    written = json.loads((tmp_path / "gpu_check.json").read_text())
    assert written["exit_status"] == 3 and "the second half" in written["rows"][-2]["skipped"][0]
    cut.total_budget = -1
    cut.run("gemm", lambda row: row.check(True, "never runs"))
    assert cut.rows["gemm"].status == "skipped" and "budget" in cut.rows["gemm"].skipped[-1]


@pytest.mark.parametrize("argv", [["--bogus"], ["--out"]])
def test_the_shell_script_refuses_bad_arguments_before_any_work(argv):
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("gpu_check.sh: error:"), done.stderr
