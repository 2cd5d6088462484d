"""`ost make-synthetic`: a small data set of short videos whose classes differ visibly
(background colour, shape, direction of motion), with the label CSV, annotation lists and
descriptor JSON files OST needs: for the demo and the end-to-end tests.
"""
from __future__ import annotations

import random
from pathlib import Path

import av
import numpy as np

from ..descriptors.descriptors import save_descriptors

COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (50, 70, 210), "yellow": (220, 200, 40),
           "magenta": (190, 50, 190), "cyan": (40, 190, 200), "orange": (230, 130, 30), "grey": (120, 120, 120)}
SHAPES = ("square", "circle")
MOTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}


def class_spec(c: int):
    colour = list(COLOURS)[c % len(COLOURS)]
    shape = SHAPES[(c // len(COLOURS) + c) % len(SHAPES)]
    motion = list(MOTIONS)[(c + c // 4) % len(MOTIONS)]
    return colour, shape, motion


def render(c: int, frames: int, size: int, rng: random.Random) -> np.ndarray:
    """(frames, size, size, 3) uint8: a class-coloured background and a white shape moving."""
    colour, shape, motion = class_spec(c)
    bg = np.array(COLOURS[colour], dtype=np.float32)
    dx, dy = MOTIONS[motion]
    r = size // 6
    x0, y0 = rng.uniform(r, size - r), rng.uniform(r, size - r)
    speed = (size - 2 * r) / frames
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        cx = r + (x0 - r + dx * speed * t) % (size - 2 * r)
        cy = r + (y0 - r + dy * speed * t) % (size - 2 * r)
        if shape == "square":
            inside = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
        else:
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        img = bg * rng.uniform(0.85, 1.15) + rng.gauss(0, 6)
        img = np.broadcast_to(img, (size, size, 3)).copy()
        img[inside] = 245
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _encoder(container, fps: int, width: int, height: int, options: dict | None = None):
    """An H.264 stream that writes the same bytes every run, even under CPU load: one encoder
    thread (libx264's frame threads made the bytes depend on the load), and no macroblock-tree
    rate control (with it, 1 to 3 in 40 concurrent runs of make_synthetic wrote other bytes,
    which decoded to identical frames; without it all 136 runs, 40 to 48 at a time, were)."""
    stream = container.add_stream("libx264", rate=fps,
                                  options={"threads": "1", "x264-params": "mbtree=0", **(options or {})})
    stream.codec_context.thread_count = 1
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    return stream


def write_video(path, frames: np.ndarray, fps: int = 8) -> None:
    """frames (T, H, W, 3) uint8 RGB as an H.264 mp4, the same bytes every run."""
    with av.open(str(path), "w") as container:
        stream = _encoder(container, fps, frames.shape[2], frames.shape[1])
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# The smallest frame side whose moving shape (radius size // 6) is a pixel or more.
MIN_SIZE = 6


def check_arguments(num_classes: int, videos_per_class: int, frames: int, size: int, *,
                    names: dict | None = None) -> None:
    """Refuse what cannot make a data set, before anything is written, naming the argument
    (`names` maps an argument to what the user typed, e.g. num_classes -> --classes)."""
    names = names or {}

    def need(arg: str, value, ok: bool, what: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not ok:
            raise ValueError(f"{names.get(arg, arg)} must be {what}, got {value!r}")

    need("num_classes", num_classes, 1 <= num_classes <= 32, "a whole number from 1 to 32")
    need("videos_per_class", videos_per_class, videos_per_class >= 1, "a whole number >= 1")
    need("frames", frames, frames >= 1, "a whole number >= 1")
    # libx264 writes yuv420p, whose chroma planes halve each side: odd sides are refused by it.
    need("size", size, size >= MIN_SIZE and size % 2 == 0, f"an even number >= {MIN_SIZE} (H.264 needs even "
         "sides; the moving shape needs the pixels)")


def make_synthetic(out_dir, num_classes: int = 4, videos_per_class: int = 8, frames: int = 16, size: int = 64,
                   val_fraction: float = 0.25, seed: int = 0) -> dict:
    """Writes videos/, labels.csv, train.txt, val.txt, spatio.json, temporal.json under out_dir."""
    check_arguments(num_classes, videos_per_class, frames, size)
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names, spatio, temporal, train, val = [], [], [], [], []
    n_val = max(1, round(videos_per_class * val_fraction))
    for c in range(num_classes):
        colour, shape, motion = class_spec(c)
        suffix = f" {c // 16}" if num_classes > 16 else ""
        names.append(f"{colour} {shape} moving {motion}{suffix}")
        spatio.append([f"a {colour} background", f"a white {shape}"])
        temporal.append([f"the {shape} starts on one side", f"the {shape} moves {motion}",
                         f"the {shape} keeps moving {motion}"][: 2 + c % 2])  # 2 or 3: counts differ
        for v in range(videos_per_class):
            rel = f"videos/class{c:02d}_{v:02d}.mp4"
            write_video(out / rel, render(c, frames, size, rng))
            (val if v < n_val else train).append(f"{rel} {c}")
    (out / "labels.csv").write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names)))
    (out / "train.txt").write_text("\n".join(train) + "\n")
    (out / "val.txt").write_text("\n".join(val) + "\n")
    save_descriptors(out / "spatio.json", spatio)
    save_descriptors(out / "temporal.json", temporal)
    return {"labels": out / "labels.csv", "train": out / "train.txt", "val": out / "val.txt",
            "spatio": out / "spatio.json", "temporal": out / "temporal.json"}


def write_kinetics_like_clip(path, seconds: float = 10.0, fps: int = 30, width: int = 340, height: int = 256,
                             gop: int | None = None, seed: int = 0) -> Path:
    """A clip shaped like the Kinetics norm (340 x 256, 30 fps, H.264 with B-frames) whose
    content costs the decoder roughly what real footage does: a textured background panning,
    an object moving across it, sensor-like noise. gop: keyframe interval (None: the encoder's
    default, about one keyframe every 8 s; short ones, e.g. 12, are what some datasets use)."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * fps)
    coarse = rng.integers(0, 255, (height // 8 + 8, (width + frames * 2) // 8 + 8, 3)).astype(np.float32)
    texture = np.kron(coarse, np.ones((8, 8, 1), dtype=np.float32))  # blocky texture ...
    texture = (texture + np.roll(texture, 4, 0) + np.roll(texture, 4, 1) + np.roll(texture, (4, 4), (0, 1))) / 4
    with av.open(str(path), "w") as container:
        stream = _encoder(container, fps, width, height,
                          {"keyint_min": str(gop), "sc_threshold": "0"} if gop else None)
        if gop:
            stream.codec_context.gop_size = gop
        for t in range(frames):
            x0, y0 = 2 * t, int(4 + 3 * np.sin(t / 15))  # ... panning, with a little shake
            img = texture[y0:y0 + height, x0:x0 + width].copy()
            cx = int(20 + (width - 80) * t / frames)
            img[height // 3:height // 3 + 60, cx:cx + 50] = (230, 40, 40)
            img += rng.normal(0, 8, img.shape)
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)
