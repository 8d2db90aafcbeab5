"""Command line: `python -m workbench pretrain | sample | export-hf`.

The training flags are generated from the config dataclasses (`--n-layer` is
`ModelConfig.n_layer`), so the command line and the library cannot drift apart.
`--preset` picks defaults; explicit flags win. Bad input ends with a one-line
`error: ...` naming the fix and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from .config import PRESETS, DataConfig, ModelConfig, RunConfig, TrainConfig

SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
DERIVED = {("model", "vocab_size")}  # set from the tokenizer, not by hand
TYPES = {"int": int, "float": float, "str": str, "int | None": int, "float | None": float}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field; defaults are left unset so presets and explicit flags can merge."""
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} ({cls.__name__})")
        for f in fields(cls):
            if (section, f.name) in DERIVED:
                continue
            flag = "--" + f.name.replace("_", "-")
            default = f.default if f.default is not MISSING else None
            kwargs = dict(dest=f"{section}.{f.name}", default=argparse.SUPPRESS, help=f"default: {default}")
            if f.type == "bool":
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            else:
                group.add_argument(flag, type=TYPES[f.type], metavar=f.name.upper(), **kwargs)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Dataclass defaults <- preset <- explicit flags, validated by the dataclasses."""
    parts: dict[str, dict] = {name: dict(PRESETS[args.preset].get(name, {})) if args.preset else {}
                              for name in SECTIONS}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            parts[section][name] = value
    return RunConfig.from_dict(parts)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from .pretrain import pretrain

    config = config_from_args(args)
    result = pretrain(config, args.out, resume=args.resume)
    m = result.metrics
    print(f"val_loss {m['val_loss']:.4f} (best at step {m['best_step']}), {m['params']:,} parameters, "
          f"{m.get('ms_per_iter_median', float('nan')):.1f} ms/iter, {m.get('tokens_per_s', float('nan')):,.0f} tokens/s, "
          f"{m['wall_s']:.0f} s")
    print(f"checkpoint: {Path(args.out) / 'model'}")


def cmd_sample(args: argparse.Namespace) -> None:
    import torch

    from .pretrain import load_pretrained
    from .train import resolve_device

    device = resolve_device(args.device)
    model, tokenizer, _ = load_pretrained(args.checkpoint, device=str(device))
    ids = tokenizer.encode(args.prompt or "\n")
    idx = torch.tensor([ids[-model.config.block_size:]], dtype=torch.long, device=device)
    out = model.generate(idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, seed=args.seed)
    print(tokenizer.decode(out[0].tolist()))


def cmd_export_hf(args: argparse.Namespace) -> None:
    from .pretrain import load_pretrained

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} already holds files; choose an empty --out")
    model, tokenizer, _ = load_pretrained(args.checkpoint)
    model.export_hf(out)
    tokenizer.save(out / "workbench_tokenizer.json")
    print(f"GPT2LMHeadModel written to {out} (load with transformers.GPT2LMHeadModel.from_pretrained)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="train a GPT language model on a corpus")
    p.add_argument("--preset", choices=sorted(PRESETS), help="sensible sizes: smoke, cpu or gpu")
    p.add_argument("--out", required=True, help="run directory (checkpoints, history.csv, metrics.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    add_config_flags(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("sample", help="generate text from a trained checkpoint")
    p.add_argument("--checkpoint", required=True, help="a pretrain --out directory or a checkpoint directory")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max-new-tokens", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("export-hf", help="write a Hugging Face GPT2LMHeadModel directory")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export_hf)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:  # user errors: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
