"""Training a translator through the workbench's run lifecycle: the run directory, loading it back,
exact resume, the decoding table beside the rule-based parser, cross-attention, and (slow) the
alignment a trained model learns: the ISO month digits look at the month's name."""

import json
import math
import re
from dataclasses import replace

import pandas as pd
import pytest
import torch
from helpers import batch_widths, fake_cuda_graphs

from workbench import translator as translator_module
from workbench.translation import date_task
from workbench.finetune import load_finetuned
from workbench.pretrain import load_pretrained
from workbench.translator import (CrossAttentionSnapshots, TranslationConfig, cross_attention, decoding_table,
                                  load_translator, locale_comparison, month_alignment, seq2seq_train)

TINY = {"n_layer": 1, "n_dec_layer": 1, "n_head": 2, "n_embd": 32, "max_src_len": 40, "max_tgt_len": 12}


@pytest.fixture(scope="module")
def task():
    return date_task(n_train=400, n_val=40, n_test=40, locales=["fr", "de", "ja"], seed=0)


def tiny_config(**train):
    return TranslationConfig(model=TINY, val_translate=8,
                             train={"max_iters": 12, "eval_interval": 6, "batch_size": 16, "warmup_iters": 2, **train})


@pytest.fixture(scope="module")
def trained(task, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "dates"
    snapshots = CrossAttentionSnapshots(task.test["source"].iloc[0], task.test["target"].iloc[0])
    return seq2seq_train(task, tiny_config(), out, callbacks=[snapshots], progress=False), snapshots


def test_a_run_writes_model_history_and_metrics(trained):
    result, _ = trained
    for name in ("model/model.safetensors", "model/translation.json", "model/tokenizer.json", "model/config.json",
                 "history.csv", "metrics.json"):
        assert (result.run_dir / name).is_file(), name
    m = result.metrics
    assert m["completed"] and m["final_step"] == 12 and m["n_train"] > 390 and m["val_loss"] > 0
    assert 0 <= m["val_exact_match"] <= 1 and m["val_translated"] == 8  # val_translate of the 40 validation rows
    evals = result.history.evals()
    assert list(evals["step"]) == [6, 12] and evals["val_loss"].iloc[-1] < 4.0


def test_the_summary_shows_counts_as_integers(trained, task):
    result, _ = trained
    summary = result.summary()
    assert summary.index.tolist()[:4] == ["val_loss", "val_exact_match", "val_translated", "best_step"]
    assert summary["params"] == result.model.num_params() and "240256.000" not in summary.to_string()
    assert re.search(rf"params\s+{result.model.num_params()}\n", summary.to_string())  # no decimals
    assert summary["val_loss"] == result.metrics["val_loss"]
    unscored = replace(result, metrics={k: v for k, v in result.metrics.items() if k != "val_exact_match"})
    assert "val_exact_match" not in unscored.summary().index  # a run that translated no validation rows


def test_loaded_translator_translates_like_the_trained_one(trained, task):
    result, _ = trained
    again = load_translator(result.run_dir)
    sources = task.test["source"].head(6).tolist()
    assert again.translate(sources) == result.translator.translate(sources)
    assert again.translate(sources, beam=3) == result.translator.translate(sources, beam=3)
    assert isinstance(again.translate("jeudi 26 novembre 2026")[0], str)
    with pytest.raises(ValueError, match="beam must be a positive integer"):
        again.translate(sources, beam=0)
    with pytest.raises(FileNotFoundError, match=r"does not exist; .*or train one first \(python -m workbench seq2seq-train"):
        load_translator(result.run_dir / "nope")
    with pytest.raises(ValueError, match=r"holds a seq2seq-train run's model, not a pretrain run's.*load_translator "
                                         r"\(on the command line: python -m workbench translate\)$"):
        load_pretrained(result.run_dir)  # what `sample` meets
    with pytest.raises(ValueError, match=r"holds a seq2seq-train run's model, not a finetune run's.*"
                                         r"workbench.translator.load_translator"):
        load_finetuned(result.run_dir)


def test_a_checkpoint_with_another_runs_tokenizer_is_refused(trained, tmp_path):
    """A tokenizer.json whose vocabulary is not the model's would load and translate garbage."""
    import json
    import shutil

    from workbench.translation import train_pair_tokenizer

    shutil.copytree(trained[0].run_dir / "model", tmp_path / "model")
    other = train_pair_tokenizer(date_task(n_train=20, n_val=5, n_test=5, locales=["en"], seed=0))
    (tmp_path / "model" / "tokenizer.json").write_text(json.dumps(other.to_dict()))
    with pytest.raises(ValueError, match=rf"tokenizer.json has {other.vocab_size} tokens but the model expects "
                                         r"src_vocab_size=\d+ and tgt_vocab_size=\d+; use the tokenizer.json saved "
                                         "with this checkpoint$"):
        load_translator(tmp_path)


def test_translate_refuses_blank_sources_and_warns_when_it_cuts_one(trained, task, caplog):
    translator = trained[0].translator
    for blank in ("", "   ", "\t\n"):  # whitespace alone is no sentence either
        with pytest.raises(ValueError, match=r"^source 1 is empty; give every sentence some text$"):
            translator.translate(["3 mars 1999", blank])
    # surrounding whitespace is stripped, as it is from every training source
    assert translator.translate(["  3 mars 1999 \n"]) == translator.translate(["3 mars 1999"])
    assert translator.source_ids([" 3 mars"]) == translator.source_ids(["3 mars"])
    long = task.test["source"].iloc[0] * 5  # longer than TINY's max_src_len=40
    with caplog.at_level("WARNING", logger="workbench.translator"):
        translator.translate(["3 mars 1999", long])
    assert (f"1 source(s) are longer than max_src_len=40 tokens and are cut (source 1 loses its last {len(long) - 40} "
            f"of {len(long)} tokens); shorten them or train with a larger --max-src-len") in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="workbench.translator"):
        translator.translate(["3 mars 1999"])
    assert "are cut" not in caplog.text


