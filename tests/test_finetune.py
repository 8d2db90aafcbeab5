"""Fine-tuning: every mode on a tiny GPT (what is trained, what stays frozen, padding invariance,
exact resume), the MiniLM mode under CPU bf16 autocast, the comparison grid and its TF-IDF reference,
and the `finetune` command line. The task data itself: tests/test_tasks.py; the metrics: test_metrics.py."""

import dataclasses
import json
import re
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import batch_widths, cli, fake_cuda_graphs, save_base, tiny_rows

from workbench import checkpoint as ckpt
from workbench import train as train_module
from dataclasses import fields

from workbench.config import TrainConfig, finetune_train, preset
from workbench.train import History
from workbench.tasks import load_task
from workbench.pretrain import load_pretrained, pretrain
from workbench.evaluate import classifier_report
from workbench.finetune import (
    PREDICTIONS,
    FinetuneConfig,
    GPTClassifier,
    build_classifier,
    count_params,
    finetune,
    load_finetuned,
    load_predictions,
    predict_logits,
    still_rising,
)
from workbench.tasks import encode_texts
from workbench.compare import compare_modes, grid_workers, summarize, tfidf_baseline
from workbench.metrics import macro_f1, split_metrics


@pytest.fixture(scope="module")
def base(tmp_path_factory, csv_task):
    """A 1-layer, 32-wide GPT with random weights (its 32-character window: most passages fill it)."""
    return save_base(tmp_path_factory.mktemp("base") / "model", csv_task[1])


TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


def quick(**kw) -> FinetuneConfig:
    """A few dozen steps of a tiny batch on the CPU, fast learning rates; loop fields go to `train`."""
    train = {"max_iters": 30, "batch_size": 8, "lr": 3e-3, "eval_interval": 15, "device": "cpu"}
    own = {"head_lr": 1e-2, "dropout": 0.0}
    for key, value in kw.items():
        (train if key in TRAIN_FIELDS else own)[key] = value
    return FinetuneConfig(**own, train=finetune_train(**train))


# ------------------------------------------------------------------------------------- baseline
def test_tfidf_baseline_is_sane(csv_task):
    _, task = csv_task
    m = tfidf_baseline(task)
    assert m["mode"] == "tfidf" and m["C"] in (0.3, 1.0, 3.0, 10.0)
    assert m["test_accuracy"] > 0.6 and m["test_macro_f1"] > 0.6  # cue words make it easy; chance is 1/3
    assert set(m["test_per_class"]) == set(task.labels) and np.array(m["test_confusion"]).sum() == len(task.test)


# ------------------------------------------------------------------------------------- models
def test_right_padding_does_not_change_a_passage(base, csv_task):
    from workbench.pretrain import load_pretrained, pretrain

    gpt, tok, _ = load_pretrained(base)
    texts = ["the fool", "war and the crown of england"]
    idx, lengths = encode_texts(tok, texts, 32)
    assert idx.shape == (2, max(len(t) for t in texts)) and lengths.tolist() == [len(t) for t in texts]
    for pooling in ("mean", "last"):
        torch.manual_seed(0)
        model = GPTClassifier(gpt, 3, pooling).eval()
        alone, _ = model(idx[:1, : lengths[0]], lengths[:1])
        padded, _ = model(idx, lengths)
        assert torch.allclose(alone[0], padded[0], atol=1e-5), pooling
        junk = idx.clone()
        junk[0, lengths[0]:] = 7  # what the padding holds does not matter either
        assert torch.allclose(model(junk, lengths)[0][0], padded[0], atol=1e-5)


@pytest.mark.parametrize("mode", ["full", "frozen", "scratch", "lora", "multitask"])
def test_every_mode_learns_and_trains_what_it_should(base, csv_task, mode):
    from workbench.pretrain import load_pretrained, pretrain

    _, task = csv_task
    pretrained, _, _ = load_pretrained(base)
    result = finetune(base, task, quick(mode=mode, max_iters=40), progress=False)
    m, model = result.metrics, result.model
    losses = result.history.df["loss"].dropna().to_numpy()
    assert losses[-8:].mean() < losses[:8].mean(), mode
    head = 32 * 3 + 3
    total = pretrained.num_params() + head
    lora_params = 8 * (32 + 96) + 8 * (32 + 32) if mode == "lora" else 0  # 1 layer: c_attn (32->96), c_proj (32->32)
    expected = {"full": total, "scratch": total, "multitask": total, "frozen": head, "lora": lora_params + head}[mode]
    assert m["trainable_params"] == expected and m["total_params"] == total + lora_params
    assert count_params(model) == (expected, total + lora_params)
    assert {"test_accuracy", "test_macro_f1", "test_per_class", "val_macro_f1", "train_s"} <= set(m)
    # val metrics come from the best step's evaluation: the same as scoring the restored weights again
    val_pred = predict_logits(model, *encode_texts(load_pretrained(base)[1], task.val["text"].tolist(), 32)).argmax(-1)
    assert m["val_macro_f1"] == pytest.approx(macro_f1(task.val["label_id"], val_pred.numpy(), 3))
    assert m["val_macro_f1"] == pytest.approx(result.history.evals().set_index("step").loc[m["best_step"], "val_macro_f1"])
    if mode in ("frozen", "lora"):  # the pretrained weights are bit-identical after training
        sd = model.backbone.state_dict()
        for k, v in pretrained.state_dict().items():
            key = k if k in sd else k.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
            assert torch.equal(sd[key], v), k
    if mode == "scratch":  # a fresh init, not the checkpoint
        assert not torch.equal(model.backbone.transformer.wte.weight, pretrained.transformer.wte.weight)


