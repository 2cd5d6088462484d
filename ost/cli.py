"""The `ost` command line.

    ost descriptors generate --labels classes.csv --kind temporal --n 4 --out temporal_4.json \
        [--model gpt-4o-mini] [--base-url URL] [--api-key KEY]
    ost ensemble --zero-shot clip.pt --finetuned ost.pt --alpha 0.2 --out wise.pt
    ost make-synthetic --out demo                      # a small synthetic video data set
    ost train --config train.yaml [--set key=value ...] [--resume]
    ost eval --config train.yaml --checkpoint run/checkpoint.pt [--split ...] [--ensemble-alpha 0.2]
    ost plot-plan --config train.yaml --checkpoint run/checkpoint.pt --video v.mp4 --out plan.png

`--set` takes any setting of ost.config.TrainConfig, e.g. `--set od.eps=0.05 --set od.backend=cpu`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _generate(args) -> int:
    from .descriptors import load_class_names
    from .generate import PROMPTS, Prompt, generate_descriptors, make_client

    default = PROMPTS[args.kind]
    prompt = Prompt(
        system=Path(args.system).read_text(encoding="utf-8") if args.system else default.system,
        user=Path(args.user).read_text(encoding="utf-8") if args.user else default.user,
    )
    names = load_class_names(args.labels)
    client = make_client(args.base_url, args.api_key)
    descs = generate_descriptors(names, args.kind, args.n, args.out, client=client, model=args.model,
                                 temperature=args.temperature, max_attempts=args.max_attempts, prompt=prompt,
                                 progress=not args.quiet)
    print(f"{args.out}: {args.kind} descriptors for {len(descs)} classes")
    return 0


def _ensemble(args) -> int:
    from .checkpoint import load_state_dict_file, save_checkpoint
    from .ensemble import ensemble_state_dicts

    merged = ensemble_state_dicts(load_state_dict_file(args.zero_shot), load_state_dict_file(args.finetuned),
                                  args.alpha)
    save_checkpoint(merged, args.out)
    print(f"{args.out}: {args.alpha} * {args.zero_shot} + {1 - args.alpha} * {args.finetuned}")
    return 0


def _train(args) -> int:
    from .config import load_config
    from .train import train

    cfg = load_config(args.config, args.set or [])
    result = train(cfg, resume=args.resume, progress=not args.quiet)
    print(json.dumps(result))
    return 0


def _load_model(cfg, checkpoint):
    from .checkpoint import load_state_dict_file
    from .config import build_model

    model = build_model(cfg)
    if checkpoint:
        model.load_state_dict(load_state_dict_file(checkpoint))
    return model


def _eval(args) -> int:
    from .ensemble import ensemble_models
    from .evaluate import Split, evaluate
    from .config import load_config

    cfg = load_config(args.config, args.set or [])
    model = _load_model(cfg, args.checkpoint)
    if args.ensemble_alpha is not None:
        zero_shot = _load_model(cfg, args.zero_shot)  # default: the model as created (e.g. original CLIP)
        model = ensemble_models(zero_shot, model, args.ensemble_alpha)
    splits = [Split(*spec.split(",")) for spec in args.split] if args.split else [
        Split(cfg.labels, args.list or cfg.train_list, cfg.spatio, cfg.temporal, cfg.root)]
    budget = int(args.memory_budget_mb * 2**20) if args.memory_budget_mb else None
    result = evaluate(model, splits, cfg.frames, cfg.size, args.batch_size, progress=not args.quiet,
                      out_path=args.out, class_chunk=args.class_chunk, memory_budget=budget)
    s = result["summary"]
    print(f"top1 {100 * s['top1']['mean']:.2f} +- {100 * s['top1']['std']:.2f}  "
          f"top5 {100 * s['top5']['mean']:.2f} +- {100 * s['top5']['std']:.2f}  ({len(splits)} split(s))")
    return 0


def _make_synthetic(args) -> int:
    from .synthetic import make_synthetic

    paths = make_synthetic(args.out, args.classes, args.videos_per_class, args.frames, args.size, seed=args.seed)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


def _plot_plan(args) -> int:
    from .plots import plot_video_plans
    from .config import load_config

    cfg = load_config(args.config, args.set or [])
    model = _load_model(cfg, args.checkpoint)
    path = plot_video_plans(model, args.video, args.out, cfg.frames, cfg.size, top=args.top, kind=args.kind)
    print(path)
    return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="ost", description="OST (CVPR'24) on open_clip with ost_kernels")
    sub = parser.add_subparsers(dest="command", required=True)

    desc = sub.add_parser("descriptors", help="Spatio-Temporal Descriptor files")
    desc_sub = desc.add_subparsers(dest="action", required=True)
    gen = desc_sub.add_parser("generate", help="ask an OpenAI-compatible LLM for descriptors (resumable)")
    gen.add_argument("--labels", required=True, help="label CSV with header id,name")
    gen.add_argument("--kind", required=True, choices=["spatio", "temporal"])
    gen.add_argument("--n", type=int, default=4, help="descriptors per class (paper: 4)")
    gen.add_argument("--out", required=True, help="output JSON; an existing partial file is resumed")
    gen.add_argument("--model", default="gpt-3.5-turbo")
    gen.add_argument("--base-url", default=None, help="endpoint (default: $OPENAI_BASE_URL or OpenAI's)")
    gen.add_argument("--api-key", default=None, help="key (default: $OPENAI_API_KEY)")
    gen.add_argument("--temperature", type=float, default=0.7)
    gen.add_argument("--max-attempts", type=int, default=4, help="tries per class (malformed replies, HTTP errors)")
    gen.add_argument("--system", default=None, help="file with a system message to use instead of the default")
    gen.add_argument("--user", default=None, help="file with a user template ({class_name}, {n}) instead")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=_generate)

    ens = sub.add_parser("ensemble", help="weight-space ensembling of two checkpoints")
    ens.add_argument("--zero-shot", required=True, help="state dict (or checkpoint with 'model') of the zero-shot model")
    ens.add_argument("--finetuned", required=True, help="state dict (or checkpoint with 'model') of the fine-tuned model")
    ens.add_argument("--alpha", type=float, default=0.2, help="weight of the zero-shot model (paper: 0.2)")
    ens.add_argument("--out", required=True)
    ens.set_defaults(func=_ensemble)

    tr = sub.add_parser("train", help="fine-tune CLIP with OST (torchrun for several processes)")
    tr.add_argument("--config", help="YAML file of settings (see ost.train.TrainConfig)")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting (repeatable)")
    tr.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoint.pt")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="top-1 / top-5 accuracy against all classes")
    ev.add_argument("--config", help="the training YAML (model, frames, size, data)")
    ev.add_argument("--set", action="append", metavar="KEY=VALUE")
    ev.add_argument("--checkpoint", help="checkpoint or state dict (default: the model as created)")
    ev.add_argument("--list", help="video list to evaluate (default: the config's train_list)")
    ev.add_argument("--split", action="append", metavar="LABELS,LIST,SPATIO,TEMPORAL[,ROOT]",
                    help="a split to evaluate (repeatable; results are averaged as mean +- std)")
    ev.add_argument("--ensemble-alpha", type=float, help="weight-space ensemble with the zero-shot model first")
    ev.add_argument("--zero-shot", help="zero-shot weights for --ensemble-alpha (default: the model as created)")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--class-chunk", type=int, help="classes scored at a time (running top-5): bounded memory")
    ev.add_argument("--memory-budget-mb", type=float, help="derive the class chunk from this budget instead")
    ev.add_argument("--out", help="write the results as JSON here")
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=_eval)

    syn = sub.add_parser("make-synthetic", help="write a small synthetic video data set")
    syn.add_argument("--out", required=True)
    syn.add_argument("--classes", type=int, default=4)
    syn.add_argument("--videos-per-class", type=int, default=8)
    syn.add_argument("--frames", type=int, default=16)
    syn.add_argument("--size", type=int, default=64)
    syn.add_argument("--seed", type=int, default=0)
    syn.set_defaults(func=_make_synthetic)

    pp = sub.add_parser("plot-plan", help="heatmaps of a video's transport plans against its top classes")
    pp.add_argument("--config", help="the training YAML (model, frames, size, descriptors)")
    pp.add_argument("--set", action="append", metavar="KEY=VALUE")
    pp.add_argument("--checkpoint")
    pp.add_argument("--video", required=True)
    pp.add_argument("--top", type=int, default=3)
    pp.add_argument("--kind", choices=["spatio", "temporal"], default="temporal")
    pp.add_argument("--out", required=True, help="PNG file")
    pp.set_defaults(func=_plot_plan)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"ost: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
