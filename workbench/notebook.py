"""What every notebook does in its first cell: check its parameters, pick its profile's sizes.

Notebooks are thin: a `parameters` cell of literals, then `ctx = start("02_pretraining",
profile=profile, run_dir=run_dir)`. `start` validates the parameters (a bad one stops the
notebook right there with a message naming the parameter and the fix), sets up Plotly for
offline HTML, shows tables' floats to `TABLE_PRECISION` decimals, seeds the RNGs, and returns a
`NotebookContext` with the notebook's settings from its profile (`workbench.profiles`: smoke,
default, full), the run directory where notebooks hand artifacts to each other, and `write_metrics`.
`table(df)` shows a table whose empty places mean "does not apply" with a dash, not `NaN`, and
integers without decimals; `text_table(df)` shows rows of text whole; `metrics_summary(ctx)` every
headline figure the notebooks wrote; `corpus_text` / `pair_source_text` give a text parameter left at its
default a passage of your own data (and check a char tokenizer knows a text you set).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    import pandas as pd

from .profiles import PROFILES, get_profile

DEFAULT_SEED = 1337  # every notebook's seed unless its caller passes another (recorded in reports)
TABLE_PRECISION = 3  # decimals of a float in a displayed table (the data keeps every digit)
# The text parameters the notebooks ship with (a test holds them equal to the parameters cells): lines of
# the plays, which a character tokenizer of another corpus may not know (`corpus_text` swaps them).
DEFAULT_TEXTS = {
    "01_attention": {"text": "To be, or not to be, that is the question"},
    "02_pretraining": {"probe_text": "To be, or not to be, that is the question", "sample_prompt": "ROMEO:\n"},
    "05_seq2seq": {"explore_text": "jeudi 26 novembre 2026"},
    "06_interpretability": {"probe_text": "ROMEO:\nBut soft, what light through yonder window breaks?"},
}
MIN_PASSAGE_CHARS = 20  # a line of the corpus shorter than this is no passage to stand in for a default text


@dataclass
class NotebookContext:
    name: str
    profile: str
    run_dir: Path
    settings: Any = None  # this notebook's settings of the profile (workbench.profiles)

    def settings_of(self, notebook: str) -> Any:
        """Another notebook's settings in this profile, e.g. ctx.settings_of("03_finetuning").max_chars."""
        return get_profile(self.profile).for_notebook(notebook)

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """Write this notebook's headline metrics to run_dir/metrics/<notebook>.json (returns nothing,
        so a notebook's last line shows no path)."""
        from .checkpoint import write_json

        out = self.path("metrics", f"{self.name}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, metrics)

    def require(self, relative: str, producer: str) -> Path:
        """Path of an artifact another notebook writes; stops with a message naming that notebook."""
        path = self.path(relative)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run notebooks/{producer}.ipynb first with the same "
                                    f"run_dir={str(self.run_dir)!r} (or `python -m workbench report`)")
        return path


def _check_type(name: str, value: Any, kinds: tuple[type, ...], example: str) -> None:
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        raise TypeError(f"parameter {name} must be {' or '.join(k.__name__ for k in kinds)}, "
                        f"got {type(value).__name__} {value!r}; set e.g. {name} = {example}")