def test_head_and_backbone_train_at_their_own_learning_rates(base, csv_task):
    _, task = csv_task
    seen = []

    class Spy:
        def on_step(self, trainer, record):
            seen.append(sorted({round(g["lr"] / record["lr"], 6) for g in trainer.optimizer.param_groups}))

    finetune(base, task, quick(max_iters=3, lr=1e-3, head_lr=5e-3, layer_decay=0.5, eval_interval=3),
             callbacks=[Spy()], progress=False)
    # block 0 of 1 at 0.5, embeddings at 0.25, final norm at 1, the head at head_lr/lr = 5
    assert seen[0] == [0.25, 0.5, 1.0, 5.0]


def test_multitask_adds_the_language_modelling_loss(base):
    from workbench.pretrain import load_pretrained, pretrain

    gpt, tok, _ = load_pretrained(base)
    idx, lengths = encode_texts(tok, ["the fool and my lord", "war and the crown of england"], 32)
    labels = torch.tensor([0, 1])
    torch.manual_seed(0)
    plain = build_classifier(FinetuneConfig(mode="full", dropout=0.0), 3, gpt.config, gpt).eval()
    torch.manual_seed(0)
    multi = build_classifier(FinetuneConfig(mode="multitask", lm_weight=0.5, dropout=0.0), 3, gpt.config, gpt).eval()
    logits, cls_loss = plain(idx, lengths, labels)
    _, loss = multi(idx, lengths, labels)
    lm_logits, _ = gpt(idx)
    targets = idx[:, 1:].clone()
    targets[0, lengths[0] - 1:] = -1  # padding is not a target
    lm = torch.nn.functional.cross_entropy(lm_logits[:, :-1].reshape(-1, lm_logits.size(-1)), targets.reshape(-1),
                                           ignore_index=-1)
    assert loss.item() == pytest.approx(cls_loss.item() + 0.5 * lm.item(), rel=1e-5)


class StopAt:
    """Interrupt training after `step` steps, as Ctrl-C does."""

    def __init__(self, step):
        self.step = step

    def on_step(self, trainer, record):
        if trainer.step == self.step:
            trainer.request_stop()


def test_a_cuda_graph_on_a_cpu_is_refused_before_the_model_is_built(csv_task):
    """`run.setup_device` comes first: the one line with the fix, not the missing checkpoint found later."""
    with pytest.raises(ValueError, match=r"^cuda_graph needs a CUDA GPU, not cpu; drop --cuda-graph$"):
        finetune(None, csv_task[1], quick(mode="full", cuda_graph=True), progress=False)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_a_graphed_finetune_pads_every_batch_to_one_width_and_trains_as_the_eager_one(csv_task, tmp_path,
                                                                                    monkeypatch, mode):
    """With cuda_graph the batches keep the split's whole padded width (a graph replays one shape;
    trimmed to each batch's longest passage, as eager batches are, they would be refused after the
    capture), which right padding leaves without effect on the loss: the same steps as the eager run's."""
    _, task = csv_task
    base = save_base(tmp_path / "base", task, block_size=96)  # passages of 25-60 characters fit whole
    config = quick(mode=mode, dtype="float32", max_iters=10, eval_interval=5)
    widths = batch_widths(monkeypatch)
    eager = finetune(base, task, config, progress=False)
    assert len(widths) > 1  # eager batches are trimmed to their longest passage
    graphs = fake_cuda_graphs(monkeypatch)
    widths.clear()
    graphed = finetune(base, task, replace(config, train=replace(config.train, cuda_graph=True)), progress=False)
    assert len(widths) == 1
    assert len(graphs) == 1 and (graphs[0].step_graph.eager_steps, graphs[0].step_graph.replays) == (3, 7)
    for key in ("loss", "grad_norm"):
        want, got = (r.history.df[key].dropna().to_numpy() for r in (eager, graphed))
        assert len(want) == 10 and got == pytest.approx(want, rel=1e-5), key
    assert graphed.metrics["val_macro_f1"] == eager.metrics["val_macro_f1"]


