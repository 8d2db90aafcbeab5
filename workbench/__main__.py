"""Command line: `python -m workbench pretrain | finetune | seq2seq-train | translate | sample | export-hf | evaluate | bench | report | compare`.

The training flags are generated from the config dataclasses (`--n-layer` is
`ModelConfig.n_layer`), so the command line and the library cannot drift apart.
`--preset` picks defaults; explicit flags win. Bad input ends with a one-line
`error: ...` naming the fix and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from .config import (CHOICES, PRESETS, DataConfig, FinetuneConfig, ModelConfig, RunConfig, TrainConfig, from_dict,
                     with_length)
from .profiles import PROFILES
from .report import DEFAULT_TIMEOUT_S

RUN_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
FINETUNE_SECTIONS = {"finetune": FinetuneConfig, "train": TrainConfig}
# set from the tokenizer, not by hand (the encoder-decoder's vocabulary and special ids too)
DERIVED = {("model", "vocab_size"), ("model", "src_vocab_size"), ("model", "tgt_vocab_size"), ("model", "pad_id"),
           ("model", "bos_id"), ("model", "eos_id"), ("model", "shared_embeddings")}
# what TrainConfig.resolved puts in a field a command leaves unset (finetune: its lr, length, warm-up)
DERIVED_DEFAULTS = {"max_iters": "--epochs over the training examples", "lr": "the --mode's learning rate",
                    "min_lr": "lr / 10", "warmup_iters": "10%% of the steps", "eval_interval": "a quarter of the steps"}
# the task flags of `finetune` (load_task) and `seq2seq-train` (load_pairs; its date task's own), by argparse
# dest -> the loader's argument; a flag left out is the resumed run's (its task_source), else the loader's default
TASK_FLAGS = {"task": "spec", "text_col": "text_col", "label_col": "label_col", "split_seed": "seed", "max_chars": "max_chars"}
PAIR_FLAGS = {"task": "spec", "source_col": "source_col", "target_col": "target_col", "split_seed": "seed"}
DATE_FLAGS = {"locales": "locales", "n_train": "n_train", "n_val": "n_val", "n_test": "n_test"}
# the config fields `bench` sets itself: random tokens (no corpus), its own --iters in one process, no
# evaluation or checkpoint; flags for them would be taken and ignored
BENCH_SETS = ("data.corpus", "data.text_column", "train.max_iters", "train.epochs", "train.eval_interval",
              "train.eval_iters", "train.patience", "train.checkpoint_interval", "train.parallel")
TYPES = {"int": int, "float": float, "str": str, "int | None": int, "float | None": float}


def add_config_flags(parser: argparse.ArgumentParser, sections: dict[str, type] = RUN_SECTIONS,
                     defaults: dict[str, Any] | None = None, without: tuple[str, ...] = ()) -> None:
    """One flag per field of each config dataclass (`--n-layer` is ModelConfig.n_layer), stored as
    `section.field` only when given, so presets, saved configs and explicit flags can merge. A field
    that is itself a config (FinetuneConfig.train) is its own section. `defaults`: {section: the config
    the command starts from} where that is not the dataclass's own defaults (finetune trains at
    batch 16 for 3 epochs, not TrainConfig's 12 for 2000 steps), so --help says what a run gets.
    `without`: "section.field" flags the command would ignore (bench reads no corpus)."""
    for section, cls in sections.items():
        group = parser.add_argument_group(f"{section} ({cls.__name__})")
        start = (defaults or {}).get(section)
        for f in fields(cls):
            skipped = (section, f.name) in DERIVED or f"{section}.{f.name}" in without
            if skipped or f.type not in TYPES and f.type != "bool":
                continue
            flag = "--" + f.name.replace("_", "-")
            default = f.default if f.default is not MISSING else None
            if start is not None:
                default = getattr(start, f.name)
                if default is None and f.default not in (MISSING, None):  # TrainConfig.resolved fills it in
                    default = DERIVED_DEFAULTS.get(f.name, "derived from the run")
            choices = f"one of {', '.join(CHOICES[f.name])}; " if f.name in CHOICES else ""
            kwargs = dict(dest=f"{section}.{f.name}", default=argparse.SUPPRESS, help=f"{choices}default: {default}")
            if f.type == "bool":
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            else:
                group.add_argument(flag, type=TYPES[f.type], metavar=f.name.upper(), **kwargs)


def seed(text: str) -> int:
    """An argparse type: a seed numpy's generators take (a whole number >= 0)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed must be >= 0, got {value}")
    return value