def start(name: str, profile: Any = "default", run_dir: Any = "../runs/notebooks", seed: Any = DEFAULT_SEED,
          outputs: tuple[str, ...] = (), requires: dict[str, str] | None = None, **params: Any) -> NotebookContext:
    """Validate a notebook's parameters and prepare the kernel; returns the NotebookContext.

    Args:
        name: the notebook's file stem, e.g. "02_pretraining".
        profile: "smoke" | "default" | "full".
        run_dir: where notebooks exchange artifacts (checkpoints, metrics/).
        seed: seeds python, numpy and torch.
        outputs: folders under run_dir this notebook creates; if one exists already the notebook stops
            here rather than overwrite an earlier run.
        requires: artifacts under run_dir this notebook reads -> the notebook that writes them.
        params: other parameters, given as name=(value, expected type or tuple of types, example).
    """
    _check_type("profile", profile, (str,), '"default"')
    if profile not in PROFILES:
        raise ValueError(f"parameter profile={profile!r} is not one of {', '.join(PROFILES)}; "
                         f'set profile = "smoke" (CI), "default" (laptop CPU) or "full" (GPU)')
    _check_type("run_dir", run_dir, (str, Path), '"../runs/notebooks"')
    _check_type("seed", seed, (int,), "1337")
    for pname, (value, kinds, example) in params.items():
        _check_type(pname, value, kinds if isinstance(kinds, tuple) else (kinds,), example)
    run_path = Path(run_dir).expanduser().resolve()
    for folder in outputs:
        if (run_path / folder).exists():
            raise FileExistsError(f"run_dir={str(run_dir)!r} already holds {folder}/ from an earlier run; "
                                  f"set run_dir to a new folder (or delete {run_path / folder}) to run again")
    if run_path.exists() and not run_path.is_dir():
        raise ValueError(f"run_dir={str(run_dir)!r} is a file; set run_dir to a folder (new or from earlier notebooks)")
    run_path.mkdir(parents=True, exist_ok=True)
    ctx = NotebookContext(name=name, profile=profile, run_dir=run_path,
                          settings=get_profile(profile).for_notebook(name))
    for relative, producer in (requires or {}).items():
        ctx.require(relative, producer)

    import pandas as pd

    from .viz import setup_notebook

    setup_notebook()
    pd.set_option("display.precision", TABLE_PRECISION)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return ctx


