"""The `ost` command line.

    ost data download --dest ost-data                 # the paper's labels, descriptors, split lists
    ost presets                                       # the paper's runs as configs
    ost train --config k400_zero_shot --set root=/videos [--config ablation_spatio_only] [--resume]
    ost eval --config hmdb_zero_shot --set root=/videos --checkpoint run/checkpoint.pt   # or --untrained
    ost plot-plan --config train.yaml --checkpoint run/checkpoint.pt --video v.mp4 --out plan.png
    ost descriptors generate --labels classes.csv --kind temporal --n 4 --out temporal_4.json
    ost descriptors reindex --full-labels all.csv --subset-labels base.csv --descriptors d.json --out base.json
    ost convert-official --checkpoint official.pth --out ost.pt
    ost ensemble --zero-shot clip.pt --finetuned ost.pt --alpha 0.2 --out wise.pt
    ost make-synthetic --out demo                      # a small synthetic video data set

`train`, `eval` and `plot-plan` read one run config: `--config` takes a YAML file or a preset
name, repeatable (later ones win); `--set` any setting of ost.run.config.RunConfig, e.g.
`--set od.eps=0.05 --set eval.batch_size=16`. A setting is reached that one way only.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from . import commands


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ost-kernels")
    except PackageNotFoundError:  # a source tree without an install
        return "(not installed)"


def _plan_scale(parser, prefix: str = "") -> None:
    """The plan figure's colour scale; --deviation, once the option for today's default, is kept."""
    parser.add_argument("--scale", choices=["deviation", "mass"], default="deviation",
                        help=f"{prefix}colour each plan's difference from the uniform plan, P_ij - 1/(T N), centred on "
                             "0 (deviation, the default: where the solver moved mass), or the mass P_ij itself on 0 to "
                             "its maximum (near-uniform plans then show as one flat colour)")
    parser.add_argument("--deviation", dest="scale", action="store_const", const="deviation", help=argparse.SUPPRESS)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="ost", description="OST (CVPR'24) on open_clip with ost_kernels")
    parser.add_argument("--version", action="version", version=f"ost {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    # The run config, declared once for every command that reads it.
    run_config = argparse.ArgumentParser(add_help=False)
    run_config.add_argument("--config", action="append", help="YAML file or preset name (repeatable; later ones win)")
    run_config.add_argument("--set", action="append", metavar="KEY=VALUE",
                            help="override a setting, e.g. od.eps=0.05 or eval.batch_size=16 (repeatable)")

    pr = sub.add_parser("predict", parents=[run_config],
                        help="the top classes of your own videos, among your own classes")
    pr.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    pr.add_argument("--checkpoint", help="OST weights (default: the config's model as created)")
    pr.add_argument("--zero-shot", help="zero-shot weights for eval.ensemble_alpha's ensembling, as ost eval")
    classes = pr.add_mutually_exclusive_group()
    classes.add_argument("--classes", help='class names, comma-separated: "juggling,riding a bike"')
    classes.add_argument("--labels", help="label CSV (id,name) of the classes (default: the config's)")
    pr.add_argument("--spatio", help="spatio descriptor JSON for those classes (with --temporal)")
    pr.add_argument("--temporal", help="temporal descriptor JSON for those classes (with --spatio)")
    pr.add_argument("--generate", action="store_true",
                    help="ask an LLM for the classes' descriptors (cached by class name in --cache)")
    pr.add_argument("--cache", default="ost_descriptor_cache.json",
                    help="descriptor cache of --generate (default ./ost_descriptor_cache.json)")
    pr.add_argument("--n", type=int, default=4, help="with --generate: descriptors per class (paper: 4)")
    pr.add_argument("--model", default="gpt-3.5-turbo", help="with --generate: the LLM to ask")
    pr.add_argument("--base-url", default=None, help="with --generate: endpoint (default: $OPENAI_BASE_URL)")
    pr.add_argument("--api-key", default=None, help="with --generate: key (default: $OPENAI_API_KEY)")
    pr.add_argument("--temperature", type=float, default=0.7, help="with --generate: sampling temperature")
    pr.add_argument("--max-attempts", type=int, default=4, help="with --generate: tries per class")
    pr.add_argument("--top", type=int, default=5, help="classes shown per video (default 5)")
    pr.add_argument("--json", help="write every video's top classes, logits and probabilities here")
    pr.add_argument("--plot-dir", help="write each video's transport-plan figure (PNG) into this folder")
    pr.add_argument("--kind", choices=["spatio", "temporal"], default="temporal",
                    help="with --plot-dir: which descriptors' plans (default temporal)")
    _plan_scale(pr, "with --plot-dir: ")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=commands.predict)

    desc = sub.add_parser("descriptors", help="Spatio-Temporal Descriptor files")
    desc_sub = desc.add_subparsers(dest="action", required=True)
    gen = desc_sub.add_parser("generate", help="ask an OpenAI-compatible LLM for descriptors (resumable)")
    gen.add_argument("--labels", required=True, help="label CSV with header id,name")
    gen.add_argument("--kind", required=True, choices=["spatio", "temporal"],
                     help="spatial (objects, scenes) or temporal (steps) descriptors")
    gen.add_argument("--n", type=int, default=4, help="descriptors per class (paper: 4)")
    gen.add_argument("--out", required=True, help="output JSON; an existing partial file is resumed")
    gen.add_argument("--model", default="gpt-3.5-turbo", help="the LLM to ask (the paper: gpt-3.5-turbo)")
    gen.add_argument("--base-url", default=None, help="endpoint (default: $OPENAI_BASE_URL or OpenAI's)")
    gen.add_argument("--api-key", default=None, help="key (default: $OPENAI_API_KEY)")
    gen.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    gen.add_argument("--max-attempts", type=int, default=4, help="tries per class (malformed replies, HTTP errors)")
    gen.add_argument("--system", default=None,
                     help="file with a system message to use instead of the paper's (Fig. 9 / Fig. 10)")
    gen.add_argument("--user", default=None,
                     help="file with a user template ({category} or {class_name}, {num_captions} or {n}) instead")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=commands.generate)
    rei = desc_sub.add_parser("reindex", help="re-index descriptors of a full label set to a subset (base/novel)")
    rei.add_argument("--full-labels", required=True, help="label CSV the descriptor file is indexed by")
    rei.add_argument("--subset-labels", required=True, help="label CSV of the subset (matched by class name)")
    rei.add_argument("--descriptors", required=True, help="descriptor JSON indexed by the full label set")
    rei.add_argument("--out", required=True, help="descriptor JSON to write, indexed by the subset's ids")
    rei.set_defaults(func=commands.reindex)

    data = sub.add_parser("data", help="the paper's published data files")
    data_sub = data.add_subparsers(dest="action", required=True)
    dl = data_sub.add_parser("download", help="labels, descriptors and split lists of tomchen-ctj/OST (pinned, "
                                              "SHA-256 checked, existing files skipped)")
    dl.add_argument("--dest", required=True, help="folder to fill (the presets' data_dir: ost-data)")
    dl.add_argument("--only", action="append", metavar="PREFIX", help="only paths under this prefix (repeatable)")
    dl.add_argument("--base-url", default=None, help="another mirror of the pinned commit's files")
    dl.add_argument("--quiet", action="store_true", help="no progress bar")
    dl.set_defaults(func=commands.download)

    sub.add_parser("presets", help="list the bundled presets (the paper's runs)").set_defaults(func=commands.presets)

    conv = sub.add_parser("convert-official", help="an official OST checkpoint as a state dict of this package's model")
    conv.add_argument("--checkpoint", required=True, help="the checkpoint to convert")
    conv.add_argument("--out", required=True, help="file to write")
    conv.add_argument("--model", default="ViT-B-16-quickgelu", help="the open_clip model it was trained from")
    conv.set_defaults(func=commands.convert)

    ens = sub.add_parser("ensemble", help="weight-space ensembling of two checkpoints")
    ens.add_argument("--zero-shot", required=True, help="state dict (or checkpoint with 'model') of the zero-shot model")
    ens.add_argument("--finetuned", required=True, help="state dict (or checkpoint with 'model') of the fine-tuned model")
    ens.add_argument("--alpha", type=float, default=0.2, help="weight of the zero-shot model (paper: 0.2)")
    ens.add_argument("--out", required=True, help="state dict file to write")
    ens.set_defaults(func=commands.ensemble)

    tr = sub.add_parser("train", parents=[run_config], help="fine-tune CLIP with OST (torchrun for several processes)")
    tr.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoint.pt")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=commands.train)

    ev = sub.add_parser("eval", parents=[run_config], help="top-1 / top-5 accuracy against all classes "
                        "(settings: the config's eval group, e.g. --set eval.batch_size=16)")
    ev.add_argument("--checkpoint", help="the weights to score: checkpoint or state dict (or give --untrained)")
    ev.add_argument("--untrained", action="store_true",
                    help="score the config's model as created, without a checkpoint: its `pretrained` CLIP weights "
                         "(not fine-tuned), or random weights when it sets none")
    ev.add_argument("--list", help="video list to evaluate (default: the config's eval.splits, else eval.val_list)")
    ev.add_argument("--split", action="append", metavar="LABELS,LIST,SPATIO,TEMPORAL[,ROOT]",
                    help="a split to evaluate (repeatable; results are averaged as mean +- std)")
    ev.add_argument("--zero-shot", help="zero-shot weights for eval.ensemble_alpha's ensembling (default: the "
                                        "pretrained model as created; refused when the config has no pretrained weights)")
    ev.add_argument("--out", help="write the results as JSON here")
    ev.add_argument("--predictions", help="write each video's label and top-5 classes with scores here (JSON lines)")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=commands.evaluate)

    syn = sub.add_parser("make-synthetic", help="write a small synthetic video data set")
    syn.add_argument("--out", required=True, help="folder to write videos/, labels, lists, descriptors to")
    syn.add_argument("--classes", type=int, default=4, help="number of classes, 1 to 32 (default 4)")
    syn.add_argument("--videos-per-class", type=int, default=8, help=">= 1, default 8; a quarter go to val.txt")
    syn.add_argument("--frames", type=int, default=16, help="frames per video, >= 1 (default 16)")
    syn.add_argument("--size", type=int, default=64, help="frame side in pixels, even, >= 6 (default 64)")
    syn.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    syn.set_defaults(func=commands.make_synthetic)

    pp = sub.add_parser("plot-plan", parents=[run_config],
                        help="heatmaps of a video's transport plans against its top classes")
    pp.add_argument("--checkpoint", help="OST weights (default: the config's model as created)")
    pp.add_argument("--zero-shot", help="zero-shot weights for eval.ensemble_alpha's ensembling, as ost eval "
                                        "(default: the pretrained model)")
    pp.add_argument("--video", required=True, help="the video file to plot")
    pp.add_argument("--top", type=int, default=3, help="plot its N highest-scoring classes (default 3)")
    pp.add_argument("--kind", choices=["spatio", "temporal"], default="temporal",
                    help="which descriptors (default temporal)")
    _plan_scale(pp)
    pp.add_argument("--out", required=True, help="PNG file")
    pp.set_defaults(func=commands.plot_plan)
    return parser.parse_args(argv)


# The shell's code for a command stopped by Ctrl-C (128 + SIGINT).
INTERRUPTED = 130


class _SigintSeen:
    """Remembers a Ctrl-C while a command runs (then raises KeyboardInterrupt, as Python's own
    handler does): the same Ctrl-C also stops the loader workers, and the error that their
    exit can raise first in this process is then reported as the interruption it is."""

    def __init__(self):
        self.seen = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def _close_progress_bars() -> None:
    """End the bars a Ctrl-C left drawn, so that the message starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or []):
        bar.close()


def _interrupted() -> int:
    _close_progress_bars()
    print("ost: interrupted", file=sys.stderr)
    return INTERRUPTED


def main(argv=None) -> int:
    args = parse_args(argv)
    with _SigintSeen() as sigint:
        try:
            return args.func(args)
        except KeyboardInterrupt:  # Ctrl-C: one line; files are written whole or not at all
            return _interrupted()
        except (ValueError, RuntimeError, OSError) as exc:  # user errors: one line, no traceback
            if sigint.seen:
                return _interrupted()
            print(f"ost: error: {exc}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