def given_flags(args: argparse.Namespace) -> dict[str, dict]:
    """The config flags given on the command line, by section: {"train": {"lr": 2e-3}, ...}."""
    parts: dict[str, dict] = {}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            parts.setdefault(section, {})[name] = value
    return parts


def config_from_args(args: argparse.Namespace, base: dict[str, dict] | None = None) -> RunConfig:
    """Dataclass defaults (or `base`, a saved run's config) <- preset <- explicit flags, validated."""
    parts: dict[str, dict] = {name: dict((base or {}).get(name, {})) for name in RUN_SECTIONS}
    for name, values in (PRESETS[args.preset] if args.preset else {}).items():
        parts[name].update(values)
    given = given_flags(args)
    for name, values in given.items():
        parts[name].update(values)
    parts["train"] = with_length(parts["train"], given.get("train", {}))
    config = RunConfig.from_dict(parts)
    check_data_flags(given.get("data", {}), config.data)
    return config


def check_data_flags(given: dict[str, Any], data: DataConfig) -> None:
    """Refuse a data flag the run would not read (taken silently, it would seem to have been used)."""
    from .data import TABLE_FILES

    if "vocab_size" in given and data.tokenizer != "bpe":
        raise ValueError("--vocab-size sets the size of a BPE vocabulary; a char tokenizer's vocabulary is the corpus's "
                         "characters: add --tokenizer bpe, or drop --vocab-size")
    if "text_column" in given and Path(data.corpus).suffix.lower() not in TABLE_FILES:
        raise ValueError(f"--text-column names a column of a {'/'.join(s[1:].upper() for s in TABLE_FILES)} "
                         f"corpus; --corpus {data.corpus} is read as plain text: drop --text-column")


def finetune_config_from_args(args: argparse.Namespace, base: dict | None = None) -> FinetuneConfig:
    """Fine-tuning defaults (or `base`, a saved run's finetune.json) <- explicit flags, validated."""
    given = given_flags(args)
    config = dict(base or {})
    config.update(given.get("finetune", {}))
    config["train"] = with_length({**(base or {}).get("train", {}), **given.get("train", {})}, given.get("train", {}))
    return from_dict(FinetuneConfig, config)


def saved_artifacts(out: Path, builds: dict[str, Callable[[Any], Any]], kind: str) -> dict[str, Any]:
    """The artifacts (config, finetune, task_source, ...) of the checkpoint `--resume` continues, so a
    bare `--resume --out DIR` resumes as saved: {name: JSON content} of those it has. A run of another
    kind than `kind` (the command) is refused as `Run` refuses it; an artifact that `builds[name]`
    refuses (a JSON of another shape) is a damaged file, named in one line."""
    from .checkpoint import build_artifact, latest_checkpoint, read_json
    from .run import check_kind, run_kind

    latest = latest_checkpoint(out) if out.is_dir() else None
    if latest is None:
        return {}
    check_kind(out, run_kind(latest), kind)
    saved = {}
    for name, build in builds.items():
        path = latest / f"{name}.json"
        if path.is_file():
            saved[name] = read_json(path)  # only these files: Run reads the whole checkpoint once, later
            build_artifact(path, saved[name], build)
    return saved


def config_of(cls: type) -> Callable[[Any], Any]:
    """The build of a config artifact: the dataclass `cls` from its JSON (a ValueError if it is not one)."""
    return lambda content: from_dict(cls, content)


def arguments_of(loader: Callable) -> Callable[[Any], Any]:
    """The build of a task_source artifact: check it holds keyword arguments `loader` takes."""
    def check(content: Any) -> None:
        if not isinstance(content, dict):
            raise ValueError(f"not a JSON object of {loader.__name__}'s arguments")
        try:
            inspect.signature(loader).bind(**content)
        except TypeError as e:
            raise ValueError(f"not {loader.__name__}'s arguments: {e}") from None
    return check


def task_arguments(args: argparse.Namespace, flags: dict[str, str], saved: dict | None) -> dict[str, Any]:
    """The task loader's arguments, from `flags` {flag dest: argument}: each flag given on the command
    line, else the resumed run's (its task_source); an argument that is neither is left to the loader's
    default."""
    saved = saved or {}
    return {**{name: saved[name] for name in flags.values() if name in saved},
            **{name: getattr(args, dest) for dest, name in flags.items() if getattr(args, dest) is not None}}