def _number_text(value: Any, precision: int) -> str:
    """One table value as text: an integer without decimals, a float to `precision` decimals, or to none
    from 1,000 up, where decimals are noise (18,264 tokens/s, not 18,264.429); thousands separators on
    both; anything else as str."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return f"{value:,.{0 if abs(value) >= 1000 else precision}f}"


def _column_decimals(column: pd.Series, precision: int) -> int | None:
    """The decimals of every value of a float column, so that a column reads alike: none where each of
    its values is 1,000 or more, else `precision`. None for another column (shown value by value)."""
    import pandas as pd

    if not pd.api.types.is_float_dtype(column):
        return None
    finite = column[np.isfinite(column)]
    return 0 if len(finite) and (finite.abs() >= 1000).all() else precision


def table(df: pd.DataFrame | pd.Series, precision: int = TABLE_PRECISION, na_rep: str = "—"):
    """`df` for display: integers without decimals, floats to `precision` decimals (none in a column
    whose values are all 1,000 or more), thousands separators, and a missing value (a token position one tokenizer does not reach, the sparsity of
    an int8 model) as `na_rep` rather than NaN. The data is unchanged.

    Integers are told by their type, never guessed from a float's value (an accuracy of exactly 1.0
    still reads 1.000): keep counts integer where they are made, as "Int64" where a count column has
    a missing value, as an object Series where one Series mixes counts and floats.

    Args:
        df: the table; a Series is shown as a one-column table named after it (else "value").
        precision: decimals of a float.
        na_rep: the text of a missing value.
    Returns:
        a pandas Styler of `df` (its `.data` is the frame shown).
    """
    import pandas as pd

    if isinstance(df, pd.Series):
        df = df.to_frame("value" if df.name is None else df.name)
    styler = df.style.format(lambda v: _number_text(v, precision), na_rep=na_rep)
    for i, column in enumerate(df.columns):  # a float column by its values together (999.500 above 1,000.500)
        decimals = _column_decimals(df.iloc[:, i], precision)
        if decimals is not None:
            styler = styler.format(lambda v, d=decimals: f"{v:,.{d}f}", subset=[column], na_rep=na_rep)
    return styler


def text_table(df: pd.DataFrame, precision: int = TABLE_PRECISION, na_rep: str = "—"):
    """`table(df)` for rows of text (generated samples, passages): every text column shown whole
    (not cut at pandas' display.max_colwidth), left-aligned, its line breaks kept and long lines
    wrapped.

    Args:
        df: the table; its non-numeric columns are the text columns.
        precision, na_rep: as `table`.
    Returns:
        a pandas Styler of `df`.
    """
    import pandas as pd

    text = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    return table(df, precision, na_rep).set_properties(subset=text, **{"white-space": "pre-wrap",
                                                                        "text-align": "left"})


def trained_gpt(ctx: NotebookContext, config):
    """The GPT that 02_pretraining left in run_dir when it read the same corpus as `config` (a RunConfig),
    else a small one trained here as `config` says, in run_dir/attention_gpt: a later run with the same
    run_dir reuses it (or finishes it, if interrupted); one trained with other settings (another corpus
    or profile) stops the notebook, naming what differs and the fix (a new run_dir).

    Returns:
        (model, tokenizer, where it came from)
    """
    from .pretrain import load_pretrained, pretrain

    if ctx.path("pretrain", "model", "model.safetensors").exists():
        model, tokenizer, saved = load_pretrained(ctx.path("pretrain"))
        if not _settings_differ(saved, config, ("data",)):
            return model, tokenizer, str(ctx.path("pretrain"))
    folder = ctx.path("attention_gpt")
    if (folder / "model" / "model.safetensors").exists():
        model, tokenizer, saved = load_pretrained(folder)
        if differ := _settings_differ(saved, config, ("data", "model", "train")):
            raise FileExistsError(f"run_dir={str(ctx.run_dir)!r} already holds attention_gpt/, trained with other "
                                  f"settings ({differ}): set run_dir to a new folder, or delete {folder}")
        return model, tokenizer, str(folder)
    result = pretrain(config, folder, progress=False, resume="auto")
    return result.model.cpu().eval(), result.tokenizer, str(folder)


def _settings_differ(saved, config, sections: tuple[str, ...]) -> str:
    """What differs between a saved run's RunConfig and `config` in `sections`, e.g. "data.corpus:
    'shakespeare' -> '/d/my.csv'" ("" when nothing does). A corpus path is compared resolved, as
    `pretrain` saves it (`data.corpus_spec`); the vocabulary size is the tokenizer's, not a setting."""
    from .data import corpus_spec

    def flat(run) -> dict[str, Any]:
        values = {f"{section}.{k}": v for section in sections for k, v in asdict(getattr(run, section)).items()}
        if "data.corpus" in values:
            values["data.corpus"] = corpus_spec(values["data.corpus"])
        values.pop("model.vocab_size", None)
        return values

    before, now = flat(saved), flat(config)
    return "; ".join(f"{k}: {before[k]!r} -> {now[k]!r}" for k in now if before.get(k) != now[k])


def trained_gpt_with_snapshots(ctx: NotebookContext, config, every: int):
    """The GPT 02_pretraining left in run_dir with the weight snapshots it kept along the way, else a
    small one trained here as `config` (a RunConfig) says, keeping its weights every `every` steps.

    Returns:
        (model, tokenizer, RunConfig, snapshots [(step, directory)] by step, where the model came
        from). A 02 run that kept no snapshots gives its final model as the only one, with a warning.
    """
    import warnings

    from .interpret import snapshot_steps
    from .pretrain import WeightSnapshots, load_pretrained, pretrain, run_metrics

    if ctx.path("pretrain", "model", "model.safetensors").exists():
        model, tokenizer, config = load_pretrained(ctx.path("pretrain"))
        snapshots = snapshot_steps(ctx.path("pretrain_snapshots"))
        if not snapshots:
            warnings.warn(f"{ctx.path('pretrain')} kept no weight snapshots (pretrain_snapshots/); showing its "
                          "final model only: run 02_pretraining again in a new run_dir to see training unfold")
            has_metrics = ctx.path("pretrain", "metrics.json").exists()
            step = run_metrics(ctx.path("pretrain")).get("final_step", 0) if has_metrics else 0
            snapshots = [(int(step), ctx.path("pretrain", "model"))]
        return model, tokenizer, config, snapshots, str(ctx.path("pretrain"))
    folder = ctx.path("interpret_gpt")
    result = pretrain(config, folder, callbacks=[WeightSnapshots(ctx.path("interpret_gpt_snapshots"), every)],
                      progress=False, resume="auto")
    snapshots = snapshot_steps(ctx.path("interpret_gpt_snapshots"))
    return result.model.cpu().eval(), result.tokenizer, result.config, snapshots, str(folder)


def _shown(text: str, limit: int = 60) -> str:
    """`text` quoted for a one-line message, cut to about `limit` characters."""
    return repr(text if len(text) <= limit else text[:limit - 1] + "…")


def _first_words(line: str, chars: int) -> str:
    """The words that open `line`, as many as fit in `chars` characters; its first `chars` characters when
    its first word is longer (a language written without spaces, code)."""
    if len(line.split(" ", 1)[0]) > chars:
        return line[:chars]
    out = ""
    for word in (w for w in line.split(" ") if w):  # split at spaces only: the line shows them
        if out and len(out) + 1 + len(word) > chars:
            break
        out = f"{out} {word}" if out else word
    return out


def corpus_text(ctx: NotebookContext, parameter: str, text: str, corpus, *tokenizers) -> str:
    """The text a notebook shows for its text parameter `parameter` (01's `text`, 02's `probe_text`...).

    Left at the notebook's default (`DEFAULT_TEXTS`, a line of the plays) while the corpus is another,
    it becomes a passage of `corpus` about as long, with one printed line saying so: the opening words of
    the first whole line of its validation text (else its training text) of at least MIN_PASSAGE_CHARS
    characters that the tokenizers know. Otherwise it is `text`, which every character tokenizer among
    `tokenizers` must know each character of (a byte-level BPE encodes any text): a text the user set
    with characters the corpus never shows stops the notebook with a ValueError naming the parameter.

    Args:
        ctx: the notebook's context (its name picks the default).
        parameter: the parameter's name, e.g. "text".
        text: its value.
        corpus: the `data.Corpus` the tokenizers were trained on.
        tokenizers: the tokenizers that will encode the text.
    Returns:
        the text to use.
    """
    alphabets = [set(tok.chars) for tok in tokenizers if tok.kind == "char"]
    unseen = sorted({c for known in alphabets for c in set(text) - known})
    chars = ", ".join(map(repr, unseen[:10])) + (", ..." if len(unseen) > 10 else "")
    default = DEFAULT_TEXTS.get(ctx.name, {}).get(parameter)
    if text != default or (corpus.name == "shakespeare" and not unseen):
        if unseen:
            raise ValueError(f"{parameter}={_shown(text)} has characters {corpus.name} never shows ({chars}), "
                             f"which its char tokenizer cannot encode: set {parameter} to text of that corpus "
                             f"({parameter}=\"...\"; in a report -p {parameter} \"...\")")
        return text
    val_lines = corpus.splits["val"].split("\n")
    # val's first line is where the 90% cut fell, most likely mid-sentence: every other whole line comes first
    lines = val_lines[1:] + corpus.train_text.split("\n") + val_lines[:1]
    known = set.intersection(*alphabets) if alphabets else None
    line = next((ln.strip() for ln in lines if len(ln.strip()) >= MIN_PASSAGE_CHARS
                 and (known is None or set(ln.strip()) <= known)), None)
    why = f"has characters {corpus.name} never shows ({chars})" if unseen else "is a line of the plays"
    if line is None:
        raise ValueError(f"{parameter}={_shown(text)} {why}, and no line of {corpus.name} has {MIN_PASSAGE_CHARS} "
                         f"characters to show instead: set {parameter} to text of that corpus ({parameter}=\"...\"; "
                         f"in a report -p {parameter} \"...\")")
    passage = _first_words(line, len(default))
    print(f"{parameter}: {_shown(text)} {why}; using {_shown(passage)} from {corpus.name} (set {parameter} to choose)")
    return passage


def pair_source_text(ctx: NotebookContext, parameter: str, text: str, task) -> str:
    """05's text to translate (`explore_text`): left at its default (a date) for a task of your own pairs,
    the first test source instead, with one printed line; else `text`.

    Args:
        task: the `translation.PairTask` the model was trained on.
    """
    if text != DEFAULT_TEXTS.get(ctx.name, {}).get(parameter) or task.name == "dates":
        return text
    source = str(task.test["source"].iloc[0])
    print(f"{parameter}: {_shown(text)} is a date; using {_shown(source)}, the first test source of {task.name} "
          f"(set {parameter} to choose)")
    return source


def finetune_task(ctx: NotebookContext, spec: str | None = None, text_col: str = "text", label_col: str = "label"):
    """The classification task of 03_finetuning, its passages cut (`max_chars`) and subsampled
    (`per_label`) as the profile's 03 settings say: `spec` ("genre" or a CSV/TSV/JSONL file, with its
    text and label columns), or with `spec` None the task 03 recorded in its metrics
    (`finetune_task_metrics`; 04 scores 03's classifiers on it; "genre" for a 03 that recorded none).
    Where the subsample leaves rows out, one printed line gives each split's rows before and after."""
    from .checkpoint import read_json
    from .tasks import load_task

    if spec is None:
        recorded = read_json(ctx.require("metrics/03_finetuning.json", "03_finetuning"))
        spec, text_col, label_col = (recorded.get("task", "genre"), recorded.get("task_text_col", "text"),
                                     recorded.get("task_label_col", "label"))
    s = ctx.settings_of("03_finetuning")
    whole = load_task(spec, text_col, label_col, max_chars=s.max_chars)
    task = whole.subsample(s.per_label)
    sizes = {split: (len(whole.split(split)), len(task.split(split))) for split in ("train", "val", "test")}
    if any(before != after for before, after in sizes.values()):
        print(f"{ctx.profile} profile: at most {s.per_label} passages per label in each split (per_label); "
              + ", ".join(f"{split} {before:,} → {after:,}" for split, (before, after) in sizes.items()))
    return task


def finetune_task_metrics(spec: str, text_col: str = "text", label_col: str = "label") -> dict[str, str]:
    """What 03_finetuning records of its task in its metrics, for `finetune_task` in 04: a file as its
    absolute path (04 may run from another folder)."""
    return {"task": spec if spec == "genre" else str(Path(spec).expanduser().resolve()), "task_text_col": text_col,
            "task_label_col": label_col}


def seq2seq_task(ctx: NotebookContext, spec: str = "dates", source_col: str = "source", target_col: str = "target",
                 locales: str | None = None):
    """The translation task of 05_seq2seq, chosen as `seq2seq-train`'s task flags choose it: "dates" (drawn
    at the profile's 05 sizes, in `locales`: comma-separated CLDR codes such as "en,de", None for all
    ten) or a .tsv/.csv/.jsonl file of pairs with its `source_col` and `target_col`. A parameter the
    chosen task would not read is refused, as the command line refuses its flag.

    Returns:
        a `translation.PairTask`.
    """
    from .translation import DATE_LOCALES, load_pairs, parse_locales

    chosen = list(DATE_LOCALES) if locales is None else parse_locales(locales)
    if spec != "dates":
        if chosen != list(DATE_LOCALES):
            raise ValueError(f"locales={locales!r} chooses the date task's locales; translation_task={spec!r} is a "
                             "file of pairs: leave locales at its default (a locale column in the file gives "
                             "per-locale scores)")
        return load_pairs(spec, source_col, target_col)
    if (source_col, target_col) != ("source", "target"):
        raise ValueError(f"source_col={source_col!r}, target_col={target_col!r} name the columns of a file of pairs; "
                         "the date task reads none: set translation_task to your file, or leave them \"source\", "
                         "\"target\"")
    s = ctx.settings_of("05_seq2seq")
    return load_pairs("dates", n_train=s.n_train, n_val=s.n_val, n_test=s.n_test, locales=chosen)


def _finetune_runs(ctx: NotebookContext) -> list[Path]:
    """The run directories 03_finetuning saved under run_dir/finetune/<mode>, by mode."""
    root = ctx.require("finetune", "03_finetuning")
    return [p for p in sorted(root.iterdir()) if (p / "model" / "model.safetensors").exists()
            or (p / "model.safetensors").exists()]


def finetuned_classifiers(ctx: NotebookContext, modes: list[str] | None = None) -> dict[str, Any]:
    """Every classifier 03_finetuning saved under run_dir/finetune/<mode> (or those of `modes`), by mode."""
    from .finetune import load_finetuned

    return {p.name: load_finetuned(p) for p in _finetune_runs(ctx) if modes is None or p.name in modes}


def finetuned_probabilities(ctx: NotebookContext, task: Any, split: str = "test") -> dict[str, Any]:
    """Class probabilities (N, num_labels) of every classifier 03_finetuning saved, on `split` of `task`,
    by mode: those each run saved when it finished (`finetune.load_predictions`: its best weights in
    its training dtype, the numbers behind 03's table) when they cover exactly these passages, else
    the saved classifier scores the split here."""
    from .finetune import load_finetuned, load_predictions

    out = {}
    for path in _finetune_runs(ctx):
        probs = load_predictions(path, task, split)
        out[path.name] = probs if probs is not None else load_finetuned(path).predict_proba(task.split(split)["text"].tolist())
    return out


def metrics_summary(ctx: NotebookContext) -> pd.DataFrame:
    """The headline figures every notebook has written so far to run_dir/metrics/*.json, one row per
    figure (show it with `table`, which shows every row: pandas' repr would cut a long one to its
    first and last rows). Lists are left out; a path under run_dir is written relative to it
    ("run_dir/pretrain").

    Returns:
        DataFrame notebook | metric | value (object values: counts stay integers).
    """
    import pandas as pd

    rows = []
    for path in sorted(ctx.path("metrics").glob("*.json")):
        for key, value in json.loads(path.read_text()).items():
            if isinstance(value, str) and Path(value).is_absolute() and Path(value).is_relative_to(ctx.run_dir):
                value = str(Path("run_dir") / Path(value).relative_to(ctx.run_dir))
            if isinstance(value, (int, float, str, bool)) or value is None:
                rows.append({"notebook": path.stem, "metric": key, "value": value})
    return pd.DataFrame(rows, columns=["notebook", "metric", "value"], dtype=object)


def stream_sample(model, tokenizer, prompt: str, max_new_tokens: int, refresh_s: float = 0.1, **sampling) -> str:
    """Show a continuation of `prompt` in the cell's output as it is decoded, and return it.

    In JupyterLab the text grows live (one display, updated in place); a report run by papermill
    keeps the finished text, so the HTML shows it too. Outside IPython (a script, a test) the
    prompt and the text are printed as they are decoded instead. Decoding is `generate.stream_text`
    (the static-cache engine), so the text equals `generate_text`'s for the same settings.

    Args:
        model: a GPT; tokenizer: its tokenizer; prompt: the text to continue (shown first, in bold).
        refresh_s: seconds between redraws (each is a message to the browser).
        sampling: temperature, top_k, top_p, seed, stop (strings), stop_tokens.
    Returns:
        the continuation, without the prompt.
    """
    import html
    import time

    from IPython.display import HTML, display

    from .generate import Engine, stream_text

    def page(text: str) -> HTML:
        return HTML(f"<pre style='white-space: pre-wrap'><b>{html.escape(prompt)}</b>{html.escape(text)}</pre>")

    handle = display(page(""), display_id=True)
    pieces_of = stream_text(Engine(model, compile=False), tokenizer, [prompt], max_new_tokens, **sampling)
    if handle is None:
        # Outside IPython display() only prints the object's repr and returns no handle to update:
        # print the plain text as it is decoded instead.
        print(prompt, end="", flush=True)
        text = ""
        for pieces in pieces_of:
            text += pieces[0]
            print(pieces[0], end="", flush=True)
        print()
        return text
    text, shown_at = "", time.perf_counter()
    for pieces in pieces_of:
        text += pieces[0]
        if time.perf_counter() - shown_at > refresh_s:
            handle.update(page(text))
            shown_at = time.perf_counter()
    handle.update(page(text))
    return text