def test_task_characters_the_char_base_never_saw_name_the_task_and_the_fix(base, csv_task):
    _, task = csv_task
    crowned = dataclasses.replace(task, train=task.train.assign(text="👑 " + task.train["text"]))
    with pytest.raises(ValueError, match=r"^tiny.csv: its train texts have characters the base model's char tokenizer "
                                         r"never saw \('👑'\); remove them .* pretrain the base model with --tokenizer bpe$"):
        finetune(base, crowned, quick(mode="frozen", max_iters=2), progress=False)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_resume_of_a_finetune_is_exact(base, csv_task, tmp_path, mode):
    _, task = csv_task
    config = quick(mode=mode, max_iters=12, eval_interval=4, dropout=0.1)
    straight = finetune(base, task, config, tmp_path / "a", progress=False)
    paused = finetune(base, task, config, tmp_path / "b", callbacks=[StopAt(6)], progress=False)
    assert paused.metrics["completed"] is False and not (tmp_path / "b" / "model").exists()
    resumed = finetune(None, task, config, tmp_path / "b", resume=True, progress=False)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics["test_macro_f1"] == straight.metrics["test_macro_f1"]
    smaller = task.subsample(2)
    with pytest.raises(ValueError, match=rf"the task differs from the run's \(n_train {len(task.train)} in the run, "
                                         rf"{len(smaller.train)} now; .*\); resume with the task the run was started with"):
        finetune(None, smaller, config, tmp_path / "b", resume=True, progress=False)
    with pytest.raises(ValueError, match="differs from the checkpoint's"):
        finetune(None, task, quick(mode=mode, max_iters=12, eval_interval=4, dropout=0.2), tmp_path / "b",
                 resume=True, progress=False)
    longer = finetune(None, task, quick(mode=mode, max_iters=16, eval_interval=4, dropout=0.1), tmp_path / "b",
                      resume=True, progress=False)  # a finished run trains on with a larger max_iters, as pretrain's
    assert longer.metrics["final_step"] == 16 and longer.history.df["step"].max() == 16
    with pytest.raises(ValueError, match="holds a finetune run, not a pretrain run"):  # nothing is loaded into a GPT
        pretrain(preset("smoke"), tmp_path / "b", resume=True, progress=False)


def test_saved_classifier_reloads_and_predicts_the_same(base, csv_task, tmp_path):
    _, task = csv_task
    result = finetune(base, task, quick(mode="lora", pooling="last"), tmp_path / "run", progress=False)
    files = {p.name for p in (tmp_path / "run" / "model").iterdir()}
    assert {"model.safetensors", "finetune.json", "config.json", "tokenizer.json", "labels.json", "task.json"} <= files
    loaded = load_finetuned(tmp_path / "run")
    texts = task.test["text"].tolist()
    assert np.allclose(loaded.predict_proba(texts), result.classifier.predict_proba(texts), atol=1e-6)
    assert loaded.predict(texts[0])[0] in task.labels and loaded.labels == task.labels
    with pytest.raises(ValueError, match="no texts to classify"):  # an assert, gone under python -O
        loaded.predict([])
    # the wrong kind of run, a missing one, a file: one error that says what to point at
    with pytest.raises(ValueError, match=r"holds a finetune run's model, not a pretrain run's.*"
                                         r"load this one with workbench.finetune.load_finetuned"):
        load_pretrained(tmp_path / "run")
    with pytest.raises(ValueError, match=r"holds a pretrain run's model, not a finetune run's; point at a finetune "
                                         r"run's --out, or load this one with workbench.pretrain.load_pretrained "
                                         r"\(on the command line: python -m workbench sample \(or evaluate, export-hf\)\)$"):
        load_finetuned(base)  # not "lacks finetune.json ... copy the missing file again"
    with pytest.raises(ValueError, match=r"pass the path of a run directory \(its --out\), got None"):
        load_finetuned(None)
    with pytest.raises(FileNotFoundError, match=r"does not exist; point at a finetune run's --out, or train one "
                                                r"first \(python -m workbench finetune --checkpoint BASE"):
        load_finetuned(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"model.safetensors is a file; point at the checkpoint or run directory"):
        load_finetuned(tmp_path / "run" / "model" / "model.safetensors")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(FileNotFoundError, match=r"notes.txt is a file, not a checkpoint; point at a training run's "
                                                r"directory \(its --out\)$"):  # not "... that holds it (.)"
        load_finetuned(tmp_path / "notes.txt")


def test_a_run_saves_the_probabilities_behind_its_metrics_and_they_stand_in_for_the_model(base, csv_task, tmp_path):
    _, task = csv_task
    run = tmp_path / "run"
    result = finetune(base, task, quick(mode="full", dtype="float32"), run, progress=False)
    table = pd.read_csv(run / PREDICTIONS)
    assert list(table["split"]) == ["val"] * len(task.val) + ["test"] * len(task.test)
    assert list(table["label"]) == task.val["label"].tolist() + task.test["label"].tolist()
    probs = load_predictions(run, task, "test")
    assert probs.shape == (len(task.test), task.num_labels) and np.allclose(probs.sum(1), 1, atol=1e-6)
    pred = probs.argmax(1)
    assert list(table[table["split"] == "test"]["predicted"]) == [task.labels[i] for i in pred]
    # the numbers behind the run's metrics, and (fp32) what the saved classifier gives
    m = split_metrics(task.test["label_id"].to_numpy(), pred, list(task.labels), prefix="test_")
    assert m["test_macro_f1"] == result.metrics["test_macro_f1"] and m["test_accuracy"] == result.metrics["test_accuracy"]
    texts = task.test["text"].tolist()
    assert np.allclose(probs, load_finetuned(run).predict_proba(texts), atol=1e-5)
    from_model, _ = classifier_report({"full": load_finetuned(run)}, task)
    from_file, _ = classifier_report({"full": probs}, task)
    pd.testing.assert_frame_equal(from_model, from_file, atol=1e-5)
    # other passages, a damaged or a missing file: nothing to stand in, the model scores the split
    assert load_predictions(run, task.subsample(2), "test") is None
    (run / PREDICTIONS).write_text((run / PREDICTIONS).read_text()[:300])
    assert load_predictions(run, task, "test") is None
    assert load_predictions(tmp_path / "nowhere", task, "test") is None
    with pytest.raises(ValueError, match="give one row per passage of the split"):
        classifier_report({"full": probs[:-1]}, task)