def flags_given(args: argparse.Namespace, dests) -> list[str]:
    """The flags among `dests` (argparse dests whose default is None) given on the command line, as typed."""
    return ["--" + d.replace("_", "-") for d in dests if getattr(args, d) is not None]


def check_table_flags(args: argparse.Namespace, built_in: bool, task: str, dests: tuple[str, ...]) -> None:
    """Refuse a table's flags (columns, its split seed) given with a built-in task that reads none of them."""
    if built_in and (given := flags_given(args, dests)):
        raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to a file of your own; "
                         f"the built-in {task} task reads none of them: drop them, or pass --task FILE")


def exit_if_interrupted(metrics: dict) -> None:
    """A run stopped by Ctrl-C exits with status 130 (how to continue it: the run's own warning line, which
    names the command while `main` runs it: `run.COMMAND_LINE`)."""
    if not metrics["completed"]:
        raise SystemExit(130)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from .distributed import init_distributed, shutdown
    from .pretrain import pretrain
    from .train import resolve_device

    saved = saved_artifacts(Path(args.out), {"config": config_of(RunConfig)}, "pretrain") if args.resume else {}
    config = config_from_args(args, saved.get("config"))
    info = init_distributed(resolve_device(config.train.device).type)  # under torchrun: join the ranks
    try:
        m = pretrain(config, args.out, resume=args.resume).metrics
    finally:
        shutdown(info)
    if not info.is_main:  # under torchrun only rank 0 reports
        return
    exit_if_interrupted(m)
    print(f"val_loss {m['val_loss']:.4f} (best at step {m['best_step']}), {m['params']:,} parameters, "
          f"{m.get('ms_per_iter_median', float('nan')):.1f} ms/iter, {m.get('tokens_per_s', float('nan')):,.0f} tokens/s, "
          f"{m['wall_s']:.0f} s")
    print(f"checkpoint: {Path(args.out) / 'model'}")


def cmd_finetune(args: argparse.Namespace) -> None:
    from .finetune import PREDICTIONS, finetune
    from .run import check_one_process
    from .tasks import load_task

    check_one_process("finetune")  # before any flag is read, as torchrun starts it once per rank
    out = Path(args.out)
    saved = (saved_artifacts(out, {"finetune": config_of(FinetuneConfig), "task_source": arguments_of(load_task)},
                             "finetune") if args.resume else {})
    config = finetune_config_from_args(args, saved.get("finetune"))
    task_args = task_arguments(args, TASK_FLAGS, saved.get("task_source"))
    check_table_flags(args, task_args.get("spec", "genre") == "genre", "genre", ("text_col", "label_col", "split_seed"))
    task = load_task(**task_args)
    m = finetune(args.checkpoint, task, config, out, resume=args.resume).metrics
    exit_if_interrupted(m)
    print(f"{m['mode']}: test accuracy {m['test_accuracy']:.3f}, macro-F1 {m['test_macro_f1']:.3f} "
          f"(val macro-F1 {m['val_macro_f1']:.3f}, best at step {m['best_step']} of {m['steps']}), "
          f"{m['trainable_params']:,} of {m['total_params']:,} parameters trained, {m['train_s']:.0f} s, "
          f"{m['tokens_per_s']:,.0f} tokens/s")
    print(f"checkpoint: {out / 'model'}, metrics: {out / 'metrics.json'}, predictions: {out / PREDICTIONS}")


def translation_sections() -> tuple[dict[str, type], dict[str, Any]]:
    """The config sections of `seq2seq-train` and the configs its flags start from."""
    from .seq2seq import Seq2SeqConfig
    from .translator import TranslationConfig

    start = TranslationConfig()
    return ({"translation": TranslationConfig, "model": Seq2SeqConfig, "train": TrainConfig},
            {"translation": start, "model": start.model, "train": start.train})


def translation_config_from_args(args: argparse.Namespace, base: dict | None = None):
    """Translation defaults (or `base`, a saved run's translation.json) <- explicit flags, validated."""
    from .translator import TranslationConfig

    given = given_flags(args)
    config = {**(base or {}), **given.get("translation", {})}
    config["model"] = {**(base or {}).get("model", {}), **given.get("model", {})}
    config["train"] = with_length({**(base or {}).get("train", {}), **given.get("train", {})}, given.get("train", {}))
    return from_dict(TranslationConfig, config)


