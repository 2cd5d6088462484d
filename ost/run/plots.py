"""Pictures: transport plans of a video against its top classes (the paper's Fig. 6 / 7).

One block per class, stacked: a row of the sampled frames' thumbnails (labelled with their
frame numbers in the source video), under it the plan as a heatmap (descriptors down, frames
across, so every thumbnail sits above its column), and beside it the mass each descriptor
receives against the 1/N a balanced plan gives it (with relaxed descriptor marginals,
od.reg_m, a step the video lacks shows as a short bar). All blocks share one colour scale,
labelled: by default P_ij - 1/(T N), the difference from the uniform plan (a diverging scale
centred on 0), which shows where the solver moved mass; or (deviation=False) the transport mass
P_ij itself, on which near-uniform plans show as one flat colour. With one descriptor per
class (the class-name prompts) a plan is one row, 1/T on every frame: nothing_to_plot says so. Each block's title gives the class and its score: the logit, the logit scale included,
as the classifier ranks them.
"""
from __future__ import annotations

import logging
import random
import textwrap
from pathlib import Path

import torch

from ost_kernels import od_plan

from ..data.annotations import VideoRecord
from ..data.augment import check_normalization
from ..data.data import VideoDataset
from ..files import atomic_write


def _thumbnails(frames: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) uint8 or float in [0, 1] -> (T, H, W, 3) float in [0, 1]."""
    x = frames.detach().cpu()
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return x.clamp(0, 1).permute(0, 2, 3, 1)


def plot_plans(plans: torch.Tensor, class_names: list[str], descriptors: list[list[str]], scores: list[float],
               out_path, title: str = "", *, frames: torch.Tensor | None = None,
               frame_numbers: list[int] | None = None, deviation: bool = True,
               score_label: str = "logit") -> Path:
    """A figure of plans (k, T, N) (padding descriptors beyond each class's own count are
    dropped): per class a thumbnail row (frames (T, 3, H, W), uint8 or float in [0, 1], if
    given), the heatmap with the descriptor texts wrapped beside it, and the received-mass
    bars. frame_numbers: the frames' numbers in the source video (default 0..T-1, "sample").
    deviation: colour P_ij - 1/(T N) (the default: plans are near-uniform, so P_ij itself on
    0..max shows one flat colour), or False for P_ij. score_label: what `scores` are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    k, T, _ = plans.shape
    if frames is not None and frames.shape[0] != T:
        raise ValueError(f"frames: expected {T} frames (the plans' T), got {frames.shape[0]}")
    blocks = [plans[i, :, :len(descriptors[i])].detach().cpu().double() for i in range(k)]
    values = [b - 1.0 / b.numel() if deviation else b for b in blocks]
    hi = max(float(v.abs().max()) if deviation else float(v.max()) for v in values) or 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-hi, vmax=hi) if deviation else matplotlib.colors.Normalize(0.0, hi)
    cmap = "RdBu_r" if deviation else "viridis"
    numbers = frame_numbers if frame_numbers is not None else list(range(T))
    thumbs = _thumbnails(frames) if frames is not None else None

    width = max(7.0, 0.55 * T + 5.5)
    thumb_h = width * 0.62 / T if thumbs is not None else 0.0
    heat_h = [max(0.9, 0.42 * b.shape[1]) for b in blocks]
    fig = plt.figure(figsize=(width, sum(heat_h) + k * (thumb_h + 0.75) + 1.0))
    outer = fig.add_gridspec(k, 1, height_ratios=[thumb_h + h for h in heat_h], hspace=0.5 if thumbs is None else 0.3,
                             left=0.24, right=0.86, top=1 - 0.55 / fig.get_figheight(),
                             bottom=0.55 / fig.get_figheight() + 0.02)
    im = None
    for i, (v, name, descs, score) in enumerate(zip(values, class_names, descriptors, scores)):
        n = v.shape[1]
        inner = outer[i].subgridspec(2 if thumbs is not None else 1, 2, wspace=0.04, hspace=0.04,
                                     height_ratios=[thumb_h, heat_h[i]] if thumbs is not None else None,
                                     width_ratios=[T, 2.2])
        heading = f"{name}  (score {score:.2f}: {score_label})"
        if thumbs is not None:
            strip = fig.add_subplot(inner[0, 0])
            for t in range(T):
                strip.imshow(thumbs[t].numpy(), extent=(t - 0.48, t + 0.48, 0, 1), aspect="auto")
            strip.set_xlim(-0.5, T - 0.5)
            strip.set_ylim(0, 1)
            strip.axis("off")
            strip.set_title(heading, fontsize=9, loc="left")
        ax = fig.add_subplot(inner[-1, 0])
        im = ax.imshow(v.T.numpy(), aspect="auto", cmap=cmap, norm=norm)
        if thumbs is None:
            ax.set_title(heading, fontsize=9, loc="left")
        ax.set_yticks(range(n), ["\n".join(textwrap.wrap(d, 38)[:3]) for d in descs], fontsize=6.5)
        ax.set_ylabel("descriptor", fontsize=8)
        # The frames are the same in every block: their numbers under the last one only.
        last = i == k - 1
        ax.set_xticks(range(T), [str(x) for x in numbers] if last else [], fontsize=6.5,
                      rotation=90 if T > 16 else 0)
        if last:
            ax.set_xlabel("frame (number in the source video)" if frame_numbers is not None else "frame (sample)",
                          fontsize=8)
        bars = fig.add_subplot(inner[-1, 1], sharey=ax)
        received = blocks[i].sum(0).numpy()
        bars.barh(range(n), received, color="tab:blue", height=0.6)
        bars.axvline(1.0 / n, color="tab:red", linestyle="--", linewidth=1)
        bars.set_xlim(0, max(float(received.max()), 1.0 / n) * 1.2)
        bars.tick_params(axis="y", left=False, labelleft=False)
        bars.tick_params(axis="x", labelsize=6)
        bars.set_title("received (red: 1/N)", fontsize=7)
        if last:
            bars.set_xlabel("mass", fontsize=8)
    label = (r"transport mass $P_{ij} - 1/(TN)$ (vs the uniform plan)" if deviation
             else r"transport mass $P_{ij}$")
    cax = fig.add_axes((0.9, 0.12, 0.018, 0.7))
    fig.colorbar(im, cax=cax).set_label(label, fontsize=8)
    cax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    out_path = Path(out_path)
    try:
        # A temporary name beside it, then a rename: an interrupted or failed run leaves the
        # old file or none, never part of a PNG.
        fmt = out_path.suffix.lstrip(".").lower() or "png"
        atomic_write(out_path, lambda fh: fig.savefig(fh, format=fmt, dpi=130), binary=True)
    finally:
        plt.close(fig)
    return out_path


