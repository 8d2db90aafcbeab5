"""The command line: pretrain / sample / export-hf end to end on a tiny corpus, exact resume,
presets and flags, and bad input that ends in one `error:` line, exit status 2, and no file
of an existing run touched."""

import contextlib
import hashlib
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import cli, tiny_rows
from safetensors.torch import load_file

from workbench.pretrain import load_pretrained
from workbench.train import uses_bf16
from workbench.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parent.parent
WORDS = ("the king queen of love and night shall speak to my lord with gentle heart upon this day "
         "sweet fair good noble heaven earth sword crown blood tears mercy honour father mother son "
         "daughter friend enemy war peace death life time sorrow joy fortune grace").split()
SPEAKERS = ("KING", "QUEEN", "ROMEO", "JULIET", "HAMLET")
# A tiny model, set by flags (no preset), 20 steps with an evaluation and checkpoint every 10.
TINY = ["--tokenizer", "char", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
        "--batch-size", "8", "--max-iters", "20", "--eval-interval", "10", "--warmup-iters", "5",
        "--eval-iters", "4", "--device", "cpu", "--seed", "7"]
METRIC_KEYS = ("val_loss", "tokens_per_s", "ms_per_iter_median", "wall_s", "params")


def english_like(n_speeches: int = 50, seed: int = 0) -> str:
    """About 8 KB of play-shaped text: speaker lines and short sentences from a small word list."""
    rng = random.Random(seed)
    # Every capital first, so the char tokenizer (trained on the first 90%) knows all of val's characters.
    lines = [" ".join(w.capitalize() for w in WORDS) + ".,;!?", ""]
    for _ in range(n_speeches):
        lines.append(rng.choice(SPEAKERS) + ":")
        for _ in range(4):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 9)))
            lines.append(words.capitalize() + rng.choice(".,;!?"))
        lines.append("")
    return "\n".join(lines)


