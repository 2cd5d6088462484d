"""Pictures: transport plans of a video against its top classes (like the paper's Fig. 6 / 7)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import torch

from ost_kernels import od_plan

from .annotations import VideoRecord
from .data import VideoDataset


def plot_plans(plans: torch.Tensor, class_names: list[str], descriptors: list[list[str]], scores: list[float],
               out_path, title: str = "") -> Path:
    """Heatmaps of plans (k, T, N): frames down, descriptors across, one panel per class, and
    under each the mass every descriptor receives against the uniform 1/N a balanced plan
    gives it (with relaxed descriptor marginals, od.reg_m, a step the video lacks shows as a
    short bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, T, _ = plans.shape
    fig, axes = plt.subplots(2, k, figsize=(3.2 * k + 1, 0.35 * T + 4.2), squeeze=False,
                             gridspec_kw=dict(height_ratios=[max(T, 4), 3]))
    for col, (plan, name, descs, score) in enumerate(zip(plans, class_names, descriptors, scores)):
        ax, bars = axes[0, col], axes[1, col]
        n = len(descs)
        block = plan[:, :n].cpu()
        im = ax.imshow(block.numpy(), aspect="auto", cmap="viridis")
        ax.set_title(f"{name}\nscore {score:.2f}", fontsize=9)
        ax.set_yticks(range(T), [f"frame {t}" for t in range(T)], fontsize=7)
        ax.set_xticks(range(n), [])
        fig.colorbar(im, ax=ax, fraction=0.046)
        received = block.sum(0).numpy()
        bars.bar(range(n), received, color="tab:blue")
        bars.axhline(1.0 / n, color="tab:red", linestyle="--", linewidth=1, label="uniform 1/N")
        bars.set_xlim(-0.5, n - 0.5)
        bars.set_ylim(0, max(float(received.max()), 1.0 / n) * 1.15)
        bars.set_ylabel("mass received", fontsize=7)
        bars.tick_params(axis="y", labelsize=6)
        bars.set_xticks(range(n), ["\n".join(textwrap.wrap(d, 14)[:4]) for d in descs], fontsize=6)
        if col == 0:
            bars.legend(fontsize=6, loc="lower left", framealpha=0.9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


@torch.no_grad()
def plot_video_plans(model, video_path, out_path, frames: int, size: int, top: int = 3, kind: str = "temporal",
                     normalization: str = "imagenet"):
    """Plans of one video against its `top` classes, for `kind` descriptors; returns the PNG path.
    `normalization`: the pixel mean / std the model was trained with (as `ost eval`)."""
    model.eval()
    clip, _, _ = VideoDataset([VideoRecord(Path(video_path), 0)], frames, size, train=False,
                              normalization=normalization)[0]
    if clip is None:
        raise ValueError(f"{video_path}: cannot decode this video")
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
    return plot_plans(plans, names, texts, logits[best].tolist(), out_path,
                      title=f"{Path(video_path).name}: {kind} descriptors")
