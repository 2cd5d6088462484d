"""The photometric half of the training augmentation, on whole batches, on the training device.

The loader does the geometric half per clip (crop, resize, flip: ost.data.transforms) and returns
uint8 clips with the random parameters of the rest; `finish_batch` then applies colour jitter
(per frame: factors and order, as the official code draws them), grayscale and the pixel
normalization to the batch (B, T, 3, S, S) as float tensor operations wherever the batch is
(the GPU in training). That takes the most expensive per-frame work off the loader's cores and
sends uint8 instead of float32 to the device (4x less host-to-device traffic).

The operations are torchvision's ColorJitter / Grayscale formulas (ITU-R 601 luma, blend and
clamp to [0, 1] after each adjustment, hue through HSV), computed in float32 for the whole
adjustment chain instead of rounding to uint8 between adjustments.
"""
from __future__ import annotations

import torch

# CLIP's normalization (open_clip.constants.OPENAI_DATASET_MEAN / STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# ImageNet's: the official OST pipeline's img_norm_cfg (mean 123.675, 116.28, 103.53 and std
# 58.395, 57.12, 57.375 on 0..255 pixels, RGB order).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The `normalization=` choices: name -> (mean, std) per RGB channel, for pixels in 0..1.
NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}
LUMA = (0.2989, 0.587, 0.114)
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3  # positions in JitterParams.order


def check_normalization(normalization) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a `normalization=` choice; ValueError naming the choices otherwise."""
    if not isinstance(normalization, str) or normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {sorted(NORMALIZATIONS)}, got {normalization!r}")
    return NORMALIZATIONS[normalization]


def photometric_params(aug, num_frames: int) -> dict[str, torch.Tensor]:
    """One clip's photometric draw (an ost.data.transforms.ClipAugmentation) as tensors (collate
    stacks them): jitter () bool, order (T, 4) int64, factors (T, 4) float32 (brightness,
    contrast, saturation, hue), gray () bool."""
    if aug.jitter is None:
        order = torch.zeros(num_frames, 4, dtype=torch.int64)
        factors = torch.zeros(num_frames, 4)
    else:
        order = torch.tensor([p.order for p in aug.jitter], dtype=torch.int64)
        factors = torch.tensor([(p.brightness, p.contrast, p.saturation, p.hue) for p in aug.jitter],
                               dtype=torch.float32)
    return {"jitter": torch.tensor(aug.jitter is not None), "order": order, "factors": factors,
            "gray": torch.tensor(aug.gray)}


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) -> (..., 1, H, W)."""
    r, g, b = x.unbind(-3)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(-3)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    return (ratio * x + (1.0 - ratio) * other).clamp_(0.0, 1.0)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(-3)
    maxc, _ = x.max(dim=-3)
    minc, _ = x.min(dim=-3)
    same = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(same, ones, maxc)
    div = torch.where(same, ones, cr)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(-3)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp_(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp_(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp_(0.0, 1.0)
    sector = i.unsqueeze(-3) == torch.arange(6, device=x.device).view(-1, 1, 1)  # (..., 6, H, W)
    table = torch.stack([torch.stack(c, dim=-3) for c in
                         ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))], dim=-4)  # (..., 3, 6, H, W)
    return (table * sector.unsqueeze(-4)).sum(dim=-3)


def _adjust(x: torch.Tensor, op: int, factor: torch.Tensor) -> torch.Tensor:
    """One ColorJitter adjustment of frames x (n, 3, H, W) float with factors (n,)."""
    f = factor.view(-1, 1, 1, 1)
    if op == BRIGHTNESS:
        return (x * f).clamp_(0.0, 1.0)
    if op == CONTRAST:
        return _blend(x, _luma(x).mean(dim=(-3, -2, -1), keepdim=True), f)
    if op == SATURATION:
        return _blend(x, _luma(x), f)
    hsv = _rgb_to_hsv(x)
    h, s, v = hsv.unbind(-3)
    return _hsv_to_rgb(torch.stack((torch.remainder(h + f[:, 0], 1.0), s, v), dim=-3))


def apply_photometric(frames: torch.Tensor, params: dict[str, torch.Tensor] | None,
                      normalization: str = "imagenet") -> torch.Tensor:
    """uint8 frames (B, T, 3, H, W) (any leading dimensions without params, e.g. evaluation's
    (B, V, T, 3, H, W)) -> float32, with the colour jitter and grayscale of `params` (training)
    and normalized."""
    mean, std = check_normalization(normalization)
    x = frames.to(torch.float32).div_(255.0)
    if params is not None:
        B, T = x.shape[:2]
        flat = x.reshape(B * T, *x.shape[2:])
        jitter = params["jitter"].to(x.device).repeat_interleave(T)
        order = params["order"].to(x.device).reshape(B * T, 4)
        factors = params["factors"].to(x.device).reshape(B * T, 4)
        for position in range(4):  # each frame runs its 4 adjustments in its own order
            for op in range(4):
                rows = torch.nonzero(jitter & (order[:, position] == op)).flatten()
                if rows.numel():
                    flat[rows] = _adjust(flat[rows], op, factors[rows, op])
        gray = params["gray"].to(x.device).repeat_interleave(T)
        rows = torch.nonzero(gray).flatten()
        if rows.numel():
            flat[rows] = _luma(flat[rows]).expand(-1, 3, -1, -1)
        x = flat.view_as(x)
    shape = (3, 1, 1)
    return (x - torch.tensor(mean, device=x.device).view(shape)) / torch.tensor(std, device=x.device).view(shape)


def finish_batch(batch: dict, device: torch.device, normalization: str = "imagenet") -> torch.Tensor:
    """A collated batch of uint8 clips (VideoDataset(..., deferred=True)) on `device`, with its
    photometric augmentation applied and normalized: float32 (B, T, 3, S, S)."""
    frames = batch["frames"].to(device, non_blocking=True)
    return apply_photometric(frames, batch.get("photometric"), normalization)
