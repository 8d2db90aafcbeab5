"""What every notebook does in its first cell: check its parameters, pick its profile's sizes.

Notebooks are thin: a `parameters` cell of literals, then `ctx = start("02_pretraining",
profile=profile, run_dir=run_dir)`. `start` validates the parameters (a bad one stops the
notebook right there with a message naming the parameter and the fix), sets up Plotly for
offline HTML, seeds the RNGs, and returns a `NotebookContext` with the profile's settings,
the run directory where notebooks hand artifacts to each other, and `write_metrics`.

Profiles: `smoke` (CI: each notebook within a minute on 2 cores), `default` (a laptop CPU:
the whole set within ten minutes, with results worth looking at), `full` (GPU-sized).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    import pandas as pd

PROFILES = ("smoke", "default", "full")

# Per notebook and profile: the sizes the notebook's cells read from ctx.settings.
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "01_attention": {
        # a small GPT trained on the spot when 02_pretraining has not left one in run_dir
        "smoke": {"gpt": {"preset": "smoke", "train": {"max_iters": 40}}},
        "default": {"gpt": {"preset": "smoke", "model": {"block_size": 64, "n_layer": 2, "n_head": 4, "n_embd": 64},
                            "train": {"max_iters": 300, "eval_interval": 100, "batch_size": 16, "lr": 3e-3}}},
        "full": {"gpt": {"preset": "cpu"}},
    },
    "02_pretraining": {
        "smoke": {
            "run": {"preset": "smoke", "data": {"tokenizer": "bpe", "vocab_size": 512},
                    "train": {"max_iters": 40, "eval_interval": 20}},
            "sweep": {"n_embd": [16, 32, 48], "n_layer": 1, "n_head": 2, "max_iters": 15},
        },
        "default": {
            "run": {"preset": "cpu", "data": {"tokenizer": "bpe", "vocab_size": 2048},
                    "model": {"block_size": 128, "n_layer": 4, "n_head": 4, "n_embd": 128, "pos_encoding": "rope"},
                    "train": {"max_iters": 900, "eval_interval": 150, "eval_iters": 20, "lr": 2e-3,
                              "min_lr": 2e-4}},
            "sweep": {"n_embd": [32, 64, 128], "n_layer": 2, "n_head": 4, "max_iters": 120},
        },
        "full": {
            "run": {"preset": "gpu", "data": {"tokenizer": "bpe", "vocab_size": 8192}},
            "sweep": {"n_embd": [128, 256, 384], "n_layer": 6, "n_head": 6, "max_iters": 1000},
        },
    },
    "03_finetuning": {
        "smoke": {"max_chars": 300, "per_label": 24, "modes": ["full", "frozen", "scratch", "lora", "multitask", "hf"], "seeds": [0],
                  "mode_seeds": {}, "config": {"max_steps": 8, "max_len": 32, "batch_size": 8, "eval_interval": 4},
                  "overrides": {"hf": {"max_steps": 4}}},
        # 200-character passages (~70 BPE tokens): max_len 80 lets the GPT read what TF-IDF reads
        "default": {"max_chars": 200, "per_label": None, "modes": ["full", "frozen", "scratch", "lora", "multitask", "hf"],
                    "seeds": [0, 1, 2], "mode_seeds": {"hf": [0]},
                    # dropout 0: the same validation F1 as 0.1 and 30% faster on CPU
                    "config": {"max_steps": 200, "max_len": 80, "batch_size": 16, "eval_interval": 100, "dropout": 0.0},
                    "overrides": {"full": {"lr": 2e-3}, "multitask": {"lr": 2e-3}, "scratch": {"lr": 1e-3},
                                  "lora": {"lr": 5e-3}, "hf": {"lr": 1e-4, "max_steps": 60, "eval_interval": 60,
                                                               "dropout": 0.1, "dtype": "bfloat16"}}},
        "full": {"max_chars": 600, "per_label": None, "modes": ["full", "frozen", "scratch", "lora", "multitask", "hf"],
                 "seeds": [0, 1, 2], "mode_seeds": {},
                 "config": {"epochs": 3, "batch_size": 32}, "overrides": {"hf": {"lr": 5e-5}}},
    },
    "04_evaluation": {
        "smoke": {"per_label": 24, "max_chars": 3000, "n_prompts": 4, "prompt_chars": 120, "continuation_chars": 60,
                  "compression_chars": 3000, "sparsities": [0.5], "classifier_examples": 64, "runs": 2},
        "default": {"per_label": None, "max_chars": None, "n_prompts": 20, "prompt_chars": 200, "continuation_chars": 100,
                    "compression_chars": 20000, "sparsities": [0.25, 0.5, 0.75], "classifier_examples": 400, "runs": 5},
        "full": {"per_label": None, "max_chars": None, "n_prompts": 100, "prompt_chars": 300, "continuation_chars": 150,
                 "compression_chars": 100000, "sparsities": [0.25, 0.5, 0.75, 0.9], "classifier_examples": None,
                 "runs": 5},
    },
}


@dataclass
class NotebookContext:
    name: str
    profile: str
    run_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        """Write this notebook's headline metrics to run_dir/metrics/<notebook>.json."""
        from .checkpoint import write_json

        out = self.path("metrics", f"{self.name}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, metrics)
        return out

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


def start(name: str, profile: Any = "default", run_dir: Any = "../runs/notebooks", seed: Any = 1337,
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
    run_path.mkdir(parents=True, exist_ok=True)
    ctx = NotebookContext(name=name, profile=profile, run_dir=run_path,
                          settings=SETTINGS.get(name, {}).get(profile, {}))
    for relative, producer in (requires or {}).items():
        ctx.require(relative, producer)

    from .viz import setup_notebook

    setup_notebook()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return ctx


def run_config(spec: dict[str, Any], **overrides: dict[str, Any]):
    """A RunConfig from a settings entry {"preset": ..., "data": {...}, "model": {...}, "train": {...}}."""
    from .config import preset

    parts = {k: {**spec.get(k, {}), **overrides.get(k, {})} for k in ("data", "model", "train")}
    return preset(spec.get("preset", "smoke"), **parts)


def trained_gpt(ctx: NotebookContext, spec: dict[str, Any]):
    """The GPT that 02_pretraining left in run_dir, else a small one trained here per `spec`.

    Returns:
        (model, tokenizer, where it came from)
    """
    from .pretrain import load_pretrained, pretrain

    for folder in ("pretrain", "attention_gpt"):
        if ctx.path(folder, "model", "model.safetensors").exists():
            model, tokenizer, _ = load_pretrained(ctx.path(folder))
            return model, tokenizer, str(ctx.path(folder))
    result = pretrain(run_config(spec), ctx.path("attention_gpt"), progress=False)
    return result.model.cpu().eval(), result.tokenizer, str(ctx.path("attention_gpt"))


def finetuned_classifiers(ctx: NotebookContext) -> dict[str, Any]:
    """Every classifier 03_finetuning saved under run_dir/finetune/<mode>, by mode."""
    from .finetune import load_finetuned

    root = ctx.require("finetune", "03_finetuning")
    return {p.name: load_finetuned(p) for p in sorted(root.iterdir()) if (p / "model" / "model.safetensors").exists()
            or (p / "model.safetensors").exists()}


def metrics_summary(ctx: NotebookContext) -> pd.DataFrame:
    """The headline numbers every notebook wrote to run_dir/metrics/*.json, one row per figure."""
    import pandas as pd

    rows = []
    for path in sorted(ctx.path("metrics").glob("*.json")):
        for key, value in json.loads(path.read_text()).items():
            if isinstance(value, (int, float, str, bool)) or value is None:
                rows.append({"notebook": path.stem, "metric": key, "value": value})
    return pd.DataFrame(rows)