def cli_subprocess(*argv, cwd: Path) -> subprocess.CompletedProcess:
    """Run the real `python -m workbench ARGV` in a child process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "workbench", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def snapshot(path: Path) -> dict | None:
    """Every file below `path` with its mtime and content hash (None when `path` does not exist)."""
    if not path.exists():
        return None
    if path.is_file():
        return {".": (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())}
    return {p.relative_to(path).as_posix(): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            if p.is_file() else "dir" for p in sorted(path.rglob("*"))}


def assert_user_error(code: int, err: str, fix: str) -> str:
    """Exit status 2, stderr exactly one `error: ...` line that contains `fix`, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert fix in lines[0], f"{fix!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    """Encoded splits go to a throwaway cache, not the repository's data/cache."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "plays.txt"
    path.write_text(english_like(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus) -> tuple[Path, str]:
    """One finished tiny run, shared (read-only) by the tests below: (run dir, printed summary)."""
    out = tmp_path_factory.mktemp("runs") / "base"
    code, stdout, err = cli("pretrain", "--corpus", corpus, *TINY, "--out", out)
    assert code == 0, err
    return out, stdout


# --------------------------------------------------------------------------- pretrain
def test_pretrain_writes_model_history_and_metrics(trained):
    out, stdout = trained
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (out / "model" / name).is_file()
    history = pd.read_csv(out / "history.csv")
    assert history["step"].max() == 20 and history["val_loss"].notna().sum() == 2  # evals at 10 and 20
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= metrics.keys() and math.isfinite(metrics["val_loss"])
    assert metrics["params"] == load_pretrained(out)[0].num_params()
    # every step trains on 8 x 32 tokens: tokens/s and the median step time must say so
    assert metrics["tokens_per_s"] * metrics["ms_per_iter_median"] / 1000 == pytest.approx(8 * 32)
    assert metrics["wall_s"] >= metrics["train_s"] > 0  # the whole command takes at least its training steps
    assert metrics["final_step"] == 20 and metrics["tokenizer"] == "char"
    state = json.loads((out / "checkpoints" / "step-0000020" / "state.json").read_text())
    assert metrics["compute_dtype"] == state["compute_dtype"] in ("bfloat16", "float32")  # what --dtype auto chose
    if uses_bf16(torch.device("cpu"), "auto"):
        # evaluated under bf16 autocast: the whole split scored again in fp32 (test_evaluate.py checks the figure)
        assert metrics["val_loss"] == pytest.approx(history["val_loss"].min(), abs=0.01)
    else:  # eval_iters unset: training's own evaluations scored the whole split in fp32
        assert metrics["val_loss"] == history["val_loss"].min()
    model = json.loads((out / "model" / "config.json").read_text())["model"]
    assert (model["n_layer"], model["n_head"], model["n_embd"], model["block_size"]) == (2, 2, 32, 32)
    text = english_like()
    assert model["vocab_size"] == metrics["vocab_size"] == len(set(text[:int(0.9 * len(text))]))
    assert f"checkpoint: {out / 'model'}" in stdout
    assert f"val_loss {metrics['val_loss']:.4f}" in stdout


def test_pretrain_with_bpe_tokenizer(tmp_path, corpus):
    out = tmp_path / "bpe"
    code, _, err = cli("pretrain", "--corpus", corpus, *TINY, "--tokenizer", "bpe", "--vocab-size", "300",
                       "--max-iters", "4", "--eval-interval", "4", "--out", out)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    # The 8 KB corpus has enough repeated words for BPE to learn all 300 - 257 merges.
    assert metrics["tokenizer"] == "bpe" and metrics["vocab_size"] == 300
    model, tokenizer, config = load_pretrained(out)
    assert tokenizer.kind == "bpe" and tokenizer.vocab_size == config.model.vocab_size == 300
    assert model.transformer.wte.weight.shape[0] == 300
    assert metrics["train_tokens"] < len(english_like()) * 0.9  # BPE merges: fewer tokens than characters
    # `sample` streams as it decodes, holding back a byte-level token that ends inside a character: what it
    # prints in the end is exactly the library's non-streaming text
    code, stdout, err = cli("sample", "--checkpoint", out, "--prompt", "café —", "--max-new-tokens", "40",
                            "--seed", "3", "--device", "cpu")
    ids = torch.tensor([tokenizer.encode("café —")])
    assert code == 0, err
    assert stdout == tokenizer.decode(model.generate(ids, 40, temperature=0.8, seed=3)[0].tolist()) + "\n"


def test_resume_gives_bit_identical_weights(tmp_path, corpus, trained):
    straight, _ = trained  # 20 steps in one go
    for name, resume_args in (("same-flags", ["--corpus", corpus, *TINY]), ("bare", [])):
        run = tmp_path / name
        shutil.copytree(straight, run)
        # Turn the finished run into one stopped right after its step-10 checkpoint.
        shutil.rmtree(run / "model")
        shutil.rmtree(run / "checkpoints" / "step-0000020")
        (run / "metrics.json").unlink()
        (run / "history.csv").unlink()
        (run / "checkpoints" / "latest").write_text("step-0000010")
        step_10 = snapshot(run / "checkpoints" / "step-0000010")

        code, _, err = cli("pretrain", *resume_args, "--resume", "--out", run)
        assert code == 0, err
        # A restart from step 0 would give the same weights too (same seed), but rewrite step 10.
        assert snapshot(run / "checkpoints" / "step-0000010") == step_10
        assert (run / "checkpoints" / "latest").read_text() == "step-0000020"
        a = load_file(straight / "model" / "model.safetensors")
        b = load_file(run / "model" / "model.safetensors")
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs after resume"
        for column in ("step", "loss", "val_loss"):
            pd.testing.assert_series_equal(pd.read_csv(straight / "history.csv")[column],
                                           pd.read_csv(run / "history.csv")[column])


def test_split_qkv_is_a_pretrain_flag_that_a_resumed_run_may_change(tmp_path, corpus):
    """`--split-qkv` (q, k, v from three matmuls on c_attn's rows): the run's model computes so and its
    config says so; the weights are the same either way, so a resume may drop it (a changed shape may not)."""
    from workbench.pretrain import load_pretrained

    run = tmp_path / "run"
    short = ["--corpus", corpus, *TINY, "--max-iters", "6", "--eval-interval", "3"]
    code, _, err = cli("pretrain", *short, "--split-qkv", "--out", run)
    assert code == 0, err
    model, _, config = load_pretrained(run)
    assert config.model.split_qkv and all(block.attn.split_qkv for block in model.transformer.h)
    shutil.rmtree(run / "model")  # as if stopped after step 3's checkpoint
    shutil.rmtree(run / "checkpoints" / "step-0000006")
    (run / "checkpoints" / "latest").write_text("step-0000003")
    code, _, err = cli("pretrain", *short, "--n-layer", "3", "--resume", "--out", run)
    assert_user_error(code, err, "drop --n-layer")
    code, _, err = cli("pretrain", *short, "--no-split-qkv", "--resume", "--out", run)
    assert code == 0, err
    model, _, config = load_pretrained(run)
    assert not config.model.split_qkv and not any(block.attn.split_qkv for block in model.transformer.h)


# --------------------------------------------------------------------------- flags
def test_preset_sets_defaults_and_explicit_flags_win(tmp_path, corpus):
    out = tmp_path / "preset"
    code, _, err = cli("pretrain", "--corpus", corpus, "--preset", "smoke", "--n-layer", "3",
                       "--max-iters", "2", "--eval-interval", "2", "--device", "cpu", "--out", out)
    assert code == 0, err
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["model"]["n_layer"] == 3  # the flag
    assert (config["model"]["n_head"], config["model"]["n_embd"], config["model"]["block_size"]) == (2, 32, 32)
    assert config["train"]["max_iters"] == 2 and config["train"]["batch_size"] == 8  # flag, preset
    assert config["train"]["eval_iters"] == 4 and config["data"]["tokenizer"] == "char"  # preset


def test_help_lists_the_config_flags():
    code, stdout, _ = cli("pretrain", "--help")
    assert code == 0
    for flag in ("--corpus", "--tokenizer", "--vocab-size", "--n-layer", "--n-head", "--n-embd", "--block-size",
                 "--batch-size", "--grad-accum", "--max-iters", "--lr", "--min-lr", "--warmup-iters",
                 "--weight-decay", "--dropout", "--eval-interval", "--device", "--compile", "--seed",
                 "--resume", "--out", "--preset"):
        assert f"{flag} " in stdout or f"{flag}\n" in stdout or f"{flag}," in stdout, flag
    assert "--vocab-size" in stdout and "default: 2048" in stdout
    code, stdout, _ = cli("sample", "--help")
    assert code == 0
    for flag in ("--checkpoint", "--prompt", "--max-new-tokens", "--temperature", "--top-k", "--top-p", "--seed"):
        assert flag in stdout


def flag_help(stdout: str, flag: str) -> str:
    """The help text argparse prints for `flag`: its line and the lines it wraps onto."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"  {flag}( |,|$)", line))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" " * 6)), len(lines))
    return " ".join(" ".join(lines[start:end]).split())


def test_help_gives_the_defaults_each_command_trains_with():
    """finetune and seq2seq-train start from their own configs, not the dataclasses' defaults."""
    from workbench.config import FinetuneConfig, TrainConfig
    from workbench.translator import TranslationConfig

    code, stdout, _ = cli("finetune", "--help")
    ft = FinetuneConfig().train
    assert code == 0 and ft.batch_size != TrainConfig.batch_size
    assert f"default: {ft.batch_size}" in flag_help(stdout, "--batch-size")
    assert f"default: {ft.epochs}" in flag_help(stdout, "--epochs")
    assert "default: the --mode's learning rate" in flag_help(stdout, "--lr")
    assert "default: 10% of the steps" in flag_help(stdout, "--warmup-iters")
    code, stdout, _ = cli("seq2seq-train", "--help")
    tc = TranslationConfig()
    assert code == 0
    for flag, value in (("--max-tgt-len", tc.model.max_tgt_len), ("--n-embd", tc.model.n_embd),
                        ("--batch-size", tc.train.batch_size), ("--max-iters", tc.train.max_iters), ("--lr", tc.train.lr)):
        assert f"default: {value}" in flag_help(stdout, flag), flag
    code, stdout, _ = cli("pretrain", "--help")
    assert all(name in flag_help(stdout, "--preset") for name in ("smoke", "baby", "cpu", "gpu", "gpt2"))
    assert flag_help(stdout, "--pos-encoding").endswith("one of learned, sinusoidal, rope; default: learned")
    assert "one of auto, float32, bfloat16; default: auto" in flag_help(stdout, "--dtype")
    code, stdout, _ = cli("finetune", "--help")
    assert "one of full, frozen, scratch, lora, multitask, hf; default: full" in flag_help(stdout, "--mode")


# --------------------------------------------------------------------------- sample, export-hf
def test_sample_starts_with_the_prompt_and_follows_the_seed(trained):
    run, _ = trained

    def sample(seed: int) -> str:
        code, stdout, err = cli("sample", "--checkpoint", run, "--prompt", "KING:", "--max-new-tokens", "60",
                                "--seed", seed, "--device", "cpu")
        assert code == 0, err
        return stdout

    first, again, other = sample(1), sample(1), sample(2)
    assert first.startswith("KING:") and len(first.rstrip("\n")) > len("KING:") + 30
    assert first == again
    assert first != other


def test_sample_ends_at_a_stop_string(trained):
    run, _ = trained
    args = ("sample", "--checkpoint", run, "--prompt", "KING:", "--max-new-tokens", "60", "--seed", "1", "--device", "cpu")
    code, full, err = cli(*args)
    assert code == 0, err
    continuation = full[len("KING:"):-1]
    stop = continuation[12:14]
    code, stopped, err = cli(*args, "--stop", stop, "--stop", "\x00never")
    assert code == 0, err
    assert stopped == "KING:" + continuation[: continuation.find(stop)] + "\n"
    code, quantized, err = cli(*args, "--dtype", "int8")  # int8 weights decode (close to) the same text
    assert code == 0, err
    assert len(quantized) == len(full) and len(os.path.commonprefix([quantized, full])) >= len("KING:") + 10


def test_sample_reads_backslash_escapes_in_prompt_and_stop(tmp_path, trained):
    """`--stop '\n'` as a shell passes it (a backslash and an n) ends at a newline, as $'\n' does; the
    prompt reads the same escapes; a malformed escape is one error line before the prompt is printed."""
    run, _ = trained
    args = ("sample", "--checkpoint", run, "--max-new-tokens", "60", "--seed", "2", "--device", "cpu")
    code, full, err = cli(*args, "--prompt", "KING:")
    assert code == 0, err
    continuation = full[len("KING:"):-1]
    assert continuation.find("\n") > 5, continuation  # (seed 2: the first newline after a few characters)
    code, stopped, err = cli(*args, "--prompt", "KING:", "--stop", r"\n")
    assert code == 0, err
    assert stopped == "KING:" + continuation[: continuation.find("\n")] + "\n"
    code, out, err = cli(*args, "--prompt", r"KING\u003a\u0020\n", "--max-new-tokens", "0")
    assert (code, out) == (0, "KING: \n\n"), err
    code, _, err = cli(*args, "--prompt", "Kéng’中")  # non-ASCII reaches the model as typed, not as mojibake
    assert "'é', '’', '中'" in assert_user_error(code, err, "remove them from --prompt")
    for flag, value, problem in (("--stop", "a\\", "--stop ends in a lone \\"),
                                 ("--prompt", r"\x41", r"--prompt has \x"),
                                 ("--stop", r"\u12", r"--stop has \u without four hex digits")):
        code, out, err = cli(*args, "--prompt", "KING:", flag, value)
        assert problem in assert_user_error(code, err, r"write \\ for a backslash") and out == ""
    code, stdout, _ = cli("sample", "--help")
    assert r"reads the escapes \n, \t, \r, \\ and \uXXXX" in flag_help(stdout, "--stop")


def test_unescape_reads_its_escapes_and_keeps_every_other_character():
    from workbench.__main__ import unescape

    assert unescape(r"a\nb\tc\rd\\n\u00e9", "--stop") == "a\nb\tc\rd\\né"
    assert unescape("café ’ 中 \n", "--stop") == "café ’ 中 \n"  # typed characters, a real newline too
    for bad in ("\\", r"\x41", r"\N{BULLET}", r"\ud83d", r"\u00g0", r"\0"):
        with pytest.raises(ValueError, match=r"--prompt .*; the escapes it reads are \\n, "):
            unescape(bad, "--prompt")
    with pytest.raises(ValueError, match=r"^--prompt has a \\ before '\\n'; [^\n]*$"):  # one line, the newline named
        unescape("a\\\nb", "--prompt")


def test_sample_num_samples_are_distinct_separated_and_follow_the_seed(tmp_path, trained):
    """nanoGPT's layout: each sample, prompt first, then a line of dashes; one batch, seeded as a whole."""
    run, _ = trained
    args = ("sample", "--checkpoint", run, "--prompt", "KING:", "--max-new-tokens", "40", "--device", "cpu")

    def samples(*extra) -> list[str]:
        code, out, err = cli(*args, "--num-samples", "3", *extra)
        assert code == 0, err
        parts = out.split("\n---------------\n")
        assert len(parts) == 4 and parts[-1] == "", out  # a line of dashes after each sample
        return parts[:3]

    first = samples("--seed", "1")
    assert all(s.startswith("KING:") and len(s) > len("KING:") + 10 for s in first)
    assert len(set(first)) == 3  # the rows of one batch draw their own tokens
    assert samples("--seed", "1") == first and samples("--seed", "2") != first
    code, greedy, err = cli(*args, "--temperature", "0")
    assert code == 0 and "---" not in greedy, err  # one sample: as before, no dashes
    assert samples("--temperature", "0") == [greedy[:-1]] * 3  # greedy rows are the one greedy sample
    code, out, err = cli("sample", "--checkpoint", tmp_path / "nope", "--num-samples", "0")
    assert_user_error(code, err, "--num-samples must be >= 1, got 0; pass e.g. --num-samples 3")


def test_sample_into_a_pipe_that_closes_early_stops_quietly(trained):
    """`sample ... | head -c 20`: the reader leaves; no BrokenPipeError traceback."""
    run, _ = trained
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "sample", "--checkpoint", str(run), "--max-new-tokens",
                             "5000", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert len(proc.stdout.read(20)) == 20
    proc.stdout.close()  # as head does once it has its bytes
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and err.decode() == ""


def test_export_hf_loads_in_transformers_with_the_same_logits(tmp_path, trained):
    transformers = pytest.importorskip("transformers")
    run, _ = trained
    out = tmp_path / "hf"
    code, _, err = cli("export-hf", "--checkpoint", run, "--out", out)
    assert code == 0, err
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    model, tokenizer, _ = load_pretrained(run)
    idx = torch.tensor([tokenizer.encode("KING:\nGood night, sweet lord.")])
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf(idx).logits
    assert ours.shape == theirs.shape
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)  # the same ids, the same text back
    text = "KING:\nGood night, sweet lord."
    assert hf_tokenizer(text)["input_ids"] == tokenizer.encode(text) and hf_tokenizer.decode(tokenizer.encode(text)) == text
    with pytest.raises(ValueError, match=r"is a Hugging Face model folder \('gpt2'\), not a workbench run; load it "
                                         r"with transformers' from_pretrained, or point at the run it was exported"):
        load_pretrained(out)  # not "lacks tokenizer.json ... copy the missing file again"

    from workbench.checkpoint import new_file_mode  # as readable as the JSON beside it (safetensors writes 0600)

    assert (out / "model.safetensors").stat().st_mode & 0o777 == (out / "config.json").stat().st_mode & 0o777 \
        == new_file_mode()
    before = snapshot(out)
    code, _, err = cli("export-hf", "--checkpoint", run, "--out", out)
    assert_user_error(code, err, "choose an empty --out")
    assert snapshot(out) == before