def test_notebook_04_takes_the_saved_probabilities_and_scores_the_split_when_there_are_none(base, csv_task, tmp_path):
    from workbench.notebook import NotebookContext, finetuned_probabilities

    _, task = csv_task
    run = tmp_path / "finetune" / "frozen"
    finetune(base, task, quick(mode="frozen", max_iters=4, eval_interval=4, dtype="float32"), run, progress=False)
    ctx = NotebookContext("04_evaluation", "smoke", tmp_path)
    saved = finetuned_probabilities(ctx, task)
    assert list(saved) == ["frozen"] and np.array_equal(saved["frozen"], load_predictions(run, task, "test"))
    (run / PREDICTIONS).unlink()  # an older run: the classifier scores the test split instead
    assert np.allclose(finetuned_probabilities(ctx, task)["frozen"], saved["frozen"], atol=1e-5)


@pytest.mark.parametrize("name, how", [("model.safetensors", "truncated"), ("labels.json", "garbage"),
                                       ("finetune.json", "truncated"), ("tokenizer.json", "missing"),
                                       ("finetune.json", "wrong field"), ("config.json", "wrong field"),
                                       ("tokenizer.json", "wrong field"), ("labels.json", "an object"),
                                       ("labels.json", "a class too many")])
def test_a_damaged_finetuned_model_is_one_line_naming_the_file(base, csv_task, tmp_path, name, how):
    _, task = csv_task
    finetune(base, task, quick(mode="frozen", max_iters=2, eval_interval=2), tmp_path / "run", progress=False)
    path = tmp_path / "run" / "model" / name
    if how == "missing":
        path.unlink()
    elif how == "wrong field":  # parses, but a field is of the wrong type (a hand edit)
        content = json.loads(path.read_text())
        section = content.get("model", content) if name == "config.json" else content
        section[{"finetune.json": "lora_r", "config.json": "n_embd", "tokenizer.json": "kind"}[name]] = [1]
        path.write_text(json.dumps(content))
    elif how == "an object":  # it was read as the list of its keys
        path.write_text('{"comedy": 0, "history": 1}')
    elif how == "a class too many":  # it was blamed on model.safetensors, whose head has one class less
        path.write_text(json.dumps([*json.loads(path.read_text()), "romance"]))
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if how == "truncated" else b"\xff\x00junk")
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        load_finetuned(tmp_path / "run")
    message = str(info.value)
    assert "\n" not in message
    if how == "missing":
        assert message == f"{path.parent} lacks {name}; point at a finetune run's --out, or copy the missing file again from its source"
    else:
        assert isinstance(info.value, ckpt.DamagedCheckpointError)
        cut = how in ("truncated", "garbage")
        assert message.startswith(f"checkpoint file {path} is damaged ({'truncated or not ' if cut else ''}")


@pytest.mark.parametrize("workers", [1, 2], ids=["here", "two-worker-processes"])
def test_compare_modes_gives_one_row_per_run_plus_tfidf(base, csv_task, tmp_path, workers):
    _, task = csv_task
    comparison = compare_modes(base, task, modes=["full", "frozen"], seeds=[0, 1], base_config=quick(max_iters=6),
                               out_dir=tmp_path / "ft", workers=workers)
    df = comparison.runs
    assert sorted(comparison.histories) == sorted(comparison.classifiers) == ["frozen", "full"]
    assert "val_macro_f1" in comparison.histories["full"].columns
    assert sorted(p.name for p in (tmp_path / "ft").iterdir()) == ["frozen", "full"]  # the first seed of each mode
    assert df["mode"].tolist() == ["full", "full", "frozen", "frozen", "tfidf"] and df["seed"].tolist()[:4] == [0, 1, 0, 1]
    # each mode's first-seed row, its metrics and its classifier are the same run
    test_texts, y = task.test["text"].tolist(), task.test["label_id"].to_numpy()
    for mode, row in df.groupby("mode", sort=False).first().iterrows():
        assert row["test_macro_f1"] == comparison.metrics[mode]["test_macro_f1"], mode
        if mode != "tfidf":
            pred = comparison.classifiers[mode].predict_proba(test_texts).argmax(-1)
            assert row["test_macro_f1"] == pytest.approx(macro_f1(y, pred, 3)), mode
    assert df["test_macro_f1"].iloc[-1] == tfidf_baseline(task)["test_macro_f1"]
    s = summarize(df)
    assert list(s.index) == ["full", "frozen", "tfidf"] and s.loc["full", "seeds"] == 2
    assert pd.isna(s.loc["tfidf", "test_macro_f1_std"])  # one run: no spread to report
    assert s.loc["full", "test_macro_f1_mean"] == pytest.approx(df[df["mode"] == "full"]["test_macro_f1"].mean())


class Records:
    """A Trainer callback that keeps every record it is given."""

    def __init__(self):
        self.steps, self.evals, self.runs = [], [], []

    def on_run(self, name):
        self.runs.append(name)

    def on_step(self, trainer, record):
        self.steps.append(record)

    def on_eval(self, trainer, record):
        self.evals.append(record)