def sampled_clip(video_path, frames: int, size: int, normalization: str = "imagenet"):
    """One video as `ost eval` samples and transforms it: the clip (T, 3, S, S) float,
    normalized, and the numbers of its frames in the source video."""
    dataset = VideoDataset([VideoRecord(Path(video_path), 0)], frames, size, train=False,
                           normalization=normalization)
    chosen: list[int] = []
    sample = dataset._indices

    def recording(n: int, rng: random.Random) -> list[int]:  # the eval sampler, its choice kept
        chosen[:] = sample(n, rng)
        return chosen

    dataset._indices = recording
    reasons = _DecodeFailure()
    logging.getLogger("ost.data").addFilter(reasons)  # the reason goes into the error, not a log line
    try:
        clip, _, _ = dataset[0]
    finally:
        logging.getLogger("ost.data").removeFilter(reasons)
    if clip is None:
        raise ValueError(f"{video_path}: cannot decode this video" + (f" ({reasons.last})" if reasons.last else ""))
    return clip, list(chosen)


class _DecodeFailure(logging.Filter):
    """Keeps the dataset's "skipping unreadable video" warning's reason instead of logging it."""

    last = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and "unreadable" in record.msg:
            self.last = str(record.args[-1])
            return False
        return True


def nothing_to_plot(descriptors, kind: str, source: str | None = None) -> str | None:
    """Why these classes' plans are not worth a figure, or None: with one `kind` text per class
    (the class-name prompts, or one descriptor each) a plan is one row, 1/T on every frame
    whatever the video. source: where the one text comes from, for the message."""
    if max(len(texts) for texts in getattr(descriptors, kind)) > 1:
        return None
    return (f"every class has one {kind} prompt{f' ({source})' if source else ''}, so each plan is one row, "
            "1/T on every frame whatever the video: nothing to draw")


@torch.no_grad()
def plot_video_plans(model, video_path, out_path, frames: int, size: int, top: int = 3, kind: str = "temporal",
                     normalization: str = "imagenet", deviation: bool = True, clip=None):
    """Plans of one video against its `top` classes, for `kind` descriptors; returns the PNG path.
    `normalization`: the pixel mean / std the model was trained with (as `ost eval`). clip:
    sampled_clip's result for this video, if it was decoded already."""
    model.eval()
    clip, numbers = clip or sampled_clip(video_path, frames, size, normalization)
    device = next(model.parameters()).device
    emb = model.encode_video(clip[None].to(device))
    desc = model.descriptor_embeddings()
    logits = model.logits(emb, desc)[0]
    best = logits.topk(min(top, logits.numel())).indices
    chosen = desc.select(best)
    plans = od_plan(emb, getattr(chosen, kind), desc_mask=getattr(chosen, f"{kind}_mask"),
                    **model.config.solve_kwargs())[0]
    names = [model.descriptors.class_names[a] for a in best.tolist()]
    texts = [getattr(model.descriptors, kind)[a] for a in best.tolist()]
    mean, std = check_normalization(normalization)
    pixels = clip * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    scale = float(model.clip.logit_scale.exp())
    return plot_plans(plans, names, texts, logits[best].tolist(), out_path,
                      title=f"{Path(video_path).name}: {kind} descriptors", frames=pixels, frame_numbers=numbers,
                      deviation=deviation, score_label=f"logit, logit scale {scale:.1f} included")
