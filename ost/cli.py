"""The `ost` command line.

    ost descriptors generate --labels classes.csv --kind temporal --n 4 --out temporal_4.json \
        [--model gpt-4o-mini] [--base-url URL] [--api-key KEY]
    ost ensemble --zero-shot clip.pt --finetuned ost.pt --alpha 0.2 --out wise.pt
"""
from __future__ import annotations

import argparse
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
    import torch

    from .ensemble import ensemble_state_dicts, load_state_dict_file

    merged = ensemble_state_dicts(load_state_dict_file(args.zero_shot), load_state_dict_file(args.finetuned),
                                  args.alpha)
    torch.save(merged, args.out)
    print(f"{args.out}: {args.alpha} * {args.zero_shot} + {1 - args.alpha} * {args.finetuned}")
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