# --------------------------------------------------------------------------- bad input
def bad_corpus(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.txt"
    content = {"empty": b"", "whitespace": b"  \n\n\t \n", "not-utf8": b"\xff\xfe\x00abc"}.get(kind)
    if content is not None:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("kind, fix", [
    ("empty", "add text to it or choose another corpus"),
    ("whitespace", "add text to it or choose another corpus"),
    ("not-utf8", "re-save it as UTF-8"),
    ("missing", "pass 'shakespeare'"),
])
def test_bad_corpus_is_refused_before_anything_is_written(tmp_path, trained, kind, fix):
    corpus = bad_corpus(tmp_path, kind)
    fresh = tmp_path / "fresh"
    code, _, err = cli("pretrain", "--corpus", corpus, *TINY, "--out", fresh)
    assert_user_error(code, err, fix)
    assert not fresh.exists()

    run, _ = trained
    before = snapshot(run)
    code, _, err = cli("pretrain", "--corpus", corpus, *TINY, "--resume", "--out", run)
    assert_user_error(code, err, fix)
    assert snapshot(run) == before


@pytest.mark.parametrize("flags, fix", [
    (["--n-embd", "30", "--n-head", "4"], "choose n_embd as a multiple of n_head (e.g. --n-embd 32)"),
    (["--block-size", "block_size_over_val"], "lower --block-size or use a larger corpus"),
    (["--tokenizer", "wordpiece"], "pick one of those"),
    (["--tokenizer", "bpe", "--vocab-size", "100"], "use e.g. 2048"),
    (["--min-lr", "1.0"], "lower --min-lr"),
    (["--cuda-graph", "--device", "cpu"], "drop --cuda-graph"),
    (["--vocab-size", "4096"], "add --tokenizer bpe, or drop --vocab-size"),  # TINY's char tokenizer ignores it
    (["--text-column", "body"], "is read as plain text: drop --text-column"),  # a .txt corpus has no columns
])
def test_bad_config_is_refused_before_anything_is_written(tmp_path, corpus, trained, flags, fix):
    text = corpus.read_text(encoding="utf-8")
    val_chars = len(text) - int(0.9 * len(text))
    flags = [str(val_chars + 50) if f == "block_size_over_val" else f for f in flags]  # fits train, not val
    fresh = tmp_path / "fresh"
    code, _, err = cli("pretrain", "--corpus", corpus, *TINY, *flags, "--out", fresh)
    message = assert_user_error(code, err, fix)
    assert not fresh.exists()
    if "--block-size" in flags:
        assert f"the val split has {val_chars} tokens" in message

    run, _ = trained
    before = snapshot(run)
    code, _, err = cli("pretrain", "--corpus", corpus, *TINY, *flags, "--resume", "--out", run)
    message = assert_user_error(code, err, "")
    assert fix in message or "to resume as saved" in message  # or: which flag to drop
    assert snapshot(run) == before


def test_existing_run_is_never_overwritten(tmp_path, corpus, trained):
    run, _ = trained
    before = snapshot(run)
    code, _, err = cli("pretrain", "--corpus", corpus, *TINY, "--out", run)
    assert_user_error(code, err, "pass --resume to continue that run or choose another --out")
    code, _, err = cli("pretrain", "--corpus", corpus, *TINY, "--n-layer", "3", "--resume", "--out", run)
    assert_user_error(code, err, "drop --n-layer")
    code, _, err = cli("pretrain", "--preset", "cpu", "--resume", "--out", run)
    assert_user_error(code, err, "(or the --preset that sets it)")
    assert snapshot(run) == before

    code, _, err = cli("pretrain", "--corpus", corpus, *TINY, "--resume", "--out", tmp_path / "nothing")
    assert_user_error(code, err, "drop --resume to start a new run")
    assert not (tmp_path / "nothing").exists()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    code, _, err = cli("pretrain", "--corpus", corpus, *TINY, "--out", a_file)
    assert_user_error(code, err, "choose a directory path for --out")
    assert a_file.read_text() == "keep me"


def test_tokenizer_that_does_not_fit_the_checkpoint_is_refused(tmp_path, trained):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    train_tokenizer("char", "abc").save(run / "model" / "tokenizer.json")  # 3 tokens, not the model's
    before = snapshot(run)
    code, _, err = cli("sample", "--checkpoint", run, "--max-new-tokens", "5", "--device", "cpu")
    assert_user_error(code, err, "use the tokenizer.json saved with this checkpoint")
    code, _, err = cli("export-hf", "--checkpoint", run, "--out", tmp_path / "hf")
    assert_user_error(code, err, "use the tokenizer.json saved with this checkpoint")
    assert snapshot(run) == before
    assert not (tmp_path / "hf").exists()


def test_sample_refuses_a_missing_checkpoint_and_unknown_prompt_characters(tmp_path, trained):
    code, _, err = cli("sample", "--checkpoint", tmp_path / "nope", "--device", "cpu")
    assert_user_error(code, err, "train one first")
    run, _ = trained
    code, _, err = cli("sample", "--checkpoint", run, "--prompt", "Zebra €", "--device", "cpu")
    message = assert_user_error(code, err, "remove them from --prompt")
    assert "'Z'" in message and "'€'" in message
    for flag, value, fix in (("--top-k", "0", "top_k must be >= 1"), ("--top-p", "1.5", "top_p must be in (0, 1]"),
                             ("--temperature", "nan", "temperature must be >= 0")):
        # refused before the model is loaded: a checkpoint that does not exist is not reached
        code, _, err = cli("sample", "--checkpoint", tmp_path / "nope", flag, value, "--device", "cpu")
        assert_user_error(code, err, fix)
    code, out, err = cli("sample", "--checkpoint", run, "--prompt", "KING:", "--stop", "", "--device", "cpu")
    assert_user_error(code, err, "--stop must be non-empty text")
    assert out == ""  # refused before the prompt is printed


# --------------------------------------------------------------------------- damaged checkpoints
def damage(path: Path, how: str) -> None:
    """Truncate (a disk filled mid-copy), overwrite with garbage, or remove a checkpoint file."""
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "garbage":
        path.write_bytes(b"\x89garbage\x00\xff" * 50)
    elif how == "wrong shape":  # valid JSON, but not what the file holds
        path.write_text("[]" if path.name == "config.json" else "null")
    else:
        path.unlink()


DAMAGES = [("model.safetensors", "truncated"), ("model.safetensors", "garbage"), ("model.safetensors", "missing"),
           ("config.json", "garbage"), ("config.json", "wrong shape"), ("tokenizer.json", "truncated"),
           ("tokenizer.json", "missing"), ("tokenizer.json", "wrong shape")]


@pytest.mark.parametrize("name, how", DAMAGES)
def test_a_damaged_final_model_is_one_error_line_naming_the_file(tmp_path, trained, corpus, name, how):
    """Every command that loads a pretrained model, and load_pretrained (what notebooks call), stop
    before doing anything with one line that names the damaged file."""
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)  # never damage the shared run
    damage(run / "model" / name, how)
    task = tmp_path / "task.csv"
    pd.DataFrame(tiny_rows(10)).to_csv(task, index=False)
    fix = (f"{run / 'model'} lacks {name}; point at a pretraining run's --out, or copy the missing file"
           if name.endswith(".json") and how == "missing" else f"checkpoint file {run / 'model' / name} is ")
    before = snapshot(run)
    for argv in (["sample", "--checkpoint", run, "--max-new-tokens", "5", "--device", "cpu"],
                 ["export-hf", "--checkpoint", run, "--out", tmp_path / "hf"],
                 ["evaluate", "--checkpoint", run, "--prompts", "0", "--compression-chars", "0"],
                 ["finetune", "--checkpoint", run, "--task", task, "--mode", "frozen", "--max-iters", "2",
                  "--device", "cpu", "--out", tmp_path / "ft"]):
        code, out, err = cli(*argv)
        line = assert_user_error(code, err, fix)
        assert out == "", argv[0]
        if how != "missing":
            assert line.endswith("copy it again from its source, or retrain "
                                 "(--resume continues a run from its newest complete step checkpoint)")
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(fix)):
        load_pretrained(run)
    assert snapshot(run) == before  # nothing written, nothing removed
    assert not (tmp_path / "hf").exists() and not (tmp_path / "ft").exists()


