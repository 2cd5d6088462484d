"""The video pipeline against the official OST code (tomchen-ctj/OST, datasets/build.py and
datasets/pipeline.py): annotation lists, MultiScaleCrop, colour jitter, normalization,
evaluation resize and crops. Synthetic uint8 clips whose pixels encode their position."""
import random
from collections import Counter

import pytest
import torch
import torchvision
from torchvision.transforms.v2 import functional as F

from ost.data.annotations import read_annotations
from ost.data.data import VideoDataset
from ost.data.augment import NORMALIZATIONS, apply_photometric, photometric_params
from ost.data.transforms import (ClipAugmentation, EvalTransform, TrainTransform, draw_jitter, eval_transform,
                            fixed_crop_offsets, multiscale_crop_box, multiscale_crop_sizes, short_side_shape,
                            three_crop_boxes, train_transform)

from tests.helpers.paper_data import PAPER_DATA

SPLITS = PAPER_DATA / "splits"


def position_clip(T=3, H=64, W=96):
    """uint8 (T, 3, H, W): channel 0 = x, channel 1 = y, channel 2 = 10 * frame index."""
    x = torch.arange(W).expand(H, W)
    y = torch.arange(H)[:, None].expand(H, W)
    return torch.stack([torch.stack([x, y, torch.full((H, W), 10 * t)]) for t in range(T)]).to(torch.uint8)


def unnormalize(out, normalization="imagenet"):
    """float (..., 3, H, W) from apply_photometric() back to 0..255."""
    mean, std = (torch.tensor(v)[:, None, None] for v in NORMALIZATIONS[normalization])
    return (out * std + mean) * 255


# -- 1. annotation lists --------------------------------------------------------------------------
def test_hash_lines_are_videos_not_comments(tmp_path):
    p = tmp_path / "val2.txt"
    p.write_bytes(b"#122_Cleaning_Up_The_Beach_In_Chiba__Japan_pick_f_nm_np1_fr_bad_1.avi 24\r\n"
                  b"\r\n   \n"
                  b"# spaced name.avi 3\n"
                  b"a/b c.mp4\t7")
    recs = read_annotations(p, root="/r")
    assert [(str(r.path), r.label) for r in recs] == [
        ("/r/#122_Cleaning_Up_The_Beach_In_Chiba__Japan_pick_f_nm_np1_fr_bad_1.avi", 24),
        ("/r/# spaced name.avi", 3), ("/r/a/b c.mp4", 7)]
    p.write_text("# not a comment\n")  # no label: a malformed line, with the same message as before
    with pytest.raises(ValueError, match=r"val2.txt:1: expected 'relative/path.mp4 label_id'"):
        read_annotations(p)


def test_every_official_list_is_read_whole():
    if not SPLITS.is_dir():
        pytest.skip(f"{SPLITS} is absent")
    lists = sorted(SPLITS.rglob("*.txt"))
    assert lists
    hashed = 0
    for p in lists:
        lines = [l for l in p.read_bytes().splitlines() if l.strip()]  # \n, \r\n and \r only
        recs = read_annotations(p)
        assert len(recs) == len(lines), p
        hashed += sum(r.path.name.startswith("#") for r in recs)
    assert hashed > 0  # the HMDB lists have such names: they are really read


# -- 2. training crop -----------------------------------------------------------------------------
def test_multiscale_candidates_follow_the_official_rule():
    # 224 input: short side int(256 / 224 * 224) = 256, sides int(256 * s) = 256, 224, 192, 168.
    sides = [256, 224, 192, 168]
    want = {(sides[i], sides[j]) for i in range(4) for j in range(4) if abs(i - j) <= 1}
    assert set(multiscale_crop_sizes(256, 224)) == want and len(want) == 10
    # A side within 2 pixels of the input size snaps to it (int(36 * .875) = 31 -> 32).
    assert {s for pair in multiscale_crop_sizes(36, 32) for s in pair} == {36, 32, 27, 23}
    ws, hs = (341 - 192) // 4, (256 - 224) // 4
    assert fixed_crop_offsets(256, 341, 224, 192) == [(0, 0), (0, 4 * ws), (4 * hs, 0), (4 * hs, 4 * ws),
                                                      (2 * hs, 2 * ws)]


def test_multiscale_crop_box_draws_only_allowed_boxes():
    rng = random.Random(0)
    H, W, size = 256, 341, 224
    allowed = set(multiscale_crop_sizes(256, size))
    seen_sizes, seen_offsets = Counter(), Counter()
    for _ in range(3000):
        top, left, h, w = multiscale_crop_box(H, W, size, rng)
        assert (h, w) in allowed
        offsets = fixed_crop_offsets(H, W, h, w)
        assert (top, left) in offsets and top + h <= H and left + w <= W
        seen_sizes[h, w] += 1
        seen_offsets[offsets.index((top, left))] += 1
    assert set(seen_sizes) == allowed and set(seen_offsets) == set(range(5))  # all reachable


