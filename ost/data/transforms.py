"""The pixel pipeline of the official OST code (tomchen-ctj/OST, datasets/build.py and
datasets/pipeline.py), re-implemented on torchvision v2, on (T, 3, H, W) uint8 clips:

* training (Table 7's recipe): short side to int(256 / 224 * size), MultiScaleCrop (scales
  1 / .875 / .75 / .66 of the short side for width and height, at most one scale step apart,
  at one of 5 fixed offsets), resize to size x size, flip 0.5, colour jitter (0.4, 0.4, 0.2,
  0.1) with p 0.8, its parameters drawn per frame, grayscale p 0.2, normalization (the
  photometric half is ost.data.augment: batched, on the training device when the loader defers it);
* evaluation: short side to int(256 / 224 * size), centre crop; or, with 3 crops, short side
  to size and the three crops along the long side.

Randomness comes from a `random.Random` the caller passes (one per (seed, epoch, video) in
VideoDataset), never from the global torch RNG.
"""
from __future__ import annotations

import operator
import random
from dataclasses import dataclass

import torch

from .augment import apply_photometric, check_normalization, photometric_params

# The official recipe's constants (datasets/build.py build_dataloader, pipeline.py defaults).
RESIZE_RATIO = 256 / 224          # short side before cropping: int(256 / 224 * size)
CROP_SCALES = (1, 0.875, 0.75, 0.66)
MAX_SCALE_GAP = 1                 # width and height scale indices at most this far apart
FLIP_P = 0.5
JITTER_P = 0.8                    # AUG.COLOR_JITTER
GRAY_P = 0.2                      # AUG.GRAY_SCALE
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.4, 0.4, 0.2, 0.1

def _tv():
    """torchvision's v2 functional ops, imported on first use: importing torchvision takes a
    second (it loads torch._dynamo), which every `ost` command would otherwise pay before its
    first check (ost.run.config imports this module for check_views)."""
    from torchvision.transforms.v2 import functional

    return functional


def check_views(views) -> tuple[int, int]:
    """`views=(clips, crops)` as a pair of ints: clips >= 1, crops 1 (centre) or 3 (three-crop),
    the two the official code has; ValueError naming `views` otherwise."""
    try:
        clips, crops = (operator.index(v) for v in views)
    except (TypeError, ValueError):
        raise ValueError(f"views must be a pair of ints (clips, crops), got {views!r}") from None
    if clips < 1 or crops < 1:
        raise ValueError(f"views must be (clips >= 1, crops >= 1), got {views!r}")
    if crops not in (1, 3):
        raise ValueError(f"views: crops must be 1 (centre crop) or 3 (three crops along the long side), "
                         f"got {crops}")
    return clips, crops


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    return size


# -- geometry ----------------------------------------------------------------------------------
def short_side_shape(height: int, width: int, short: int) -> tuple[int, int]:
    """(new H, new W) with the short side `short`, aspect kept, each side rounded to nearest (as
    the official Resize(scale=(-1, short)) does through mmcv.rescale_size)."""
    f = short / min(height, width)
    return int(height * f + 0.5), int(width * f + 0.5)


def resize_short_side(clip: torch.Tensor, short: int) -> torch.Tensor:
    """Frames (..., 3, H, W) with the short side resized to `short`."""
    new_h, new_w = short_side_shape(clip.shape[-2], clip.shape[-1], short)
    # Antialiased bilinear (the official mmcv/cv2 resize is plain bilinear); a no-op at equal size.
    return _tv().resize(clip, [new_h, new_w], antialias=True)


def multiscale_crop_sizes(base: int, size: int, scales=CROP_SCALES,
                          max_gap: int = MAX_SCALE_GAP) -> list[tuple[int, int]]:
    """The candidate (crop H, crop W) of MultiScaleCrop for a short side `base`: each side
    int(base * scale), the two scale indices at most `max_gap` apart; a side within 2 pixels of
    `size` is snapped to `size` (the official rule, so e.g. int(256 * .875) = 224 stays exact)."""
    sides = [int(base * s) for s in scales]
    sides = [size if abs(s - size) < 3 else s for s in sides]
    return [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= max_gap]