def test_pretrain_resume_with_every_step_checkpoint_damaged_is_one_error_line(tmp_path, trained):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    shutil.rmtree(run / "model")  # a run stopped after its step-20 checkpoint
    damage(run / "checkpoints" / "step-0000020" / "optimizer.safetensors", "truncated")
    damage(run / "checkpoints" / "step-0000010" / "state.json", "garbage")
    before = snapshot(run)
    with pytest.warns(UserWarning, match="skipping the damaged step checkpoint"):
        code, _, err = cli("pretrain", "--resume", "--out", run)
    assert_user_error(code, err, "is damaged (see the warnings); copy the run again from its source, or drop --resume")
    assert snapshot(run) == before


@pytest.mark.parametrize("change, problem", [
    (lambda config: {**config, "model": 5}, "RunConfig section 'model' must be a JSON object of ModelConfig fields"),
    (lambda config: {**config, "model": {**config["model"], "dropout": "x"}}, "ModelConfig.dropout must be a number")])
def test_pretrain_resume_of_a_config_json_with_wrong_fields_is_one_error_line(tmp_path, trained, change, problem):
    """A config.json that is an object but not a RunConfig's (edited by hand): one line naming it and the field."""
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    path = run / "checkpoints" / "step-0000020" / "config.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    before = snapshot(run)
    code, _, err = cli("pretrain", "--resume", "--out", run, "--max-iters", "30")
    line = assert_user_error(code, err, f"checkpoint file {path} is damaged")
    assert problem in line
    assert snapshot(run) == before


