"""Ctrl-C: one line, `ost: interrupted`, exit code 130 (the shell's 128 + SIGINT), no
traceback, and every file written whole or not at all (a checkpoint, JSON, PNGs); an
interrupted training run keeps its last checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ost.model.checkpoint import load_checkpoint
from ost.cli import main
from ost.data.synthetic import make_synthetic
from tests.helpers.ost_runs import write_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn"), num_classes=4, videos_per_class=4, frames=8, size=32)


def run(argv) -> int:
    try:
        return main(argv)
    except KeyboardInterrupt:  # a traceback of 45-60 lines for the user
        pytest.fail("KeyboardInterrupt escaped ost.cli.main")


def interrupt(*_args, **_kwargs):
    raise KeyboardInterrupt


def only_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_interrupted_eval_writes_nothing(data, tmp_path, capsys, monkeypatch):
    import ost.run.evaluate

    monkeypatch.setattr(ost.run.evaluate, "evaluate_split", interrupt)
    config = write_config(tmp_path, data)
    out, preds = tmp_path / "out" / "res.json", tmp_path / "out" / "preds.jsonl"
    assert run(["eval", "--config", str(config), "--list", str(data["val"]), "--untrained", "--out", str(out),
                "--predictions", str(preds), "--quiet"]) == 130
    assert only_line(capsys) == "ost: interrupted"
    assert not out.exists() and not preds.exists()


def test_interrupted_plot_leaves_no_part_of_a_png(data, tmp_path, capsys, monkeypatch):
    """Interrupted while matplotlib writes the first figure: no PNG, no temporary file, and
    not the empty folder --plot-dir asked for; the JSON written before it is whole."""
    import matplotlib.figure

    def savefig(fig, target, **kw):
        if hasattr(target, "write"):
            target.write(b"\x89PNG half a figure")
        else:
            Path(target).write_bytes(b"\x89PNG half a figure")
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    config = write_config(tmp_path, data)
    video = sorted(Path(data["labels"]).parent.glob("videos/*.mp4"))[0]
    plots, out = tmp_path / "plots", tmp_path / "p.json"
    assert run(["predict", str(video), "--config", str(config), "--json", str(out), "--plot-dir", str(plots),
                "--quiet"]) == 130
    assert only_line(capsys) == "ost: interrupted"
    assert not plots.exists()
    assert json.loads(out.read_text())["videos"][0]["video"] == str(video)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml", "p.json"]


def test_ctrl_c_stops_training_with_one_line_and_its_last_checkpoint(data, tmp_path):
    """A real Ctrl-C: SIGINT to the process group, the loader workers included."""
    config = write_config(tmp_path, data, batch_size=4, max_steps=1000, save_every=2, num_workers=2)
    proc = subprocess.Popen([sys.executable, "-m", "ost", "train", "--config", str(config), "--quiet"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    log_path = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log_path.exists() and len(log_path.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "ost: interrupted" and "Traceback" not in err, err
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["step"] >= 2 and state["step"] % 2 == 0


class _Pids(torch.utils.data.Dataset):
    """Item i: (i, the pid of the worker that made it), slowly enough for a signal to land."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        time.sleep(0.05)
        return i, os.getpid()


def test_loader_workers_leave_ctrl_c_to_the_main_process():
    """ost's loaders start workers with loader_worker_init: a SIGINT that reaches them (it goes to
    the whole process group) neither kills one mid-batch nor makes it print; the main process
    stops them when it stops."""
    from ost.data.data import loader_worker_init

    loader = torch.utils.data.DataLoader(_Pids(), batch_size=2, num_workers=2, worker_init_fn=loader_worker_init)
    items = iter(loader)
    started = [next(items), next(items)]  # one batch from each worker
    for pid in {int(p) for batch in started for p in batch[1]}:
        os.kill(pid, signal.SIGINT)
    batches = started + list(items)
    assert sorted(int(i) for batch in batches for i in batch[0]) == list(range(12))


def test_a_worker_does_not_print_the_connection_an_interrupted_main_process_dropped(monkeypatch):
    """The resource sharer's thread in a worker reports errors through sys.excepthook: a
    connection reset by the main process (interrupted while it fetched a batch) is not printed
    after `ost: interrupted`; any other error still is."""
    from ost.data.data import loader_worker_init

    printed = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: printed.append(kind))
    previous = signal.getsignal(signal.SIGINT)
    try:
        loader_worker_init(0)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        for kind in (ConnectionResetError, BrokenPipeError, EOFError, ValueError, OSError):
            sys.excepthook(kind, kind("x"), None)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert printed == [ValueError, OSError]