def fixed_crop_offsets(height: int, width: int, crop_h: int, crop_w: int) -> list[tuple[int, int]]:
    """The 5 fixed (top, left) offsets of MultiScaleCrop (num_fixed_crops=5, random_crop=False):
    upper left, upper right, lower left, lower right, centre, on a grid of quarter steps
    ((W - crop W) // 4 and (H - crop H) // 4), so "right" may stop up to 3 pixels short."""
    ws, hs = (width - crop_w) // 4, (height - crop_h) // 4
    return [(0, 0), (0, 4 * ws), (4 * hs, 0), (4 * hs, 4 * ws), (2 * hs, 2 * ws)]


def multiscale_crop_box(height: int, width: int, size: int, rng: random.Random) -> tuple[int, int, int, int]:
    """(top, left, crop H, crop W) of one MultiScaleCrop draw in a (height, width) frame (after the
    short-side resize): a size pair uniformly among multiscale_crop_sizes, then one of the 5
    fixed offsets uniformly."""
    crop_h, crop_w = rng.choice(multiscale_crop_sizes(min(height, width), size))
    top, left = rng.choice(fixed_crop_offsets(height, width, crop_h, crop_w))
    return top, left, crop_h, crop_w


def centre_crop_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """(top, left, size, size): the official CenterCrop, offsets rounded down."""
    return (height - size) // 2, (width - size) // 2, size, size


def three_crop_boxes(height: int, width: int, size: int) -> list[tuple[int, int, int, int]]:
    """The official ThreeCrop of a frame whose short side is `size`: along the long side, in the
    official order first / last / middle (left, right, centre or top, bottom, centre), with a
    step of (long - size) // 2."""
    if min(height, width) != size:
        raise ValueError(f"three crops need the short side resized to size={size}, got {height}x{width}")
    if height == size:
        step = (width - size) // 2
        return [(0, 0, size, size), (0, 2 * step, size, size), (0, step, size, size)]
    step = (height - size) // 2
    return [(0, 0, size, size), (2 * step, 0, size, size), (step, 0, size, size)]


def _crop(clip: torch.Tensor, box) -> torch.Tensor:
    top, left, h, w = box
    return clip[..., top:top + h, left:left + w]


# -- training ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class JitterParams:
    """One torchvision ColorJitter draw: the order of the 4 adjustments (0 brightness, 1 contrast,
    2 saturation, 3 hue) and their factors."""
    order: tuple[int, ...]
    brightness: float
    contrast: float
    saturation: float
    hue: float


@dataclass(frozen=True)
class ClipAugmentation:
    """Everything random about one training clip: box (top, left, H, W) in the resized frame,
    flip, jitter (one JitterParams per frame, or None when the p=0.8 draw said no) and gray."""
    resized: tuple[int, int]
    box: tuple[int, int, int, int]
    flip: bool
    jitter: tuple[JitterParams, ...] | None
    gray: bool


def draw_jitter(rng: random.Random) -> JitterParams:
    """torchvision's ColorJitter(0.4, 0.4, 0.2, 0.1) draw, from `rng` instead of torch's RNG."""
    order = tuple(rng.sample(range(4), 4))
    return JitterParams(order, rng.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS), rng.uniform(1 - CONTRAST, 1 + CONTRAST),
                        rng.uniform(1 - SATURATION, 1 + SATURATION), rng.uniform(-HUE, HUE))