def test_pretrain_resume_of_another_commands_run_names_that_command(tmp_path, trained):
    """A seq2seq-train run's config.json is not a RunConfig: --resume says whose run it is, not that it is damaged."""
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    step = run / "checkpoints" / "step-0000020"
    (step / "config.json").write_text(json.dumps({"model": {"src_vocab_size": 64, "tgt_vocab_size": 64}}))
    (step / "translation.json").write_text("{}")  # what marks a seq2seq-train run's checkpoints
    before = snapshot(run)
    code, _, err = cli("pretrain", "--resume", "--out", run)
    assert_user_error(code, err, f"{run} holds a seq2seq-train run, not a pretrain run; resume it with "
                                 "`python -m workbench seq2seq-train --resume`")
    assert snapshot(run) == before


def test_pretrain_resume_skips_a_step_whose_config_json_is_not_an_object(tmp_path, trained):
    """A step checkpoint's config.json that parses but is not a JSON object is damaged like a truncated one:
    --resume warns and continues from the step before it."""
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    shutil.rmtree(run / "model")
    (run / "checkpoints" / "step-0000020" / "config.json").write_text("[1]")
    with pytest.warns(UserWarning, match=r"skipping the damaged step checkpoint .*step-0000020: config.json is damaged"):
        code, out, err = cli("pretrain", "--resume", "--out", run, "--max-iters", "30")
    assert code == 0, err
    assert "| 10/30 [" in err and json.loads((run / "metrics.json").read_text())["final_step"] == 30  # from step 10