def test_training_crop_geometry_on_position_coded_frames():
    size, H, W, T = 56, 64, 96, 3  # short side int(256 / 224 * 56) = 64: no first resize
    tf = TrainTransform(size)
    clip = position_clip(T, H, W)
    clip[:, 2] = 0  # every frame the same picture: one crop for all frames must give equal frames
    allowed = set(multiscale_crop_sizes(64, size))
    exact = 0
    for seed in range(60):
        aug = tf.draw(T, H, W, random.Random(seed))
        top, left, h, w = aug.box
        assert aug.resized == (H, W) and (h, w) in allowed
        assert (top, left) in fixed_crop_offsets(H, W, h, w)
        out = tf.geometric(clip, aug)
        assert out.shape == (T, 3, size, size) and out.dtype == torch.uint8
        assert all(torch.equal(out[0], out[t]) for t in range(T))
        xs, ys = out[0, 0].float(), out[0, 1].float()
        if aug.flip:
            xs = xs.flip(-1)
        # The picture is a linear ramp: whatever the resize, its mean is the box's centre and it
        # increases left to right (top to bottom) unless flipped.
        assert abs(xs.mean().item() - (left + (w - 1) / 2)) < 1.0
        assert abs(ys.mean().item() - (top + (h - 1) / 2)) < 1.0
        assert (xs[:, 1:] >= xs[:, :-1]).all() and (ys[1:] >= ys[:-1]).all()
        if (h, w) == (size, size):  # no resize at all: the exact pixels of the box
            exact += 1
            assert xs[0, 0] == left and ys[0, 0] == top and xs[-1, -1] == left + w - 1
    assert exact > 0


def test_training_clip_shape_resize_and_flip_rate():
    tf = train_transform(24)  # short side int(256 / 224 * 24) = 27
    clip = position_clip(4, 40, 50)
    out = tf(clip, random.Random(3))
    assert out.shape == (4, 3, 24, 24) and out.dtype == torch.float32
    torch.testing.assert_close(tf(clip, random.Random(3)), out)  # all randomness from rng
    aug = tf.draw(4, 40, 50, random.Random(0))
    assert aug.resized == (27, 34) and min(aug.box[2:]) >= 17  # 34 = round(50 * 27 / 40 = 33.75)
    flips = sum(tf.draw(4, 40, 50, random.Random(s)).flip for s in range(2000))
    assert 900 < flips < 1100


# -- 3. colour jitter -----------------------------------------------------------------------------
def test_jitter_parameters_are_drawn_per_frame_and_applied_per_clip_with_p():
    tf = TrainTransform(16)
    T, n = 5, 2000
    augs = [tf.draw(T, 32, 32, random.Random(s)) for s in range(n)]
    jittered = [a for a in augs if a.jitter is not None]
    assert 0.77 * n < len(jittered) < 0.83 * n  # p = 0.8, one decision per clip
    assert 0.17 * n < sum(a.gray for a in augs) < 0.23 * n  # p = 0.2, one decision per clip
    for a in jittered[:200]:
        assert len(a.jitter) == T and len(set(a.jitter)) == T  # new factors for every frame
        for p in a.jitter:
            assert sorted(p.order) == [0, 1, 2, 3]
            assert 0.6 <= p.brightness <= 1.4 and 0.6 <= p.contrast <= 1.4
            assert 0.8 <= p.saturation <= 1.2 and -0.1 <= p.hue <= 0.1  # official saturation 0.2
    # Identical frames come out different under per-frame jitter, equal under one shared draw.
    clip = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    clip = clip.expand(T, -1, -1, -1).contiguous()
    a = jittered[0]

    def photometric(aug):
        params = {k: v[None] for k, v in photometric_params(aug, T).items()}
        return apply_photometric(clip[None], params)[0]

    out = photometric(ClipAugmentation((16, 16), (0, 0, 16, 16), False, a.jitter, False))
    assert not torch.equal(out[0], out[1])
    shared = photometric(ClipAugmentation((16, 16), (0, 0, 16, 16), False, (a.jitter[0],) * T, False))
    assert all(torch.equal(shared[0], shared[t]) for t in range(T))
    gray = photometric(ClipAugmentation((16, 16), (0, 0, 16, 16), False, None, True))
    std = torch.tensor(NORMALIZATIONS["imagenet"][1]).view(3, 1, 1)
    mean = torch.tensor(NORMALIZATIONS["imagenet"][0]).view(3, 1, 1)
    raw = gray * std + mean  # back to 0..1: the three channels are equal
    torch.testing.assert_close(raw[:, 0], raw[:, 1]) and torch.testing.assert_close(raw[:, 1], raw[:, 2])