def cmd_seq2seq_train(args: argparse.Namespace) -> None:
    from .run import check_one_process
    from .translation import load_pairs
    from .translation_eval import DATE_BLEU_TOKENIZE, per_locale_scores, sacrebleu_signatures
    from .translator import TranslationConfig, seq2seq_train

    check_one_process("seq2seq-train")
    out = Path(args.out)
    saved = (saved_artifacts(out, {"translation": config_of(TranslationConfig), "task_source": arguments_of(load_pairs)},
                             "seq2seq-train") if args.resume else {})
    config = translation_config_from_args(args, saved.get("translation"))
    task_args = task_arguments(args, PAIR_FLAGS, saved.get("task_source"))
    dates = task_args.setdefault("spec", "dates") == "dates"
    check_table_flags(args, dates, "dates", ("source_col", "target_col"))
    if dates:
        task_args |= task_arguments(args, DATE_FLAGS, saved.get("task_source"))
    elif given := flags_given(args, DATE_FLAGS):
        raise ValueError(f"{', '.join(given)} choose the built-in date task's pairs; "
                         f"--task {task_args['spec']} is a file of pairs: drop them")
    task = load_pairs(**task_args)
    result = seq2seq_train(task, config, out, resume=args.resume)
    m = result.metrics
    exit_if_interrupted(m)
    bleu_tokenize = DATE_BLEU_TOKENIZE if dates else "13a"
    predictions = result.translator.translate(task.test["source"].tolist())
    table = per_locale_scores(task.test, predictions, bleu_tokenize)
    print(f"val_loss {m['val_loss']:.4f} (best at step {m['best_step']} of {m['steps']}), {m['params']:,} parameters, "
          f"{m.get('train_s', float('nan')):.0f} s training")
    print(f"test, greedy ({len(task.test)} pairs):")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    for name, signature in sacrebleu_signatures(bleu_tokenize).items():
        print(f"{name}: {signature}")
    if bleu_tokenize == "13a" and task.test["target"].str.split().str.len().median() < 4:
        print("(BLEU counts word 4-grams: most targets here have fewer than four words, so it reads 0; see chrF)")
    table.to_csv(out / "test_scores.csv")
    task.test.assign(prediction=predictions)[["locale", "source", "target", "prediction"]].to_csv(
        out / "test_predictions.csv", index=False)
    print(f"checkpoint: {out / 'model'}, test scores: {out / 'test_scores.csv'}, predictions: {out / 'test_predictions.csv'}")


def cmd_translate(args: argparse.Namespace) -> None:
    from .train import resolve_device
    from .translator import load_translator

    translator = load_translator(args.checkpoint, device=str(resolve_device(args.device)))
    unknown = sorted({c for text in args.text for c in translator.tokenizer.unknown(text)})
    if unknown:
        logging.getLogger("workbench.translate").warning(
            "characters this model never saw are read as <unk>: %s", ", ".join(map(repr, unknown[:10])))
    for translation in translator.translate(args.text, beam=args.beam):
        print(translation)


# the backslash escapes `sample` reads in --prompt and --stop (a shell passes "\n" as a backslash and an n)
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|[ntr\\]|.?)", re.DOTALL)
SAMPLE_SEPARATOR = "---------------"  # between --num-samples samples, as nanoGPT's sample.py prints them


def unescape(text: str, flag: str) -> str:
    r"""`text` with the backslash escapes \n, \t, \r, \\ and \uXXXX read ("a\nb" typed is "a", a newline,
    "b"); every other character, non-ASCII too, as typed. Any other escape, or a lone \ at the end, is a
    ValueError naming `flag` (not Python's unicode_escape, which turns é into mojibake and reads \x, \N)."""
    def replace(m: re.Match) -> str:
        code = m.group(1)
        if code in ESCAPES:
            return ESCAPES[code]
        if len(code) == 5 and not 0xD800 <= int(code[1:], 16) <= 0xDFFF:  # a surrogate is half a character
            return chr(int(code[1:], 16))
        bad = ("ends in a lone \\" if not code else "has \\u without four hex digits after it" if code == "u" else
               f"has \\{code}, half of a character (a surrogate)" if len(code) == 5 else
               f"has \\{code}" if code.isprintable() else f"has a \\ before {code!r}")  # e.g. a newline: one line
        raise ValueError(f"{flag} {bad}; the escapes it reads are \\n, \\t, \\r, \\\\ and \\uXXXX: write \\\\ for a "
                         "backslash, or type the character itself")
    return ESCAPE.sub(replace, text)


