"""Command line: `python -m workbench pretrain | sample | export-hf | report`.

The training flags are generated from the config dataclasses (`--n-layer` is
`ModelConfig.n_layer`), so the command line and the library cannot drift apart.
`--preset` picks defaults; explicit flags win. Bad input ends with a one-line
`error: ...` naming the fix and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import MISSING, fields
from pathlib import Path

from .config import PRESETS, DataConfig, ModelConfig, RunConfig, TrainConfig
from .report import DEFAULT_TIMEOUT_S, PROFILES

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


def config_from_args(args: argparse.Namespace, base: dict[str, dict] | None = None) -> RunConfig:
    """Dataclass defaults (or `base`, a saved run's config) <- preset <- explicit flags, validated."""
    parts: dict[str, dict] = {name: dict((base or {}).get(name, {})) for name in SECTIONS}
    for name in SECTIONS:
        parts[name].update(PRESETS[args.preset].get(name, {}) if args.preset else {})
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            parts[section][name] = value
    return RunConfig.from_dict(parts)


def saved_config(out: Path) -> dict[str, dict] | None:
    """The config of the checkpoint `--resume` continues, so a bare `--resume --out DIR` resumes as saved."""
    from .checkpoint import latest_checkpoint

    latest = latest_checkpoint(out) if out.is_dir() else None
    path = latest / "config.json" if latest is not None else None
    return json.loads(path.read_text(encoding="utf-8")) if path is not None and path.is_file() else None


def cmd_pretrain(args: argparse.Namespace) -> None:
    from .pretrain import pretrain

    config = config_from_args(args, saved_config(Path(args.out)) if args.resume else None)
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

    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}; pass e.g. --max-new-tokens 300")
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}; pass a positive --top-k or leave it out")
    device = resolve_device(args.device)
    model, tokenizer, _ = load_pretrained(args.checkpoint, device=str(device))
    prompt = args.prompt or "\n"
    unknown = sorted(set(prompt) - set(tokenizer.chars)) if tokenizer.kind == "char" else []
    if unknown:
        raise ValueError(f"--prompt has characters this char-level model never saw ({', '.join(map(repr, unknown[:10]))}); "
                         "remove them from --prompt, or train with --tokenizer bpe")
    ids = tokenizer.encode(prompt)
    idx = torch.tensor([ids[-model.config.block_size:]], dtype=torch.long, device=device)
    out = model.generate(idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, seed=args.seed)
    print(tokenizer.decode(out[0].tolist()))


def cmd_export_hf(args: argparse.Namespace) -> None:
    from .pretrain import load_pretrained

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; choose a directory path for --out")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} already holds files; choose an empty --out")
    model, tokenizer, _ = load_pretrained(args.checkpoint)
    model.export_hf(out)
    tokenizer.save(out / "workbench_tokenizer.json")
    print(f"GPT2LMHeadModel written to {out} (load with transformers.GPT2LMHeadModel.from_pretrained)")


def cmd_report(args: argparse.Namespace) -> None:
    from .report import NotebookFailedError, run_report

    out = Path(args.out or f"reports/{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        report = run_report(args.notebooks, out, profile=args.profile, timeout=args.timeout)
    except NotebookFailedError as e:  # the report is written; one `error:` line names notebook, cell, error
        raise ValueError(str(e)) from None
    print(f"report ({report['profile']}, {report['wall_s']:.0f} s): {out.resolve() / 'index.html'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="train a GPT language model on a corpus")
    p.add_argument("--preset", choices=sorted(PRESETS), help="sensible sizes: smoke, baby (nanoGPT's CPU config), cpu or gpu")
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

    p = sub.add_parser("report", help="run the notebooks with papermill into an HTML + JSON report")
    p.add_argument("--profile", default="default", choices=PROFILES,
                   help="passed to every notebook as `profile` (default: default)")
    p.add_argument("--out", default=None, help="report folder (default: reports/<timestamp>)")
    p.add_argument("--notebooks", default=None, help="folder of notebooks (default: the repository's notebooks/)")
    p.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds each cell may run (default: {DEFAULT_TIMEOUT_S})")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:  # user errors: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