def test_grid_in_worker_processes_gives_the_runs_made_here_and_replays_them_to_callbacks(base, csv_task, one_thread):
    _, task = csv_task
    grid = dict(modes=["full", "lora"], seeds=[0, 1], base_config=quick(max_iters=6), tfidf=False)
    here, seen_here = Records(), Records()
    local = compare_modes(base, task, workers=1, callbacks=[seen_here], **grid)
    pooled = compare_modes(base, task, workers=2, callbacks=[here], **grid)  # one thread each, as here
    columns = [c for c in local.runs.columns if c != "train_s"]
    pd.testing.assert_frame_equal(pooled.runs[columns], local.runs[columns])
    pd.testing.assert_frame_equal(pooled.histories["lora"].drop(columns=["ms_per_iter", "tokens_per_s"], errors="ignore"),
                                  local.histories["lora"].drop(columns=["ms_per_iter", "tokens_per_s"], errors="ignore"))
    # every run's curve reaches the callbacks, after the run rather than step by step
    assert len(here.steps) == len(seen_here.steps) == 4 * 6
    assert [r["val_macro_f1"] for r in here.evals] and len(here.evals) == len(seen_here.evals)
    assert sorted(r["val_macro_f1"] for r in here.evals) == sorted(r["val_macro_f1"] for r in seen_here.evals)
    # each run is named before its records (a live figure titles itself with it)
    assert seen_here.runs == ["full, seed 0 (1 of 4)", "full, seed 1 (2 of 4)", "lora, seed 0 (3 of 4)",
                              "lora, seed 1 (4 of 4)"]
    assert sorted(name.split(" (")[0] for name in here.runs) == sorted(n.split(" (")[0] for n in seen_here.runs)
    assert [name.split(" (")[1] for name in here.runs] == ["1 of 4)", "2 of 4)", "3 of 4)", "4 of 4)"]


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_a_grid_decides_an_auto_dtype_once_for_every_run(monkeypatch, fast_bf16):
    """Worker processes would each time bf16 against fp32 anew: the grid hands every run the dtype
    this process decided, and a dtype a mode sets itself stays."""
    from workbench import compare

    class Stop(Exception):
        pass

    jobs = []

    def run_grid(checkpoint, task, grid_jobs, *args):
        jobs.extend(grid_jobs)
        raise Stop

    monkeypatch.setattr(compare, "_run_grid", run_grid)
    monkeypatch.setattr(train_module, "cpu_bf16_speedup", lambda: 3.0 if fast_bf16 else 1.0)
    monkeypatch.delenv("WORKBENCH_CPU_BF16", raising=False)  # the timing decides, not a caller's setting
    with pytest.raises(Stop):
        compare.compare_modes("ckpt", None, modes=["full", "lora"], seeds=[0, 1], base_config=quick(),
                              overrides={"lora": {"train": {"dtype": "float32"}}})
    auto = "bfloat16" if fast_bf16 else "float32"
    assert [(mode, config.train.dtype) for mode, config, *_ in jobs] == [("full", auto)] * 2 + [("lora", "float32")] * 2


def test_grid_workers_take_the_longest_runs_first_and_results_keep_the_table_order(monkeypatch):
    import concurrent.futures
    from types import SimpleNamespace

    from workbench import compare

    submitted = []

    class Pool:  # runs each job on submission, remembering the order the workers would take them in
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, fn, source, task, config, *rest):
            submitted.append(config.mode)
            future = concurrent.futures.Future()
            future.set_result(SimpleNamespace(mode=config.mode, history=SimpleNamespace(records=[])))
            return future

    monkeypatch.setattr(compare, "ProcessPoolExecutor", Pool)
    modes = ["full", "frozen", "scratch", "lora", "multitask", "hf"]
    jobs = [(mode, SimpleNamespace(mode=mode), None, True) for mode in modes]
    results = compare._run_grid("ckpt", None, jobs, 2, [], False)
    assert submitted == ["hf", "multitask", "full", "scratch", "lora", "frozen"]
    assert [r.mode for r in results] == modes


def test_grid_workers_one_per_thread_on_a_cpu_and_one_on_a_gpu():
    assert grid_workers(100, "cpu") == torch.get_num_threads()
    assert grid_workers(1, "cpu") == 1
    assert grid_workers(100, "cuda") == 1


@pytest.mark.parametrize("kwargs, fix", [
    ({"mode": "bert"}, "pick one of those"),
    ({"mode": "hf", "pooling": "last"}, "use pooling='mean' or 'cls'"),
    ({"pooling": "cls"}, "use 'mean' or 'last'"),
    ({"mode": "multitask", "lm_weight": 0.0}, "lm_weight > 0"),
    ({"layer_decay": 0.0}, "(0, 1]"),
    ({"max_len": 0}, "positive integer"),
])
def test_config_errors_name_the_fix(kwargs, fix):
    with pytest.raises(ValueError, match=None) as e:
        FinetuneConfig(**kwargs)
    assert fix in str(e.value)