def cmd_sample(args: argparse.Namespace) -> None:
    from .generate import Engine, inference_model, stream_text
    from .model import check_sampling
    from .pretrain import load_pretrained
    from .train import resolve_device

    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}; pass e.g. --max-new-tokens 300")
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}; pass e.g. --num-samples 3")
    check_sampling(args.temperature, args.top_k, args.top_p)  # before the model is loaded
    prompt = unescape(args.prompt, "--prompt") or "\n"
    stop = [unescape(s, "--stop") for s in args.stop or ()]
    if any(not s for s in stop):  # before the prompt is printed
        raise ValueError("--stop must be non-empty text; drop the empty --stop ''")
    device = resolve_device(args.device)
    model, tokenizer, _ = load_pretrained(args.checkpoint, device=str(device))
    unknown = sorted(set(prompt) - set(tokenizer.chars)) if tokenizer.kind == "char" else []
    if unknown:
        raise ValueError(f"--prompt has characters this char-level model never saw ({', '.join(map(repr, unknown[:10]))}); "
                         "remove them from --prompt, or train with --tokenizer bpe")
    engine = Engine(inference_model(model, args.dtype), compile=args.compile)
    # --num-samples rows of one batch: each row draws its own tokens from the one seeded generator, so
    # the samples differ (at --temperature 0 they are the same) and --seed reproduces them all
    texts = [""] * args.num_samples
    print(prompt, end="", flush=True)
    # the first sample is printed as it is decoded (text that may still turn out to be a stop string or
    # an unfinished UTF-8 character is held back until it is decided); the others once all are done
    for pieces in stream_text(engine, tokenizer, [prompt] * args.num_samples, args.max_new_tokens, stop=stop,
                              temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed):
        print(pieces[0], end="", flush=True)
        texts = [t + p for t, p in zip(texts, pieces)]
    print()
    if args.num_samples > 1:  # nanoGPT's layout: a line of dashes after each sample
        print(SAMPLE_SEPARATOR)
        for text in texts[1:]:
            print(prompt + text)
            print(SAMPLE_SEPARATOR)