def test_unknown_preset_is_argparses_exit_2(tmp_path, corpus):
    code, _, err = cli("pretrain", "--corpus", corpus, "--preset", "foo", "--out", tmp_path / "x")
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1  # one line, not the usage first
    assert err.startswith("error: argument --preset: invalid choice: 'foo' (choose from")
    assert err.endswith("; see python -m workbench pretrain --help\n")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv", [("finetune", "--split-seed"), ("seq2seq-train", "--split-seed"),
                                  ("evaluate", "--checkpoint", "run", "--seed"),  # (it failed after the scoring)
                                  ("sample", "--checkpoint", "run", "--seed")])
def test_a_negative_seed_is_argparses_exit_2_naming_the_flag(tmp_path, argv):
    code, _, err = cli(*argv, "-1", "--out", tmp_path / "x") if argv[0] != "sample" else cli(*argv, "-1")
    assert code == 2 and "Traceback" not in err and not (tmp_path / "x").exists()
    assert err.count("\n") == 1 and f"error: argument {argv[-1]}: a seed must be >= 0, got -1; see" in err


def test_ctrl_c_where_nothing_is_saved_is_one_line_and_status_130(monkeypatch, capsys):
    from workbench import __main__ as cli_main

    def interrupted(args):
        raise KeyboardInterrupt  # Ctrl-C during `sample`, say

    monkeypatch.setattr(cli_main, "cmd_sample", interrupted)
    assert cli_main.main(["sample", "--checkpoint", "run"]) == 130
    assert capsys.readouterr().err == "\ninterrupted\n"