def test_hf_mode_finetunes_a_copy_of_minilm_under_cpu_bf16_autocast(minilm_bf16_run, csv_task):
    """The default profile's MiniLM run: dtype="bfloat16" on the CPU trains, evaluates and scores the
    test split under bf16 autocast; the shared MiniLM instance is never trained."""
    from workbench.capture import load_minilm

    _, task = csv_task
    result, forwards = minilm_bf16_run.result, minilm_bf16_run.forwards
    m = result.metrics
    assert m["mode"] == "hf" and m["total_params"] > 20_000_000
    assert m["trainable_params"] == m["total_params"] - (384 * 384 + 384)  # all but the unused pooler
    assert torch.equal(load_minilm()[0].embeddings.word_embeddings.weight, minilm_bf16_run.shared_before)
    # training steps 2, 3, 4 (train mode), evaluations after steps 2 and 4, then the test split (eval mode)
    assert [training for training, _, _ in forwards] == [True, False, True, True, False, False]
    assert [(logits, set(linears)) for _, logits, linears in forwards] == [(torch.bfloat16, {torch.bfloat16})] * 6
    losses = result.history.df["loss"].dropna()
    val_losses = result.history.evals()["val_loss"]
    assert np.isfinite(losses).all() and losses.iloc[-1] < losses.iloc[0] and val_losses.iloc[-1] < val_losses.iloc[0]
    # the test metrics are the restored best weights scored in the training dtype
    idx, lengths = encode_texts(result.classifier.tokenizer, task.test["text"].tolist(), m["max_len"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = predict_logits(result.model, idx, lengths)
    expected = split_metrics(task.test["label_id"].to_numpy(), logits.argmax(-1).numpy(), list(task.labels), "test_")
    for key in ("test_accuracy", "test_macro_f1", "test_confusion"):
        assert m[key] == expected[key], key

    idx, lengths = encode_texts(result.classifier.tokenizer, ["war", "the fool and my lord of england"], 16)
    assert idx[0, 0] == 101 and idx[0, lengths[0] - 1] == 102  # [CLS] ... [SEP], right-padded
    model = result.model.eval()
    alone, _ = model(idx[:1, : lengths[0]], lengths[:1])
    assert torch.allclose(alone[0], model(idx, lengths)[0][0], atol=1e-5)  # the mask hides the padding


# ------------------------------------------------------------------------------------- command line
def test_cli_finetune_writes_the_model_and_metrics(base, csv_task, tmp_path):
    path, _ = csv_task
    code, out, err = cli("finetune", "--checkpoint", base, "--task", path, "--mode", "frozen", "--max-iters", "8",
                         "--batch-size", "8", "--head-lr", "0.01", "--seed", "3", "--device", "cpu",
                         "--out", tmp_path / "run")
    assert code == 0, err
    assert "frozen: test accuracy" in out
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"test_accuracy", "test_macro_f1", "test_per_class", "train_s", "trainable_params", "val_macro_f1"} <= set(m)
    assert set(m["test_per_class"]["comedy"]) == {"precision", "recall", "f1", "support"}
    assert m["seed"] == 3 and m["trainable_params"] == 32 * 3 + 3
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    predictions = pd.read_csv(tmp_path / "run" / PREDICTIONS)
    assert f"predictions: {tmp_path / 'run' / PREDICTIONS}" in out and len(predictions) == m["n_val"] + m["n_test"]


def test_cli_resume_continues_an_interrupted_run_as_saved(base, csv_task, tmp_path):
    """`finetune --resume` with no other flags takes every setting from the run and carries on from its
    checkpoint (that a resume is exact: test_resume_of_a_finetune_is_exact)."""
    path, task = csv_task
    config = quick(mode="frozen", max_iters=8, eval_interval=4, seed=5)
    paused = finetune(base, task, config, tmp_path / "run", callbacks=[StopAt(4)], progress=False)
    code, out, err = cli("finetune", "--task", path, "--resume", "--out", tmp_path / "run")  # no other flags
    assert code == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["seed"] == 5 and m["steps"] == 8 and m["completed"] is True
    assert json.loads((tmp_path / "run" / "model" / "finetune.json").read_text()) == asdict(config)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["step"].max() == 8
    first_four = paused.history.df
    pd.testing.assert_frame_equal(history.iloc[: len(first_four)][first_four.columns].reset_index(drop=True),
                                  first_four, check_dtype=False)  # timings too: the checkpoint's records, not a restart's


def test_epochs_and_examples_per_second_count_every_micro_batch(base, csv_task, tmp_path):
    """With --grad-accum 2 a step learns from two batches: epochs and examples/s count both."""
    _, task = csv_task
    m = finetune(base, task, quick(mode="frozen", max_iters=4, eval_interval=4, grad_accum=2), progress=False).metrics
    assert m["epochs"] == pytest.approx(4 * 8 * 2 / len(task.train))
    assert m["examples_per_s"] == pytest.approx(8 * 2 * 1000 / m["ms_per_iter_median"])


def test_cli_bare_resume_reloads_the_task_as_the_run_was_started(base, tmp_path, monkeypatch):
    """The run keeps its task's flags (task_source): `finetune --resume --out RUN` alone reloads the same
    table, columns, split and passage length, from another folder too."""
    rows = pd.DataFrame(tiny_rows(30)).rename(columns={"text": "passage", "label": "genre"})
    rows.to_csv(tmp_path / "speeches.csv", index=False)
    monkeypatch.chdir(tmp_path)  # a relative --task
    task_flags = ["--task", "speeches.csv", "--text-col", "passage", "--label-col", "genre", "--split-seed", "3",
                  "--max-chars", "0"]
    code, _, err = cli("finetune", "--checkpoint", base, *task_flags, "--mode", "frozen", "--max-iters", "4",
                       "--batch-size", "8", "--device", "cpu", "--out", tmp_path / "run")
    assert code == 0, err
    first = json.loads((tmp_path / "run" / "metrics.json").read_text())
    monkeypatch.chdir(tmp_path.parent)
    code, _, err = cli("finetune", "--resume", "--out", tmp_path / "run", "--max-iters", "6")
    assert code == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["steps"] == 6 and m["n_train"] == first["n_train"] and m["labels"] == first["labels"]
    source = json.loads((tmp_path / "run" / "model" / "task_source.json").read_text())
    assert source == {"spec": str(tmp_path / "speeches.csv"), "text_col": "passage", "label_col": "genre", "seed": 3,
                      "max_chars": None}
    code, _, err = cli("finetune", "--resume", "--out", tmp_path / "run", "--max-iters", "8", "--split-seed", "4")
    assert code == 2 and "the task differs from the run's" in err  # a flag given still wins


def test_a_run_saved_before_task_fingerprints_resumes_with_a_warning_and_names_the_flags(base, csv_task, tmp_path,
                                                                                          caplog):
    """An older run's task.json has sizes only and it keeps no task_source: a resume on a task of the same
    sizes warns that its rows cannot be checked; one of other sizes names the flags to pass (none to drop)."""
    _, task = csv_task
    config = quick(mode="frozen", max_iters=8, eval_interval=4)
    finetune(base, task, config, tmp_path / "run", callbacks=[StopAt(4)], progress=False)
    step = ckpt.latest_checkpoint(tmp_path / "run")
    info = json.loads((step / "task.json").read_text())
    (step / "task.json").write_text(json.dumps({k: v for k, v in info.items() if k != "fingerprint"}))
    (step / "task_source.json").unlink()
    with pytest.raises(ValueError, match=r"\(on the command line: this run does not keep how its task was loaded, so "
                                         r"pass the --task, --text-col"):
        finetune(None, task.subsample(2), config, tmp_path / "run", resume=True, progress=False)
    assert finetune(None, task, config, tmp_path / "run", resume=True, progress=False).metrics["completed"]
    assert "keeps its task's sizes but no fingerprint of its rows" in caplog.text


@pytest.mark.parametrize("args, fix", [
    (["--checkpoint", "BASE", "--task", "nope.csv"], "does not exist"),
    (["--checkpoint", "BASE", "--task", "CSV", "--label-col", "genre"], "(columns: text, label)"),
    (["--checkpoint", "BASE", "--task", "CSV", "--mode", "bert"], "pick one of those"),
    (["--checkpoint", "missing", "--task", "CSV"], "train one first"),
    (["--task", "CSV", "--mode", "frozen"], "needs --checkpoint"),
    (["--checkpoint", "BASE", "--task", "CSV", "OUT_EXISTS"], "already holds files"),
    (["--checkpoint", "BASE", "--task", "CSV", "--resume"], "no checkpoint to resume"),
    (["--checkpoint", "BASE", "--task", "HEADER_ONLY"], "has no rows; add rows"),
    (["--checkpoint", "BASE", "--task", "CSV", "--max-chars", "-5"], "max_chars (--max-chars) is -5"),
    (["--task", "CSV", "--mode", "hf", "--hf-model", "NOT_HF"], "is not a Hugging Face model folder"),
])
def test_cli_finetune_bad_input_is_one_line_exit_2(base, csv_task, tmp_path, args, fix):
    path, _ = csv_task
    out = tmp_path / "run"
    if "OUT_EXISTS" in args:
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    (tmp_path / "header.csv").write_text("text,label\n")
    (tmp_path / "not_hf").mkdir()  # a folder, but no config.json or tokenizer files
    swap = {"BASE": base, "CSV": path, "HEADER_ONLY": tmp_path / "header.csv", "NOT_HF": tmp_path / "not_hf"}
    argv = [swap.get(a, a) for a in args if a != "OUT_EXISTS"]
    code, _, err = cli("finetune", *argv, "--out", out, "--device", "cpu", "--max-iters", "2")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fix in lines[0], err
    assert not out.exists() or [p.name for p in out.iterdir()] == ["keep.txt"]


def test_window_is_max_len_capped_by_the_block_size():
    assert FinetuneConfig(max_len=80).window(128) == 80
    assert FinetuneConfig(max_len=200).window(128) == 128
    assert FinetuneConfig().window(64) == 64


def test_a_window_shorter_than_the_passages_is_reported(base, csv_task, caplog):
    path, task = csv_task
    with caplog.at_level("WARNING", logger="workbench.finetune"):
        cut = finetune(base, task, quick(max_iters=2, max_len=8), progress=False)
    assert cut.metrics["window_filled_pct"] > 90 and "raise max_len (--max-len" in caplog.text
    assert "full, seed 0: " in caplog.text  # which run of a grid
    caplog.clear()
    short = load_task(path, max_chars=20)  # char tokens: every passage fits the 32-token block
    with caplog.at_level("WARNING", logger="workbench.finetune"):
        whole = finetune(base, short, quick(max_iters=2), progress=False)
    assert whole.metrics["window_filled_pct"] == 0 and "raise max_len (--max-len" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="workbench.finetune"):  # the window is the whole 32-token block already:
        full = finetune(base, task, quick(max_iters=2), progress=False)  # the most it can read, nothing to say
    assert full.metrics["window_filled_pct"] > 25 and caplog.text == ""
    caplog.clear()
    with caplog.at_level("WARNING", logger="workbench.compare"):  # beside TF-IDF, which reads them whole, it matters
        compare_modes(base, task, ["frozen"], seeds=[0], base_config=quick(max_iters=2), workers=1)
    assert "the passages are cut for frozen (" in caplog.text and "lower max_chars (--max-chars)" in caplog.text