def cmd_export_hf(args: argparse.Namespace) -> None:
    from .pretrain import load_pretrained
    from .run import check_writable

    out = Path(args.out)
    check_writable(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} already holds files; choose an empty --out")
    model, tokenizer, _ = load_pretrained(args.checkpoint)
    model.export_hf(out)
    tokenizer.to_hf().save_pretrained(out)  # tokenizer.json and its config: AutoTokenizer loads it
    tokenizer.save(out / "workbench_tokenizer.json")
    print(f"GPT2LMHeadModel and its tokenizer written to {out} (load with transformers' "
          "GPT2LMHeadModel.from_pretrained and AutoTokenizer.from_pretrained)")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .checkpoint import CHECKPOINTS, write_json
    from .evaluate import evaluate_checkpoint
    from .run import FINAL, check_writable

    run_dir = Path(args.checkpoint).resolve()  # never write inside a folder that training replaces (`.` or a
    # symlink may name model/ itself)
    if run_dir.name == FINAL:
        run_dir = run_dir.parent
    elif run_dir.parent.name == CHECKPOINTS:
        run_dir = run_dir.parent.parent
    default = run_dir / f"evaluation-{args.split}"
    out = Path(args.out or default)
    check_writable(out)
    where = out.resolve()  # not the run itself, nor model/ and checkpoints/, which training replaces
    if where == run_dir or any(p.resolve() in (where, *where.parents)
                                         for p in (run_dir / FINAL, run_dir / CHECKPOINTS)):
        raise ValueError(f"--out {out} is inside the run that training writes to (it keeps its own metrics.json "
                         f"there); leave --out out to write {default}, or choose a folder of its own")
    if (out / "metrics.json").exists():
        raise ValueError(f"{out} already holds an evaluation (metrics.json); choose another --out, or delete it "
                         "to evaluate again")
    result = evaluate_checkpoint(args.checkpoint, args.split, n_prompts=args.prompts, max_chars=args.max_chars,
                                 compression_chars=args.compression_chars, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", result)
    lm = result["lm"]
    loss = result[f"{args.split}_loss"]
    print(f"{args.split} loss: {loss:.4f} nats/token (the whole split, as training evaluates it)")
    print(f"{args.split}: {lm['bits_per_char']:.4f} bits/char, perplexity {lm['perplexity']:.2f} "
          f"over {lm['tokens']:,} tokens")
    for row in result.get("generation", []):
        print(f"{row['strategy']}: BLEU {row['bleu']:.2f}, chrF {row['chrf']:.2f}")
    for row in result.get("compression", []):
        print(f"{row['variant']}: {row['size_mb']:.2f} MB, perplexity {row['perplexity']:.2f} "
              f"({row['delta_perplexity']:+.2f})")
    print(f"metrics: {out / 'metrics.json'}")


def parameter_value(text: str) -> Any:
    """A `report -p NAME VALUE` value as papermill's `-p` reads it: a Python literal (3, 0.5, None, [1, 2])
    or else the text; a path that exists here becomes absolute (the notebooks run in notebooks/)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    return str(Path(value).resolve()) if isinstance(value, str) and value and Path(value).exists() else value


def cmd_report(args: argparse.Namespace) -> None:
    from .report import NotebookFailedError, describe_machine, run_report

    out = Path(args.out or f"reports/{time.strftime('%Y%m%d-%H%M%S')}")
    parameters = {name: parameter_value(value) for name, value in args.parameter or ()}
    try:
        report = run_report(args.notebooks, out, profile=args.profile, timeout=args.timeout, parameters=parameters,
                            progress=lambda line: print(line, file=sys.stderr, flush=True))
    except NotebookFailedError as e:  # the report is written; one `error:` line names notebook, cell, error
        raise ValueError(str(e)) from None
    print(f"report ({report['profile']}, {report['wall_s']:.0f} s; {describe_machine(report['machine'])}): "
          f"{out.resolve() / 'index.html'}")


def cmd_compare(args: argparse.Namespace) -> None:
    from .report_diff import compare_reports, format_comparison, load_report

    a, b = load_report(args.report_a), load_report(args.report_b)
    print(format_comparison(compare_reports(a, b, args.report_a, args.report_b)))


def cmd_bench(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from .bench import format_profile, format_table, loss_memory, run_bench, step_profile
    from .checkpoint import write_json
    from .run import check_writable

    if args.iters < 1 or args.warmup < 0:
        raise ValueError(f"--iters must be >= 1 and --warmup >= 0, got {args.iters} and {args.warmup}; "
                         "pass e.g. --iters 50 --warmup 10")
    if args.json:  # before minutes of measuring, not after
        check_writable(Path(args.json), "--json", is_dir=False)
        if Path(args.json).exists():
            raise ValueError(f"--json {args.json} already exists; choose a new file name, or delete it first")
    config = config_from_args(args)
    vocab = config.data.vocab_size if config.data.tokenizer == "bpe" else 65  # 65: tinyshakespeare's characters
    config = replace(config, model=replace(config.model, vocab_size=vocab))
    result = run_bench(config, iters=args.iters, warmup=args.warmup, generation=not args.no_generation,
                       compile_generation=not args.no_generation_compile, hf=not args.no_hf)
    if args.loss_memory:
        result.update(loss_memory(config))
    print(format_table(result))
    if args.step_profile:
        result["step_profile"] = step_profile(config)
        print(format_profile(result["step_profile"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(args.json), result)


class Parser(argparse.ArgumentParser):
    """argparse, whose errors are one line like the workbench's own (not a screenful of usage first)."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    from .translation import parse_locales

    parser = Parser(prog="python -m workbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    parser.commands = sub.choices  # name -> the command's parser: its --help lists its flags

    p = sub.add_parser("pretrain", help="train a GPT language model on a corpus")
    p.add_argument("--preset", choices=sorted(PRESETS), help="sizes and loop settings: " + ", ".join(sorted(PRESETS)) + " (baby: nanoGPT's "
                   "CPU configuration; gpu: its shakespeare_char; gpt2: the 124M shape)")
    p.add_argument("--out", required=True, help="run directory (checkpoints, history.csv, metrics.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    add_config_flags(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune a classifier: the genre of a speech, or your CSV/TSV/JSONL")
    p.add_argument("--checkpoint", default=None, help="a pretrain --out directory (not needed for --mode hf)")
    resumed = "; --resume: the run's"  # a task flag left out of a resume is the run's own (TASK_FLAGS)
    p.add_argument("--task", help=f"genre (First Folio genre of a speech) or a .csv/.tsv/.jsonl file (default: genre{resumed})")
    p.add_argument("--text-col", "--text-column", help=f"text column of a table task (default: text{resumed})")
    p.add_argument("--label-col", "--label-column", help=f"label column of a table task (default: label{resumed})")
    p.add_argument("--max-chars", type=int, help=f"keep the first MAX_CHARS of a passage, 0: all (default: 600{resumed})")
    p.add_argument("--split-seed", type=seed, help="seed of the 80/10/10 split of a table without a split column "
                   f"(default: 0{resumed})")
    p.add_argument("--out", required=True, help="run directory (model/, checkpoints/, history.csv, metrics.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    add_config_flags(p, FINETUNE_SECTIONS, {"finetune": FinetuneConfig(), "train": FinetuneConfig().train},
                     without=("train.parallel",))  # one process (`run.check_one_process`)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("seq2seq-train", help="train an encoder-decoder translator: dates in ten locales -> ISO, or your pairs")
    p.add_argument("--task", help=f"dates (built in) or a .tsv/.csv/.jsonl file of pairs (default: dates{resumed})")
    p.add_argument("--source-col", "--source-column", help=f"source column of a file of pairs (default: source{resumed})")
    p.add_argument("--target-col", "--target-column", help=f"target column of a file of pairs (default: target{resumed})")
    p.add_argument("--split-seed", type=seed, help=f"seed of the date draw, or of a file's 80/10/10 split (default: 0{resumed})")
    p.add_argument("--locales", type=parse_locales, help=f"dates: comma-separated CLDR locales (default: en,fr,de,es,it,pt,nl,ru,zh,ja{resumed})")
    p.add_argument("--n-train", type=int, help=f"dates: training pairs drawn (default: 20000{resumed})")
    p.add_argument("--n-val", type=int, help=f"dates: validation pairs drawn (default: 500{resumed})")
    p.add_argument("--n-test", type=int, help=f"dates: test pairs drawn (default: 1000{resumed})")
    p.add_argument("--out", required=True, help="run directory (model/, checkpoints/, history.csv, metrics.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    add_config_flags(p, *translation_sections(), without=("train.parallel",))  # one process (`run.check_one_process`)
    p.set_defaults(func=cmd_seq2seq_train)

    p = sub.add_parser("translate", help="translate text with a seq2seq-train checkpoint")
    p.add_argument("--checkpoint", required=True, help="a seq2seq-train --out directory")
    p.add_argument("text", nargs="+", help="one or more source sentences")
    p.add_argument("--beam", type=int, default=1, help="beam width (1: greedy)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("sample", help="generate text from a trained checkpoint (printed as it is decoded)")
    p.add_argument("--checkpoint", required=True, help="a pretrain --out directory or a checkpoint directory")
    escapes = r"; reads the escapes \n, \t, \r, \\ and \uXXXX (write \\ for a backslash)"
    p.add_argument("--prompt", default="\n", help=r"text to continue (default, and for an empty one: \n, a newline)" + escapes)
    p.add_argument("--max-new-tokens", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--num-samples", type=int, default=1,
                   help="samples of the prompt, decoded in one batch; more than one: a line of dashes after each")
    p.add_argument("--seed", type=seed, default=1337, help="seed of the sampling: the same seed and --num-samples, the same samples")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "int8"],
                   help="weights to decode with: auto is a bf16 copy on CUDA, float32 elsewhere; int8 (CPU) "
                        "quantizes the Linear layers")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compile the decode step (default: on CUDA only; it pays off over many tokens)")
    p.add_argument("--stop", action="append", metavar="TEXT",
                   help=r"end the sample at this text (not printed), e.g. --stop '\n'; repeat for several" + escapes)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("export-hf", help="write a Hugging Face GPT2LMHeadModel directory")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export_hf)

    p = sub.add_parser("evaluate", help="evaluation card of a trained checkpoint: bits/char, BLEU/chrF, compression")
    p.add_argument("--checkpoint", required=True, help="a pretrain --out directory or a checkpoint directory")
    p.add_argument("--split", default="val", choices=["val", "test"], help="held-out split of the model's corpus")
    p.add_argument("--out", default=None, help="folder for metrics.json (default: evaluation-SPLIT in the run "
                   "directory of CHECKPOINT)")
    p.add_argument("--prompts", type=int, default=20, help="continuation prompts for BLEU/chrF (0 skips)")
    p.add_argument("--max-chars", type=int, default=None,
                   help="score only the first MAX_CHARS characters of each held-out play (of the split, other corpora)")
    p.add_argument("--compression-chars", type=int, default=20_000,
                   help="characters scored per compression variant (0 skips compression)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the prompts drawn for BLEU/chrF and of compression")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="training and generation speed, MFU and memory of a configuration")
    p.add_argument("--preset", choices=sorted(PRESETS), default="baby", help="model and batch sizes (default: baby)")
    p.add_argument("--iters", type=int, default=50, help="measured iterations after warm-up")
    p.add_argument("--warmup", type=int, default=10, help="iterations left out of the measurement")
    p.add_argument("--no-generation", action="store_true", help="skip the generation benchmark")
    p.add_argument("--no-generation-compile", action="store_true",
                   help="time only the eager decode step (compiling it takes a minute or two)")
    p.add_argument("--no-hf", action="store_true", help="skip Hugging Face generate on the same weights")
    p.add_argument("--loss-memory", action="store_true",
                   help="also measure the step's peak memory with the chunked loss and with full logits")
    p.add_argument("--step-profile", action="store_true",
                   help="also profile a few training steps: time by kind of work (matmul, attention, ...) and the largest kernels")
    p.add_argument("--json", help="also write the figures to this JSON file")
    add_config_flags(p, without=BENCH_SETS)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="run the notebooks with papermill into an HTML + JSON report")
    p.add_argument("--profile", default="default", choices=list(PROFILES),
                   help="passed to every notebook as `profile` (default: default)")
    p.add_argument("--out", default=None, help="report folder (default: reports/<timestamp>)")
    p.add_argument("--notebooks", default=None, help="folder of notebooks (default: the repository's notebooks/)")
    p.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds each cell may run (default: {DEFAULT_TIMEOUT_S})")
    p.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a notebook parameter, for the notebooks that have it, e.g. -p corpus my.txt "
                        "-p classification_task reviews.csv (repeat for several)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="two reports side by side: metrics with differences, settings, environment")
    p.add_argument("report_a", metavar="REPORT_A", help="a report folder (or its report.json): the earlier one")
    p.add_argument("report_b", metavar="REPORT_B", help="the report to compare with it")
    p.set_defaults(func=cmd_compare)
    return parser