class TrainTransform:
    """The official training pipeline on a clip (T, 3, H, W) uint8 -> (T, 3, size, size) float32.

    Per clip (one draw, applied to every frame, as the official group transforms do): the
    MultiScaleCrop box, the flip, whether to jitter (p 0.8) and whether to gray (p 0.2).
    Per frame: the colour jitter parameters (factors and order), because the official
    ColorJitter (datasets/pipeline.py) calls torchvision's ColorJitter once per frame, and each
    call draws new parameters."""

    def __init__(self, size: int, normalization: str = "imagenet"):
        self.size = _check_size(size)
        check_normalization(normalization)
        self.normalization = normalization
        self.short = int(RESIZE_RATIO * size)

    def draw(self, num_frames: int, height: int, width: int, rng: random.Random) -> ClipAugmentation:
        """The random choices for a clip of num_frames frames of height x width (before resizing)."""
        resized = short_side_shape(height, width, self.short)
        box = multiscale_crop_box(*resized, self.size, rng)
        flip = rng.random() < FLIP_P
        jitter = tuple(draw_jitter(rng) for _ in range(num_frames)) if rng.random() < JITTER_P else None
        gray = rng.random() < GRAY_P
        return ClipAugmentation(resized, box, flip, jitter, gray)

    def geometric(self, clip: torch.Tensor, aug: ClipAugmentation) -> torch.Tensor:
        """uint8 (T, 3, H, W) -> uint8 (T, 3, size, size): short-side resize, the box, resize to
        size, flip. What the loader does; the photometric rest runs batched (ost.data.augment)."""
        tv = _tv()
        clip = tv.resize(clip, list(aug.resized), antialias=True)
        clip = tv.resize(_crop(clip, aug.box), [self.size, self.size], antialias=True)
        return tv.horizontal_flip(clip) if aug.flip else clip

    def __call__(self, clip: torch.Tensor, rng: random.Random | None = None) -> torch.Tensor:
        """uint8 (T, 3, H, W) -> float32 (T, 3, size, size), the whole pipeline on one clip."""
        rng = rng if rng is not None else random.Random()
        aug = self.draw(clip.shape[0], clip.shape[-2], clip.shape[-1], rng)
        params = {k: v[None] for k, v in photometric_params(aug, clip.shape[0]).items()}
        return apply_photometric(self.geometric(clip, aug)[None], params, self.normalization)[0]


# -- evaluation --------------------------------------------------------------------------------
class EvalTransform:
    """The official test pipeline on frames (N, 3, H, W) uint8 -> (N, 3, size, size) float32
    with crops=1 (short side to int(256 / 224 * size), centre crop), or (3, N, 3, size, size)
    with crops=3 (short side to size, three crops along the long side, datasets/build.py)."""

    def __init__(self, size: int, normalization: str = "imagenet", crops: int = 1):
        self.size = _check_size(size)
        check_normalization(normalization)
        self.normalization = normalization
        _, self.crops = check_views((1, crops))
        # The official 3-crop replaces the 256/224 resize by the crop size: the crops then span
        # the whole short side and together cover the long one.
        self.short = int(RESIZE_RATIO * size) if self.crops == 1 else size

    def boxes(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """The crop boxes (top, left, H, W) in the resized frame of a height x width input."""
        h, w = short_side_shape(height, width, self.short)
        return [centre_crop_box(h, w, self.size)] if self.crops == 1 else three_crop_boxes(h, w, self.size)

    def geometric(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> uint8 (N, 3, size, size), or (3, N, 3, size, size) with 3 crops."""
        boxes = self.boxes(clip.shape[-2], clip.shape[-1])
        clip = resize_short_side(clip, self.short)
        out = [_crop(clip, b) for b in boxes]
        return out[0].contiguous() if self.crops == 1 else torch.stack(out)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> float32, normalized, shaped as geometric()."""
        return apply_photometric(self.geometric(clip), None, self.normalization)


def train_transform(size: int, normalization: str = "imagenet") -> TrainTransform:
    """The paper's recipe (Table 7), as the official code runs it: see TrainTransform."""
    return TrainTransform(size, normalization)


def eval_transform(size: int, normalization: str = "imagenet", crops: int = 1) -> EvalTransform:
    return EvalTransform(size, normalization, crops)