# ------------------------------------------------------------------------------------- undertraining
def test_a_run_whose_macro_f1_was_still_rising_at_its_end_says_more_epochs_may_help(base, csv_task, caplog):
    """9 steps (evaluations at 3, 6 and 9) leave the validation macro-F1 at its best at the last one: a warning
    naming the run and the setting; 30 steps peak earlier: none (the loss may still fall, as the model grows
    more confident: it is not what the kept weights are chosen by)."""
    _, task = csv_task
    with caplog.at_level("WARNING", logger="workbench.finetune"):
        short = finetune(base, task, quick(eval_interval=3, max_iters=9), progress=False)
    f1 = short.history.evals()["val_macro_f1"].to_numpy()
    assert short.metrics["still_rising"] and short.metrics["best_step"] == 9 and f1[-1] > f1[:-1].max()
    assert caplog.text.count("more epochs may help") == 1
    assert (f"full, seed 0: the validation macro-F1 rose to its best at the last evaluation ({f1[:-1].max():.3f} -> "
            f"{f1[-1]:.3f}) at step 9 ({short.metrics['epochs']:.1f} epochs): more epochs may help; raise "
            'FinetuneConfig.train.epochs or max_iters (now max_iters 9); in a notebook, profile "full" trains longer') \
        in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="workbench.finetune"):
        long = finetune(base, task, quick(max_iters=60), progress=False)
    assert not long.metrics["still_rising"] and long.metrics["best_step"] < 60 and caplog.text == ""
    with caplog.at_level("WARNING", logger="workbench.finetune"):  # a grid says it once for all its runs
        finetune(base, task, quick(eval_interval=3, max_iters=9), progress=False, warn_if_rising=False)
    assert caplog.text == ""