def warning_line(message, category, filename, lineno, line=None) -> str:
    """The workbench's own warnings as one `warning: ...` line (Python's format adds the file, line number
    and source line of the `warnings.warn` call, which say nothing to someone running a command)."""
    if Path(filename).resolve().is_relative_to(Path(__file__).resolve().parent):
        return f"warning: {message}\n"
    return DEFAULT_FORMAT(message, category, filename, lineno, line)


DEFAULT_FORMAT = warnings.formatwarning


def error_line(e: Exception) -> str:
    """The one line an error ends a command with: the workbench's own message, or for an error the
    operating system raised ("[Errno 2] No such file or directory: '/proc/x'") the path, the reason and
    what to check."""
    if isinstance(e, OSError) and e.errno is not None:
        if e.filename is None:  # not about a path (a refused connection, too many open files, ...)
            return f"{e.strerror} ({type(e).__name__})"
        return (f"{e.filename}: {e.strerror}; check the path, its permissions and the free disk space, or choose "
                "another path")
    return str(e)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.formatwarning = warning_line
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the command's own parser, whose --help lists the flags it takes
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    from .run import COMMAND_LINE

    workbench_log = logging.getLogger("workbench")
    level = workbench_log.level
    if args.command in ("pretrain", "finetune", "seq2seq-train"):  # what a run read, resumed from, stopped at
        workbench_log.setLevel(logging.INFO)
    command_line = COMMAND_LINE.set(True)  # an interrupted run names the command that continues it
    try:
        args.func(args)
    except KeyboardInterrupt:  # Ctrl-C where there is nothing to save (sample, evaluate; training's second one)
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`sample | head`): stop quietly, as Unix tools do
        # (what is still buffered would raise again at exit: send it nowhere, as Python's docs advise)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, OSError) as e:  # user errors, and a path the system refuses: one line, no traceback
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    finally:
        workbench_log.setLevel(level)  # main() called in a process that goes on (a test, a notebook)
        COMMAND_LINE.reset(command_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