class CtrlCAt:
    """Send this process SIGINT, as Ctrl-C does, after `step` training steps."""

    def __init__(self, step):
        self.step = step

    def on_step(self, trainer, record):
        if trainer.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_in_training_names_the_command_that_continues_it(tmp_path, corpus, monkeypatch, caplog):
    """Status 130 and one line with the command to paste; that bare command (--resume --out) finishes the run."""
    from workbench import run as run_module

    real = run_module.stop_on_sigint

    @contextlib.contextmanager
    def ctrl_c_at_step_3(trainer):
        trainer.callbacks.append(CtrlCAt(3))
        with real(trainer):
            yield

    monkeypatch.setattr(run_module, "stop_on_sigint", ctrl_c_at_step_3)
    run = tmp_path / "my run"
    code, stdout, err = cli("pretrain", "--corpus", corpus, *TINY, "--max-iters", "6", "--eval-interval", "3",
                            "--out", run)
    assert code == 130 and stdout == "", err
    [line] = [r.getMessage() for r in caplog.records if "interrupted at step" in r.getMessage()]
    assert line.startswith("interrupted at step 3 of 6; to continue: ")
    assert line.endswith(f" -m workbench pretrain --out '{run}' --resume")
    monkeypatch.setattr(run_module, "stop_on_sigint", real)
    command = shlex.split(line.split("to continue: ")[1])
    assert os.path.samefile(command[0], sys.executable) and command[1:3] == ["-m", "workbench"]  # this interpreter
    code, _, err = cli(*command[3:])
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["completed"] is True and metrics["final_step"] == 6  # the run's own --max-iters, reloaded


