"""The video input pipeline: clips per second through a DataLoader, against the pipeline as it
was before it was reworked (the `old` provider, the code of commit BEFORE, taken from git), in
the same run.

Clips are Kinetics-like (ost.data.synthetic.write_kinetics_like_clip: 10 s, 30 fps, 340 x 256,
H.264 with B-frames), with the encoder's default keyframe interval and a short one (12).
Grid: T in {8, 32}, training and evaluation transforms (size 224, one view), 1 and 2 loader
workers. `new` is what `ost train` / `ost eval` run: the loader decodes what the clip needs and
crops uint8 frames, the photometric half (colour jitter, grayscale, normalization) runs on the
training device (ost.data.augment.finish_batch), so it is not part of the loader's work; `new+cpu`
adds that half on this CPU, for CPU-only training. The table reports clips/s and clips/s per
loader worker (per core).
"""
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import record
from ost.data.annotations import VideoRecord
from ost.data.augment import finish_batch
from ost.data.data import VideoDataset, collate_skipping
from ost.data.synthetic import write_kinetics_like_clip

BEFORE = "fa23a97"  # the last commit with the pipeline as the issue measured it
ROOT = Path(__file__).resolve().parents[1]
CLIPS = 12  # clips per measurement (distinct videos, cycled)
SIZE = 224


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("kinetics_like")
    out = {}
    for gop in ("default", "short"):
        out[gop] = [write_kinetics_like_clip(d / f"{gop}_{k}.mp4", gop=None if gop == "default" else 12, seed=k)
                    for k in range(4)]
    return out


@pytest.fixture(scope="session")
def old_pipeline(tmp_path_factory):
    """ost.data as of commit BEFORE, importable as a package of its own; None without git history."""
    pkg = tmp_path_factory.mktemp("old") / "ost_before"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("data", "transforms", "annotations"):
        got = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE}:ost/{name}.py"], capture_output=True,
                             text=True)
        if got.returncode != 0:
            return None
        (pkg / f"{name}.py").write_text(got.stdout)
    sys.path.insert(0, str(pkg.parent))
    return importlib.import_module("ost_before.data")


def _dataset(provider, old_pipeline, records, T, train):
    if provider == "old":
        return old_pipeline.VideoDataset(records, T, SIZE, train=train, seed=0)
    return VideoDataset(records, T, SIZE, train=train, seed=0, deferred=True)


@pytest.mark.parametrize("workers", [1, 2], ids=lambda w: f"w{w}")
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("T", [8, 32], ids=lambda t: f"T{t}")
@pytest.mark.parametrize("gop", ["default", "short"], ids=lambda g: f"{g}-gop")
@pytest.mark.parametrize("provider", ["old", "new", "new+cpu"])
def test_pipeline(benchmark, provider, gop, T, mode, workers, videos, old_pipeline):
    if provider == "old" and old_pipeline is None:
        pytest.skip(f"no git history with commit {BEFORE} here")
    records = [VideoRecord(videos[gop][k % len(videos[gop])], 0) for k in range(CLIPS)]
    old_records = records if provider != "old" else [
        old_pipeline.VideoRecord(r.path, r.label) for r in records]
    dataset = _dataset(provider, old_pipeline, old_records, T, mode == "train")
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=workers, collate_fn=collate_skipping,
                                         persistent_workers=True, prefetch_factor=2)
    for batch in loader:  # start the workers (and warm the file cache) outside the timing
        break

    def run():
        n = 0
        for batch in loader:
            assert batch["skipped"] == 0
            if provider == "new+cpu":
                finish_batch(batch, torch.device("cpu"))
            n += batch["frames"].shape[0]
        assert n == CLIPS

    group = f"pipeline {gop}-gop T{T} {mode} w{workers}"
    benchmark.group = group
    benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
    record(group, provider, benchmark, None, clips=CLIPS, workers=workers)
