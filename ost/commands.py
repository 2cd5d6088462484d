"""What each `ost` subcommand does (the parser is ost/cli.py). Every handler takes the parsed
arguments and returns an exit status; heavy imports happen inside, so `ost --help` is quick."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def _check_llm_flags(args) -> None:
    """The LLM flags (`descriptors generate`, `predict --generate`), before any file or request."""
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise ValueError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.max_attempts < 1:
        raise ValueError(f"--max-attempts must be >= 1, got {args.max_attempts}")


def generate(args) -> int:
    from .descriptors.descriptors import load_class_names
    from .files import check_output_file
    from .descriptors.generate import PROMPTS, Prompt, generate_descriptors, make_client

    _check_llm_flags(args)
    check_output_file(args.out, "--out")
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


def reindex(args) -> int:
    from .files import check_output_file
    from .descriptors.reindex import reindex_descriptors

    check_output_file(args.out, "--out")
    reindex_descriptors(args.full_labels, args.subset_labels, args.descriptors, args.out)
    print(f"{args.out}: {args.descriptors} re-indexed to the classes of {args.subset_labels}")
    return 0


def ensemble(args) -> int:
    from .model.checkpoint import load_state_dict_file, save_checkpoint
    from .model.ensemble import ensemble_state_dicts
    from .files import check_output_file

    check_output_file(args.out, "--out")  # before two checkpoints are read
    merged = ensemble_state_dicts(load_state_dict_file(args.zero_shot), load_state_dict_file(args.finetuned),
                                  args.alpha)
    save_checkpoint(merged, args.out)
    print(f"{args.out}: {args.alpha} * {args.zero_shot} + {1 - args.alpha} * {args.finetuned}")
    return 0


def train(args) -> int:
    from .run.config import load_config
    from .run.train import train as run

    cfg = load_config(args.config, args.set or [])
    print(json.dumps(run(cfg, resume=args.resume, progress=not args.quiet)))
    return 0


def _parse_split(spec: str):
    from .run.evaluate import Split

    parts = spec.split(",")
    if len(parts) not in (4, 5):
        raise ValueError(f"--split {spec!r}: expected LABELS,LIST,SPATIO,TEMPORAL[,ROOT] (4 or 5 comma-separated "
                         f"paths), got {len(parts)}")
    return Split(*parts)


def _splits(cfg, args):
    from .run.evaluate import Split

    if args.split:
        return [_parse_split(spec) for spec in args.split]
    if cfg.eval.splits and not args.list:
        return [Split(cfg.data_path(s["labels"]), cfg.data_path(s["list"]), cfg.data_path(s["spatio"]),
                      cfg.data_path(s["temporal"]), s.get("root", cfg.root)) for s in cfg.eval.splits]
    # --list is the user's path (working directory); eval.val_list is the config's (data_dir).
    video_list = args.list or (cfg.data_path(cfg.eval.val_list) if cfg.eval.val_list else "")
    if not video_list:
        # Never the training list by default: its top-1 says nothing about the model.
        raise ValueError("ost eval needs the videos to score: pass --list FILE (or --split ...), or set "
                         "eval.val_list or eval.splits in the config")
    return [Split(cfg.data_path(cfg.labels), video_list, cfg.data_path(cfg.spatio),
                  cfg.data_path(cfg.temporal), cfg.root)]


def _split_classes(cfg, splits) -> list:
    """Each split's classes and descriptors, its video list checked against them: every file
    eval reads, read before the model is built."""
    from .data.annotations import read_annotations

    sets = []
    for split in splits:
        sets.append(_descriptor_set(cfg, split))
        read_annotations(split.video_list, split.root, sets[-1].num_classes)
    return sets


def _scored_weights(cfg, args) -> None:
    """Scoring a model that was not trained must be asked for (--untrained): without a
    checkpoint eval used to score the model as created, random weights when the config sets
    no `pretrained`, and exit 0 as if that were a result."""
    if args.checkpoint and args.untrained:
        raise ValueError("--untrained scores the model as created, without a checkpoint: give it or --checkpoint, "
                         "not both")
    if not (args.checkpoint or args.untrained):
        what = (f"its pretrained {cfg.pretrained} weights, not fine-tuned" if cfg.pretrained else
                "random weights: the config sets no `pretrained`")
        raise ValueError(f"no --checkpoint: give the weights to score (--checkpoint FILE), or --untrained to score "
                         f"the config's model as created ({what})")


def evaluate(args) -> int:
    from .run.build import scoring_model
    from .run.config import load_config
    from .run.evaluate import evaluate as run
    from .files import check_output_file

    cfg = load_config(args.config, args.set or [])
    _scored_weights(cfg, args)
    # The cheap checks first (files, outputs, the checkpoint in scoring_model), then the model.
    splits = _splits(cfg, args)
    sets = _split_classes(cfg, splits)
    check_output_file(args.out, "--out")
    check_output_file(args.predictions, "--predictions")
    model = scoring_model(cfg, args.checkpoint, args.zero_shot, descriptors=sets[0])
    by_split = {id(split): classes for split, classes in zip(splits, sets)}
    ev = cfg.eval
    budget = int(ev.memory_budget_mb * 2**20) if ev.memory_budget_mb else None
    result = run(model, splits, cfg.frames, cfg.size, ev.batch_size, progress=not args.quiet, out_path=args.out,
                 predictions_path=args.predictions,
                 class_chunk=ev.class_chunk, memory_budget=budget, views=tuple(ev.views),
                 normalization=cfg.normalization, num_workers=cfg.num_workers,
                 descriptors=lambda split: by_split[id(split)])
    s = result["summary"]
    scored = sum(r["videos"] for r in result["splits"])
    skipped = sum(r["skipped"] for r in result["splits"])
    print(f"top1 {100 * s['top1']['mean']:.2f} +- {100 * s['top1']['std']:.2f}  "
          f"top5 {100 * s['top5']['mean']:.2f} +- {100 * s['top5']['std']:.2f}  ({len(splits)} split(s), "
          f"{scored} videos scored, {skipped} unreadable and skipped)")
    if args.predictions:
        print(f"per-video predictions: {args.predictions}")
    if skipped * 2 > scored + skipped:
        print(f"ost: warning: {skipped} of {scored + skipped} videos could not be read: the accuracy covers only "
              "the rest (check root and the list's paths)", file=sys.stderr)
    return 0


def _check_predict_flags(args) -> None:
    """The flags that need no file: checked first."""
    from .run.recognizer import check_descriptor_source

    check_descriptor_source(args.spatio, args.temporal, args.generate, flags=True)
    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    if args.generate:
        _check_llm_flags(args)


def _predict_classes(args, cfg) -> list[str] | None:
    """The class names to rank (None: the config's own class files, read here to check them)."""
    from .run.build import descriptor_set
    from .descriptors.descriptors import load_class_names
    from .run.recognizer import check_names, config_class_files

    if args.classes is not None:
        names = [n.strip() for n in args.classes.split(",")]
        if not any(names):
            raise ValueError("--classes is empty: give class names, comma-separated")
        return check_names(names)
    if args.labels:
        return load_class_names(args.labels)
    if args.spatio or args.generate:
        if not cfg.labels:
            raise ValueError("descriptors need classes: pass --classes or --labels")
        return load_class_names(cfg.data_path(cfg.labels))
    named, missing = config_class_files(cfg)
    if not named:
        raise ValueError("no classes: pass --classes \"a,b,c\" or --labels CSV (the config names no label and "
                         "descriptor files)")
    if missing:
        raise ValueError(f"no classes: the config's class file {missing} is not there: pass --classes or "
                         "--labels (the presets' files: ost data download --dest ost-data)")
    descriptor_set(cfg)
    return None


def _present_videos(videos: list[str]) -> None:
    """At least one of the videos must be a file (a missing one among others is reported and skipped)."""
    if not any(Path(v).is_file() for v in videos):
        shown = ", ".join(videos[:3]) + (" ..." if len(videos) > 3 else "")
        raise ValueError(f"none of the {len(videos)} videos is a file: {shown}")


def predict(args) -> int:
    from .run.config import load_config
    from .files import atomic_write_json, check_output_file, check_output_folder
    from .run.recognizer import Recognizer, descriptor_lists, read_descriptor_cache

    # What is cheap to check is checked before the model is built (seconds, or a minute of
    # download retries offline): flags, classes, descriptor files, videos, outputs, and (in
    # Recognizer) the checkpoint.
    _check_predict_flags(args)
    cfg = load_config(args.config, args.set or [], data=False)
    names = _predict_classes(args, cfg)
    given = client = None
    if args.spatio:
        order = "--classes order" if args.classes is not None else f"the ids of {args.labels or 'the label file'}"
        given = tuple(descriptor_lists(path, names, kind, order)
                      for path, kind in ((args.spatio, "spatio"), (args.temporal, "temporal")))
    if args.generate:
        from .descriptors.generate import make_client

        read_descriptor_cache(args.cache)
        client = make_client(args.base_url, args.api_key)
    _present_videos(args.videos)
    check_output_file(args.json, "--json")
    check_output_folder(args.plot_dir, "--plot-dir")
    rec = Recognizer(cfg, args.checkpoint, zero_shot=args.zero_shot)
    if names is not None:
        spatio, temporal = given or (None, None)
        rec.set_classes(names, spatio=spatio, temporal=temporal, generate=args.generate,
                        cache=args.cache, client=client, progress=not args.quiet,
                        llm=dict(n=args.n, model=args.model, temperature=args.temperature,
                                 max_attempts=args.max_attempts))
    preds = rec.predict(args.videos, top=args.top, progress=not args.quiet)
    print(f"{len(rec.classes)} classes ({rec.classes_from}); probabilities: softmax over them of the logits")
    for p in preds:
        if p.error:
            print(f"{p.video}: unreadable, skipped ({p.error})")
            continue
        print(p.video)
        for rank, (c, lg, pr) in enumerate(zip(p.classes, p.logits, p.probs), 1):
            print(f"  {rank}. {c:40s} p {pr:.3f}  logit {lg:8.3f}")
    if args.json:
        atomic_write_json(args.json, {"classes": rec.classes, "classes_from": rec.classes_from,
                                      "videos": [p.as_dict() for p in preds]})
    ok = [p for p in preds if not p.error]
    if args.plot_dir and ok:
        _plan_figures(args, cfg, rec, ok)
    if not ok:
        print(f"ost: error: none of the {len(preds)} videos could be read", file=sys.stderr)
        return 2
    return 0


def _plan_figures(args, cfg, rec, preds) -> None:
    """predict --plot-dir: each readable video's plan figure, or why there is none to draw."""
    from .files import output_folder
    from .run.plots import nothing_to_plot, plot_video_plans
    from .run.recognizer import CLASS_NAME_BASELINE

    baseline = rec.classes_from == CLASS_NAME_BASELINE
    why = nothing_to_plot(rec.model.descriptors, args.kind, "class-name prompts" if baseline else None)
    if why:
        print(f"plan figures: none drawn: {why} (--spatio / --temporal or --generate give descriptors)")
        return
    with output_folder(args.plot_dir) as out:
        for i, p in enumerate(preds):
            png = out / f"{i:03d}_{Path(p.video).stem}.png"
            plot_video_plans(rec.model, p.video, png, cfg.frames, cfg.size, top=min(3, args.top), kind=args.kind,
                             normalization=cfg.normalization, deviation=args.scale == "deviation")
            print(f"plan figure: {png}")


def _descriptor_set(cfg, split):
    from .run.build import descriptor_set

    return descriptor_set(cfg, split.labels, split.spatio, split.temporal)


def make_synthetic(args) -> int:
    from .files import check_output_folder
    from .data.synthetic import check_arguments, make_synthetic as make

    check_arguments(args.classes, args.videos_per_class, args.frames, args.size,
                    names=dict(num_classes="--classes", videos_per_class="--videos-per-class", frames="--frames",
                               size="--size"))
    check_output_folder(args.out, "--out")
    paths = make(args.out, args.classes, args.videos_per_class, args.frames, args.size, seed=args.seed)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


def plot_plan(args) -> int:
    from .run.build import descriptor_set, scoring_model
    from .run.config import load_config
    from .files import check_output_file
    from .run.plots import nothing_to_plot, plot_video_plans, sampled_clip

    cfg = load_config(args.config, args.set or [])
    # The cheap checks (flags, output, classes, the video decoding) before the model is built.
    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    check_output_file(args.out, "--out")
    if not Path(args.video).is_file():
        raise ValueError(f"--video {args.video}: no such file")
    descriptors = descriptor_set(cfg)
    why = nothing_to_plot(descriptors, args.kind, "class_name_baseline" if cfg.class_name_baseline else None)
    if why:
        raise ValueError(why)
    clip = sampled_clip(args.video, cfg.frames, cfg.size, cfg.normalization)
    model = scoring_model(cfg, args.checkpoint, args.zero_shot, descriptors=descriptors)
    print(plot_video_plans(model, args.video, args.out, cfg.frames, cfg.size, top=args.top, kind=args.kind,
                           normalization=cfg.normalization, deviation=args.scale == "deviation", clip=clip))
    return 0


def presets(args) -> int:
    from .run.presets import PRESETS_DIR, list_presets

    for name, about in list_presets().items():
        print(f"{name:34s} {about}")
    print(f"(files in {PRESETS_DIR}; use one with --config NAME, e.g. `ost train --config k400_zero_shot "
          "--set root=/path/to/videos --set train_list=/path/to/k400_train.txt`)")
    return 0


def download(args) -> int:
    from .files import check_output_folder
    from .data.published import download_published

    check_output_folder(args.dest, "--dest")
    summary = download_published(args.dest, only=args.only or None, progress=not args.quiet,
                                 **({"base_url": args.base_url} if args.base_url else {}))
    print(json.dumps(summary))
    return 0


def convert(args) -> int:
    from .model.convert import convert_official_checkpoint
    from .files import check_output_file

    check_output_file(args.out, "--out")  # before the checkpoint is read and converted
    convert_official_checkpoint(args.checkpoint, args.out, model_name=args.model)
    print(f"{args.out}: {args.checkpoint} as a state dict of ost.model.model.OSTModel ({args.model})")
    return 0