def test_a_path_the_system_refuses_is_one_line_naming_it(tmp_path, trained, monkeypatch):
    """An error the operating system raises (no such folder under /proc, no permission, a full disk) is
    one line with the path and what to check, not Python's "[Errno 2] ..." (nor a traceback)."""
    code, _, err = cli("export-hf", "--checkpoint", trained[0], "--out", "/proc/workbench-export")
    assert_user_error(code, err, "/proc/workbench-export: No such file or directory; check the path, its permissions "
                                 "and the free disk space, or choose another path")
    from workbench import __main__ as cli_main

    def full_disk(args):
        raise OSError(28, "No space left on device", str(tmp_path / "run" / "model.safetensors"))

    monkeypatch.setattr(cli_main, "cmd_pretrain", full_disk)
    code, _, err = cli("pretrain", "--out", tmp_path / "run")
    assert_user_error(code, err, f"{tmp_path / 'run' / 'model.safetensors'}: No space left on device; check")


def test_pretrain_says_what_it_read_before_training(tmp_path, corpus):
    """As nanoGPT's "train has N tokens": one line with the corpus, its split sizes and the vocabulary."""
    proc = cli_subprocess("pretrain", "--corpus", corpus, *TINY, "--max-iters", "2", "--out", tmp_path / "run",
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = corpus.read_text(encoding="utf-8")
    cut = int(0.9 * len(text))  # one char a token: the first 90% trains
    assert (f"INFO workbench.pretrain: corpus {corpus.name} (1 document): train {cut:,} tokens, "
            f"val {len(text) - cut:,} (char tokenizer, vocabulary {len(set(text))})") in proc.stderr


# Each message is checked in-process above; a real process adds only what the interpreter does around
# main() (the exit status, import-time output). A bad config fails earlier on the same path as a bad corpus.
@pytest.mark.parametrize("command, fix", [
    (["pretrain", "--corpus", "empty.txt", "--preset", "smoke", "--out", "run"], "add text to it"),
    (["sample", "--checkpoint", "run"], "train one first"),
])
def test_real_process_exits_2_with_one_error_line(tmp_path, command, fix):
    (tmp_path / "empty.txt").write_bytes(b"")
    proc = cli_subprocess(*command, cwd=tmp_path)
    assert_user_error(proc.returncode, proc.stderr, fix)
    assert proc.stdout == ""
    assert not (tmp_path / "run").exists()


def test_real_process_shows_each_warning_as_one_line(tmp_path, trained):
    """A run without its final model whose newest step checkpoint is damaged: two warnings, each one
    `warning:` line (not Python's file:line: UserWarning plus the source line of the warn call)."""
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    shutil.rmtree(run / "model")
    damage(run / "checkpoints" / "step-0000020" / "optimizer.safetensors", "truncated")
    proc = cli_subprocess("sample", "--checkpoint", run, "--max-new-tokens", "3", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert [line[:40] for line in lines] == ["warning: skipping the damaged step check",
                                             f"warning: {run} has no final model"[:40]], proc.stderr


def test_column_flags_have_one_spelling_across_commands():
    """pretrain's --text-column is also finetune's (beside --text-col), and each column flag takes both spellings."""
    from workbench.__main__ import build_parser

    parser = build_parser()
    finetune = parser.parse_args(["finetune", "--text-column", "review", "--label-column", "stars", "--out", "o"])
    assert (finetune.text_col, finetune.label_col) == ("review", "stars")
    pairs = parser.parse_args(["seq2seq-train", "--source-column", "en", "--target-column", "fr", "--out", "o"])
    assert (pairs.source_col, pairs.target_col) == ("en", "fr")


def test_an_os_error_about_no_path_is_its_reason_alone_and_flags_of_a_file_task_are_refused_with_a_built_in_one(
        monkeypatch, tmp_path):
    from workbench import __main__ as cli_main

    def refused(args):
        raise ConnectionRefusedError(111, "Connection refused")  # torchrun's rendezvous, say: no path to check

    monkeypatch.setattr(cli_main, "cmd_pretrain", refused)
    code, _, err = cli("pretrain", "--out", tmp_path / "run")
    assert code == 2 and err == "error: Connection refused (ConnectionRefusedError)\n"
    code, _, err = cli("finetune", "--text-col", "review", "--split-seed", "3", "--out", tmp_path / "ft")
    assert_user_error(code, err, "--text-col, --split-seed apply to a file of your own; the built-in genre task reads "
                                 "none of them: drop them, or pass --task FILE")
    code, _, err = cli("seq2seq-train", "--source-col", "en", "--out", tmp_path / "s2s")
    assert_user_error(code, err, "--source-col applies to a file of your own; the built-in dates task")
    assert not (tmp_path / "ft").exists() and not (tmp_path / "s2s").exists()


def test_report_parameters_are_literals_or_text_and_a_name_no_notebook_has_is_refused(tmp_path, monkeypatch):
    from workbench.__main__ import parameter_value

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("some text")
    assert parameter_value("3") == 3 and parameter_value("None") is None and parameter_value("[1, 2]") == [1, 2]
    assert parameter_value("To be") == "To be" and parameter_value("mine.txt") == str(tmp_path / "mine.txt")
    code, _, err = cli("report", "--profile", "smoke", "-p", "corpuss", "mine.txt", "--out", tmp_path / "report")
    assert_user_error(code, err, "no notebook has a parameter corpuss; the notebooks' parameters are ")
    assert "corpus, " in err and not (tmp_path / "report").exists()