def test_one_jitter_draw_is_torchvisions_colorjitter(monkeypatch):
    """The official ColorJitter calls torchvision.transforms.ColorJitter(0.4, 0.4, 0.2, 0.1) on each
    frame: with the same parameters, ost.data.augment's batched adjustments give what torchvision
    gives on float frames (to float rounding), and on uint8 frames to a few grey levels
    (torchvision truncates to uint8 after each of the four adjustments; the batched ones stay in
    float, so up to one level a step)."""
    frames = torch.randint(0, 256, (4, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    rng = random.Random(5)
    draws = [draw_jitter(rng) for _ in range(4)]
    aug = ClipAugmentation((12, 12), (0, 0, 12, 12), False, tuple(draws), False)
    params = {k: v[None] for k, v in photometric_params(aug, 4).items()}
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in NORMALIZATIONS["imagenet"])
    ours = apply_photometric(frames[None], params)[0] * std + mean  # 0..1 again
    for frame, p, got in zip(frames, draws, ours):
        cj = torchvision.transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)
        monkeypatch.setattr(torchvision.transforms.ColorJitter, "get_params", staticmethod(
            lambda *a, p=p: (torch.tensor(p.order), p.brightness, p.contrast, p.saturation, p.hue)))
        torch.testing.assert_close(got, cj(frame.float() / 255), rtol=0, atol=2e-5)
        assert ((got * 255).round() - cj(frame).float()).abs().max() <= 4


# -- 4. normalization -----------------------------------------------------------------------------
def test_both_normalizations():
    assert set(NORMALIZATIONS) == {"imagenet", "clip"}
    mean, std = NORMALIZATIONS["imagenet"]  # the official img_norm_cfg, on 0..255 pixels
    assert mean == pytest.approx([123.675 / 255, 116.28 / 255, 103.53 / 255])
    assert std == pytest.approx([58.395 / 255, 57.12 / 255, 57.375 / 255])
    assert NORMALIZATIONS["clip"][0] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    px = torch.tensor([10, 128, 250], dtype=torch.uint8)[:, None, None].expand(3, 2, 2)
    for name, (m, s) in NORMALIZATIONS.items():
        want = (torch.tensor([10, 128, 250]) / 255 - torch.tensor(m)) / torch.tensor(s)
        torch.testing.assert_close(apply_photometric(px, None, name)[:, 0, 0], want)
    clip = position_clip(2, 32, 40)
    for train in (True, False):
        run = (lambda n: train_transform(16, n)(clip, random.Random(0))) if train else \
            (lambda n: eval_transform(16, n)(clip))
        a, b = run("imagenet"), run("clip")  # the same draws: only the normalization differs
        assert not torch.allclose(a, b)
        torch.testing.assert_close(unnormalize(a, "imagenet"), unnormalize(b, "clip"), atol=1e-3, rtol=0)
    for bad in ("ImageNet", "openai", None, ["clip"]):
        for make in (lambda: train_transform(16, bad), lambda: eval_transform(16, bad),
                     lambda: VideoDataset([], 4, 16, False, normalization=bad)):
            with pytest.raises(ValueError, match="normalization must be one of"):
                make()


# -- 5. evaluation resize -------------------------------------------------------------------------
def test_eval_resizes_the_short_side_to_256_224_then_centre_crops():
    size = 56  # short side 64
    clip = position_clip(2, 64, 96)  # already short side 64: no resize, exact pixels
    out = unnormalize(eval_transform(size)(clip)).round()
    assert out.shape == (2, 3, size, size)
    top, left = (64 - 56) // 2, (96 - 56) // 2
    assert out[0, 0, 0, 0] == left and out[0, 1, 0, 0] == top and out[1, 2, 0, 0] == 10
    assert out[0, 0, 0, -1] == left + size - 1 and out[0, 1, -1, 0] == top + size - 1
    # A smaller input is resized first (short side 32 -> 64), then cropped: not crop-then-resize.
    small = position_clip(1, 32, 48)
    want = F.resize(small, [64, 96], antialias=True)[..., top:top + size, left:left + size]
    torch.testing.assert_close(eval_transform(size)(small), apply_photometric(want, None))
    assert short_side_shape(100, 178, 256) == (256, 456)  # rounded like mmcv (455.68 -> 456)
    assert EvalTransform(224).boxes(240, 320) == [((256 - 224) // 2, (341 - 224) // 2, 224, 224)]


def test_three_crops_along_the_long_side():
    assert three_crop_boxes(32, 53, 32) == [(0, 0, 32, 32), (0, 20, 32, 32), (0, 10, 32, 32)]
    assert three_crop_boxes(53, 32, 32) == [(0, 0, 32, 32), (20, 0, 32, 32), (10, 0, 32, 32)]
    tf = eval_transform(16, crops=3)  # short side resized to 16, not 18
    clip = position_clip(2, 16, 40)
    out = unnormalize(tf(clip)).round()
    assert out.shape == (3, 2, 3, 16, 16)
    assert [out[c, 0, 0, 0, 0].item() for c in range(3)] == [0, 24, 12]  # left, right, centre
    assert (out[:, :, 1, :, 0] == torch.arange(16)).all()  # the whole short side