def test_a_run_can_be_as_long_as_some_epochs(task):
    config = TranslationConfig(model=TINY, val_translate=0, train={"epochs": 0.1, "batch_size": 16, "warmup_iters": 0})
    result = seq2seq_train(task, config, progress=False)
    steps = math.ceil(0.1 * len(task.train) / 16)  # passes over the training pairs, in batches
    assert result.metrics["steps"] == steps == result.history.df["step"].max()


def test_too_short_limits_warn_naming_their_flags(task, caplog):
    config = TranslationConfig(model=TINY | {"max_src_len": 8, "max_tgt_len": 6}, val_translate=0,
                               train={"max_iters": 1, "batch_size": 8, "warmup_iters": 0})
    with caplog.at_level("WARNING", logger="workbench.translator"):
        seq2seq_train(task, config, progress=False)
    assert "training sources are longer than 8 tokens and are cut; raise --max-src-len" in caplog.text
    assert "training targets are longer than 5 tokens and are cut; raise --max-tgt-len" in caplog.text


def test_a_target_of_max_tgt_len_minus_one_tokens_is_trained_whole(task, monkeypatch, caplog):
    """max_tgt_len counts the decoder's input, <bos> + target: a 10-character ISO date fits 11, and the
    training batches must teach all of it and its <eos> (not cut its last character for the <eos>)."""
    from workbench import train as train_module

    batches, step = [], train_module.Trainer._step
    monkeypatch.setattr(train_module.Trainer, "_step", lambda trainer, b: batches.extend(b) or step(trainer, b))
    config = TranslationConfig(model=TINY | {"max_tgt_len": 11}, val_translate=0,
                               train={"max_iters": 2, "batch_size": 16, "warmup_iters": 0})
    with caplog.at_level("WARNING", logger="workbench.translator"):
        result = seq2seq_train(task, config, progress=False)
    assert "are cut" not in caplog.text
    tok, targets = result.translator.tokenizer, set(task.train["target"])
    for _, tgt_in, tgt_out in batches:
        assert tgt_in.shape[1] == 11
        assert all(tok.decode(row) in targets for row in tgt_out)