@pytest.mark.parametrize("scores, losses, why", [
    ([0.5, 0.7], [1.0, 1.0], "the validation macro-F1 rose to its best at the last evaluation (0.500 -> 0.700)"),
    ([0.5, 0.7, 0.7], [1.0, 0.9, 0.8], "the validation macro-F1 is at its best (0.700) and the validation loss still "
                                       "fell 11% over the last interval (0.900 -> 0.800)"),  # a tie, still learning
    ([0.5, 0.7, 0.7], [1.0, 0.9, 0.88], ""),  # a tie, the loss nearly flat (2%): it has stopped rising
    ([0.9, 1.0], [1.0, 0.5], ""),  # perfect: more epochs cannot raise it
    ([0.9, 0.5, 0.6], [1.0, 0.9, 0.5], ""),  # rising again, but below its best (the loss alone says nothing)
    ([0.9], [1.0], ""),  # one evaluation: nothing to compare
])
def test_still_rising_wants_the_last_macro_f1_at_its_best_below_one_and_rising_or_its_loss_falling(scores, losses, why):
    history = History([{"step": 10 * (i + 1), "val_macro_f1": f, "val_loss": v}
                       for i, (f, v) in enumerate(zip(scores, losses))])
    assert still_rising(history) == why


@pytest.mark.parametrize("length, flag", [({"max_iters": 9}, "--max-iters (now 9), or give --epochs"),
                                          ({"max_iters": None, "epochs": 1.0}, "--epochs (now 1)")])
def test_the_still_rising_warning_names_the_flag_on_the_command_line(base, csv_task, caplog, length, flag):
    from workbench.run import COMMAND_LINE

    _, task = csv_task
    token = COMMAND_LINE.set(True)
    try:
        with caplog.at_level("WARNING", logger="workbench.finetune"):
            result = finetune(base, task, quick(eval_interval=3, **length), progress=False)
    finally:
        COMMAND_LINE.reset(token)
    assert result.metrics["steps"] == 9 and f": more epochs may help; raise {flag}\n" in caplog.text


def test_a_grid_says_once_which_modes_were_still_rising(base, csv_task, caplog):
    _, task = csv_task
    with caplog.at_level("WARNING"):
        compare_modes(base, task, ["full", "frozen"], seeds=[0, 1], base_config=quick(eval_interval=3, max_iters=9),
                      workers=1, tfidf=False)
    rising = [r.getMessage() for r in caplog.records if "still improving" in r.getMessage()]
    assert len(rising) == 1 and re.fullmatch(
        r"validation scores still improving at the last evaluation for (full|frozen) \([12] of 2 runs\)"
        r"(, frozen \([12] of 2 runs\))?: more epochs may help; raise FinetuneConfig.train.epochs or max_iters; "
        r'in a notebook, profile "full" trains longer', rising[0]), rising


def test_predict_logits_restores_training_mode_even_when_a_batch_fails():
    """An error mid-prediction (out of memory, an interrupt) must not leave the model in eval mode: dropout would
    then be off for the rest of a notebook's training."""
    class Failing(torch.nn.Module):
        def forward(self, x, n):
            assert not self.training
            raise RuntimeError("out of memory")

    model = Failing().train()
    with pytest.raises(RuntimeError, match="out of memory"):
        predict_logits(model, torch.zeros(3, 4, dtype=torch.long), torch.tensor([4, 2, 3]))
    assert model.training