@pytest.mark.parametrize("name, change", [
    ("config.json", lambda d: {**d, "model": {**d["model"], "n_layer": "2"}}),
    ("translation.json", lambda d: {**d, "val_translate": None}),
    ("tokenizer.json", lambda d: {**d, "kind": "word"}),
])
def test_a_translator_file_with_a_wrong_field_is_one_line_naming_it(trained, tmp_path, name, change):
    """Files that parse but hold a wrong field (a hand edit): DamagedCheckpointError naming the file, not a
    TypeError or KeyError from the model's construction."""
    import json
    import shutil

    from workbench.checkpoint import DamagedCheckpointError

    shutil.copytree(trained[0].run_dir / "model", tmp_path / "model")
    path = tmp_path / "model" / name
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    with pytest.raises(DamagedCheckpointError, match=rf"^checkpoint file {re.escape(str(path))} is damaged \("):
        load_translator(tmp_path)


def test_a_checkpoint_without_the_translation_files_is_refused(trained, tmp_path):
    import shutil

    shutil.copytree(trained[0].run_dir / "model", tmp_path / "model")
    (tmp_path / "model" / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks tokenizer.json; point --checkpoint at a seq2seq-train run's --out"):
        load_translator(tmp_path)


def test_bpe_translator_trains_saves_and_translates(task, tmp_path):
    config = TranslationConfig(tokenizer="bpe", vocab_size=300, model=TINY, val_translate=4,
                               train={"max_iters": 2, "eval_interval": 2, "batch_size": 8, "warmup_iters": 0})
    result = seq2seq_train(task, config, tmp_path / "bpe", progress=False)
    tok = result.translator.tokenizer
    assert tok.kind == "bpe" and result.model.config.src_vocab_size == tok.vocab_size <= 304
    again = load_translator(tmp_path / "bpe")
    assert again.tokenizer.kind == "bpe" and again.translate(["Ωmega 3 mai"]) == result.translator.translate(["Ωmega 3 mai"])
    with pytest.raises(ValueError, match="needs a char-level translator"):
        month_alignment(again, task.test)


def test_resume_continues_exactly(task, tmp_path):
    straight = seq2seq_train(task, tiny_config(max_iters=8, eval_interval=4), tmp_path / "a", progress=False)
    seq2seq_train(task, tiny_config(max_iters=8, eval_interval=4), tmp_path / "b", progress=False)
    # a run stopped at step 4 (what Ctrl-C leaves) continues from its checkpoint to the same weights
    from workbench.checkpoint import step_checkpoints

    import shutil
    shutil.rmtree(tmp_path / "b" / "model")
    for p in step_checkpoints(tmp_path / "b")[:-1]:  # newest first: keep only step 4's
        shutil.rmtree(p)
    (tmp_path / "b" / "checkpoints" / "latest").unlink(missing_ok=True)
    assert [p.name for p in step_checkpoints(tmp_path / "b")] == ["step-0000004"]
    resumed = seq2seq_train(task, tiny_config(max_iters=8, eval_interval=4), tmp_path / "b", progress=False,
                            resume=True)
    assert step_checkpoints(tmp_path / "b")[0].name == "step-0000008"  # it trained steps 5 to 8 again
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="already holds files; pass --resume"):
        seq2seq_train(task, tiny_config(), tmp_path / "a", progress=False)
    other = date_task(n_train=len(task.train) // 2, n_val=len(task.val), n_test=len(task.test), seed=0)
    with pytest.raises(ValueError, match=rf"the task differs from the run's \(n_train {len(task.train)} in the run, "
                                         rf"{len(other.train)} now; fingerprint '[0-9a-f]{{16}}' in the run, "
                                         r"'[0-9a-f]{16}' now\); resume with the task the run was started with \(on "
                                         r"the command line: this run does not keep how its task was loaded, so "
                                         r"pass the --task, --n-train"):  # built by date_task, not load_pairs
        seq2seq_train(other, tiny_config(max_iters=12, eval_interval=4), tmp_path / "b", progress=False, resume=True)
    longer = seq2seq_train(task, tiny_config(max_iters=12, eval_interval=4), tmp_path / "b", progress=False,
                           resume=True)  # a finished run trains on with a larger max_iters, as pretrain's
    assert longer.history.df["step"].max() == 12


def test_a_cuda_graph_on_a_cpu_is_refused_before_the_tokenizer_is_trained(task, monkeypatch):
    def unexpected(*args, **kwargs):
        raise AssertionError("the tokenizer was trained before the refusal")
    monkeypatch.setattr(translator_module, "train_pair_tokenizer", unexpected)
    with pytest.raises(ValueError, match=r"^cuda_graph needs a CUDA GPU, not cpu; drop --cuda-graph$"):
        seq2seq_train(task, tiny_config(cuda_graph=True, device="cpu"), progress=False)


def test_a_graphed_run_pads_every_batch_to_one_width_and_trains_as_the_eager_one(task, monkeypatch):
    """With cuda_graph the batches keep the split's whole padded width (a graph replays one shape;
    trimmed as eager batches are, they would be refused after the capture); padding is masked in the
    encoder and ignored by the loss, so the steps are the eager run's."""
    config = TranslationConfig(model=TINY | {"dropout": 0.0}, val_translate=4,
                               train={"max_iters": 8, "eval_interval": 4, "batch_size": 16, "warmup_iters": 2,
                                      "dtype": "float32"})
    widths = batch_widths(monkeypatch)
    eager = seq2seq_train(task, config, progress=False)
    assert len(widths) > 1  # eager batches are trimmed to their longest rows
    graphs = fake_cuda_graphs(monkeypatch)
    widths.clear()
    graphed = seq2seq_train(task, replace(config, train=replace(config.train, cuda_graph=True)), progress=False)
    assert len(widths) == 1 and (graphs[0].step_graph.eager_steps, graphs[0].step_graph.replays) == (3, 5)
    for key in ("loss", "grad_norm"):
        want, got = (r.history.df[key].dropna().to_numpy() for r in (eager, graphed))
        assert len(want) == 8 and got == pytest.approx(want, rel=1e-5), key


def test_decoding_table_has_greedy_beams_and_the_rule_based_row(trained, task):
    result, _ = trained
    rows = task.test.head(10)
    table, predictions = decoding_table(result.translator, rows, beams=(1, 2), reference="babel")
    assert list(table.index) == ["greedy", "beam 2", table.index[2]] and table.index[2].startswith("rule-based: babel")
    assert (table["n"] == 10).all() and (table["sentences_per_s"] > 0).all()
    assert str(table["beam"].dtype) == "Int64" and table["beam"].tolist()[:2] == [1, 2] and table["beam"].isna().iloc[2]
    assert list(predictions) == list(table.index) and len(predictions["greedy"]) == 10
    by_locale = locale_comparison(rows, predictions)
    assert list(by_locale.columns) == list(table.index) and by_locale.index[-1] == "all"
    assert by_locale.loc["all", "greedy"] == table.loc["greedy", "exact_match"]
    own_pairs = rows.assign(locale="all")  # translation.load_pairs' locale when a file has none
    with pytest.raises(ValueError, match="locale.s. 'all' name none: for your own pairs pass reference=None"):
        decoding_table(result.translator, own_pairs, beams=(1,))
    assert list(decoding_table(result.translator, own_pairs, beams=(1,), reference=None)[0].index) == ["greedy"]
    with pytest.raises(ValueError, match="has no column 'target'.*pass the rows of a translation.PairTask split"):
        decoding_table(result.translator, rows.drop(columns="target"), beams=(1,))


def test_cross_attention_rows_are_target_tokens_and_snapshots_follow_evaluations(trained, task):
    result, snapshots = trained
    source, target = task.test["source"].iloc[0], task.test["target"].iloc[0]
    ca = cross_attention(result.translator, source, target)
    assert ca.weights.shape == (1, 2, len(target) + 1, len(source))
    assert ca.target_tokens[-1] == "<eos>" and "".join(ca.source_tokens) == source
    assert torch.allclose(ca.weights.sum(-1), torch.ones(1, 2, len(target) + 1), atol=1e-5)
    assert [s for s, _ in snapshots.snapshots] == [0, 6, 12]  # the untrained model first
    frames = snapshots.frames(0)
    assert frames[0][1].shape == (len(target) + 1, len(source))


def test_cross_attention_snapshot_frames_name_an_out_of_range_layer_or_head():
    snapshots = CrossAttentionSnapshots("5 mars 2021", "2021-03-05")
    snapshots.snapshots = [(6, torch.rand(1, 2, 11, 11)), (12, torch.rand(1, 2, 11, 11))]  # 1 layer, 2 heads
    assert [s for s, _ in snapshots.frames(0, 1)] == [6, 12] and snapshots.frames(-1)[0][1].shape == (11, 11)
    with pytest.raises(ValueError, match=r"^layer 1 is out of range; pick a layer in 0\.\.0, the model's layers$"):
        snapshots.frames(1)
    with pytest.raises(ValueError, match=r"^head 2 is out of range; pick a head in 0\.\.1, the model's heads$"):
        snapshots.frames(0, 2)


def test_month_alignment_table(trained, task):
    result, _ = trained
    table = month_alignment(result.translator, task.test, n=5)
    assert len(table) == 5 and table["in_month"].dtype == bool
    assert table["month_mass"].between(0, 1).all()
    assert not (table["locale"] == "ja").any()  # "11月": no month word


@pytest.mark.slow
def test_a_trained_model_writes_month_digits_while_looking_at_the_month_name(tmp_path):
    """The alignment of the issue, measured: train a small model on long dates of three locales (day, month
    name, year: the reverse of ISO's order, and the month name starts at a different character in each)
    and count the test dates whose month digits attend most (both month rows, all heads of the decoder
    layer) to a character of the month's name. (300 steps: at 200 the model has not found it yet.)"""
    task = date_task(n_train=3000, n_val=50, n_test=60, locales=["fr", "de", "es"], formats=["long"], seed=0)
    config = TranslationConfig(model={"n_layer": 1, "n_dec_layer": 1, "n_head": 2, "n_embd": 48, "max_src_len": 40,
                                      "max_tgt_len": 12},
                               val_translate=0, train={"max_iters": 300, "eval_interval": 300, "batch_size": 32,
                                                       "lr": 3e-3, "warmup_iters": 20})
    result = seq2seq_train(task, config, None, progress=False)
    table = month_alignment(result.translator, task.test, layers=[0])
    print(f"month digits -> month name: {table['in_month'].mean():.2f} of {len(table)} test dates "
          f"(mean weight on the name {table['month_mass'].mean():.2f})")
    assert len(table) == len(task.test)
    assert table["in_month"].mean() > 0.6


# ---------------------------------------------------------------------------------------------- command line


def test_cli_seq2seq_train_then_translate(tmp_path, caplog):
    from helpers import cli

    out = tmp_path / "run"
    code, stdout, stderr = cli("seq2seq-train", "--locales", "de,fr", "--n-train", "200", "--n-val", "20", "--n-test", "20",
                               "--n-layer", "1", "--n-dec-layer", "1", "--n-head", "2", "--n-embd", "16",
                               "--max-iters", "4", "--eval-interval", "4", "--batch-size", "8", "--val-translate", "0",
                               "--out", out)
    assert code == 0, stderr
    assert "test, greedy (20 pairs)" in stdout and "tok:char" in stdout and "all" in stdout
    assert (out / "model" / "model.safetensors").is_file()
    scores, predictions = pd.read_csv(out / "test_scores.csv", index_col=0), pd.read_csv(out / "test_predictions.csv")
    assert len(predictions) == 20 and list(predictions.columns) == ["locale", "source", "target", "prediction"]
    assert scores.loc["all", "exact_match"] == pytest.approx((predictions["prediction"] == predictions["target"]).mean())
    code, stdout, stderr = cli("seq2seq-train", "--resume", "--out", out, "--max-iters", "6")  # the run keeps its task
    assert code == 0, stderr
    assert "test, greedy (20 pairs)" in stdout and json.loads((out / "metrics.json").read_text())["steps"] == 6
    code, stdout, stderr = cli("translate", "--checkpoint", out, "26. November 2026", "3 mars 1999", "--beam", "2")
    assert code == 0, stderr
    assert len(stdout.splitlines()) == 2  # one line per text (an untrained model may write empty ones)
    code, _, stderr = cli("translate", "--checkpoint", out, "Ω 1999")
    assert code == 0 and "read as <unk>: 'Ω'" in caplog.text


def test_cli_bare_resume_of_a_file_task_reloads_its_columns_and_split(tmp_path, monkeypatch):
    from helpers import cli

    pairs = pd.DataFrame({"src": [f"{d} mars {1990 + d}" for d in range(1, 31)],
                          "tgt": [f"{1990 + d}-03-{d:02d}" for d in range(1, 31)]})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    monkeypatch.chdir(tmp_path)  # a relative --task; the resume runs from another folder
    sizes = ["--n-layer", "1", "--n-dec-layer", "1", "--n-head", "2", "--n-embd", "16", "--batch-size", "8",
             "--eval-interval", "2", "--val-translate", "0"]
    code, _, stderr = cli("seq2seq-train", "--task", "pairs.csv", "--source-col", "src", "--target-col", "tgt",
                          "--split-seed", "5", *sizes, "--max-iters", "2", "--out", tmp_path / "run")
    assert code == 0, stderr
    monkeypatch.chdir(tmp_path.parent)
    code, stdout, stderr = cli("seq2seq-train", "--resume", "--out", tmp_path / "run", "--max-iters", "4")
    assert code == 0, stderr
    assert "targets here have fewer than four words, so it reads 0; see chrF" in stdout  # one-word ISO dates
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 4
    code, _, stderr = cli("seq2seq-train", "--resume", "--out", tmp_path / "run", "--max-iters", "6", "--split-seed", "6")
    assert code == 2 and "the task differs from the run's (fingerprint" in stderr  # same sizes, other rows


@pytest.mark.parametrize("argv, message", [
    (["seq2seq-train", "--task", "pairs.tsv", "--locales", "de", "--n-val", "5", "--out", "{tmp}/x"],
     "--locales, --n-val choose the built-in date task's pairs; --task pairs.tsv is a file of pairs: drop them"),
    (["seq2seq-train", "--task", "missing.tsv", "--out", "{tmp}/x"], "task file missing.tsv does not exist"),
    (["seq2seq-train", "--locales", "xx_YY", "--out", "{tmp}/x"], "locale 'xx_YY' is unknown to babel"),
    (["seq2seq-train", "--n-embd", "30", "--n-head", "4", "--out", "{tmp}/x"], "not divisible by n_head=4"),
    (["seq2seq-train", "--tokenizer", "word", "--out", "{tmp}/x"], "tokenizer='word' is not one of char, bpe"),
    (["seq2seq-train", "--max-tgt-len", "1", "--out", "{tmp}/x"], "max_tgt_len=1 leaves no room for a target token"),
    (["translate", "--checkpoint", "{tmp}/none", "hello"], "does not exist"),
])
def test_cli_errors_are_one_line_with_status_2(tmp_path, argv, message):
    from helpers import cli

    code, _, stderr = cli(*[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_every_profile_builds_a_valid_translation_config():
    from workbench.profiles import PROFILES

    for name, profile in PROFILES.items():
        s = profile.seq2seq
        config = s.config()
        assert config.model.n_embd == s.model["n_embd"] and config.train.max_iters == s.train["max_iters"], name
        assert 1 in s.beams and s.n_test > 0
