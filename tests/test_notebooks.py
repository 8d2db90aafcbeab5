"""The notebooks: committed clean and thin, validated parameters, and (smoke profile) the
metrics they write after a real papermill run."""

import json
import re
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from workbench import data, notebook
from workbench.report import run_report

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_the_ordered_notebooks_exist():
    names = [p.stem for p in ALL]
    assert names == ["01_attention", "02_pretraining", "03_finetuning", "04_evaluation", "05_seq2seq",
                     "06_interpretability"]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_thin(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.outputs or c.execution_count for c in code), "strip outputs before committing"
    assert not any(re.search(r"^\s*(def|class)\s", c.source, re.M) for c in code), "move functions into workbench/"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    for line in params[0].source.splitlines():  # literals only
        assert re.match(r"^\w+ = (\".*\"|'.*'|-?[\d.]+|True|False|None)\s*(#.*)?$", line), line
    assert "profile" in params[0].source and "run_dir" in params[0].source
    first_code_after_params = code[code.index(params[0]) + 1]
    assert "notebook.start(" in first_code_after_params.source, "validate parameters in the first cell"
    assert all(len(c.source.splitlines()) <= 16 for c in code), "keep cells short"


# ------------------------------------------------------------------ parameter checks
def test_start_rejects_an_unknown_profile(tmp_path):
    with pytest.raises(ValueError, match=r"profile='huge'.*set profile = \"smoke\""):
        notebook.start("02_pretraining", profile="huge", run_dir=str(tmp_path))


def test_start_rejects_wrong_types(tmp_path):
    with pytest.raises(TypeError, match=r"parameter profile must be str, got int 3"):
        notebook.start("02_pretraining", profile=3, run_dir=str(tmp_path))
    with pytest.raises(TypeError, match=r"parameter probe_text must be str.*set e.g. probe_text ="):
        notebook.start("02_pretraining", profile="smoke", run_dir=str(tmp_path), probe_text=(5, str, '"x"'))


def test_start_names_the_notebook_that_makes_a_missing_artifact(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run notebooks/02_pretraining.ipynb first"):
        notebook.start("03_finetuning", profile="smoke", run_dir=str(tmp_path),
                       requires={"pretrain/model": "02_pretraining"})


def test_start_refuses_to_overwrite_an_earlier_run(tmp_path):
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="set run_dir to a new folder"):
        notebook.start("02_pretraining", profile="smoke", run_dir=str(tmp_path), outputs=("pretrain",))
    with pytest.raises(ValueError, match="run_dir=.*keep.txt' is a file; set run_dir to a folder"):  # not [Errno 17]
        notebook.start("01_attention", profile="smoke", run_dir=str(tmp_path / "pretrain" / "keep.txt"))
    assert (tmp_path / "pretrain" / "keep.txt").read_text() == "x"


def test_seq2seq_task_takes_the_task_flags_of_seq2seq_train(tmp_path):
    """05's `locales` draws the date task in those locales at the profile's sizes; a parameter the chosen
    task would not read is refused in one line, as the command line refuses its flag."""
    from workbench.report import notebook_parameters
    from workbench.translation import DATE_LOCALES

    ctx = notebook.NotebookContext("05_seq2seq", "smoke", tmp_path)
    task = notebook.seq2seq_task(ctx, "dates", locales="en, ja")
    assert sorted(set(task.train["locale"])) == sorted(set(task.test["locale"])) == ["en", "ja"]
    assert task.source == {"spec": "dates", "seed": 0, "n_train": 3000, "n_val": 100, "n_test": 100,
                           "locales": ["en", "ja"]}  # the smoke profile's sizes
    # the notebook's default is every locale, so a file of pairs with the default locales is not refused
    assert notebook_parameters(NOTEBOOKS / "05_seq2seq.ipynb")["locales"] == ",".join(DATE_LOCALES)
    with pytest.raises(ValueError, match=r"locales='en'.*is a file of pairs: leave locales at its default"):
        notebook.seq2seq_task(ctx, str(tmp_path / "pairs.tsv"), locales="en")
    with pytest.raises(ValueError, match=r"source_col='en'.*the date task reads none: set translation_task"):
        notebook.seq2seq_task(ctx, "dates", source_col="en")

# A corpus of English stories with no comma and no 'q': the plays' default lines cannot be spelled in it.
STORIES = ["Once upon a time there was a little red hen who lived on a farm near the woods",
           "She found some grains of wheat and asked who would help her plant them",
           "Not I said the cat and not I said the dog and not I said the lazy pig"]


def stories_corpus(tmp_path, rows=121):
    import pandas as pd

    from workbench import data

    pd.DataFrame({"id": range(rows), "body": [STORIES[i % 3] for i in range(rows)]}).to_csv(tmp_path / "stories.csv",
                                                                                         index=False)
    return data.load_corpus(tmp_path / "stories.csv", text_column="body")


def test_default_texts_are_the_notebooks_parameters():
    """`corpus_text` tells a default left as it is from a text the user set by DEFAULT_TEXTS: they must be
    the literals of the notebooks' parameters cells."""
    from workbench.report import notebook_parameters

    for name, texts in notebook.DEFAULT_TEXTS.items():
        params = notebook_parameters(NOTEBOOKS / f"{name}.ipynb")
        assert {key: params[key] for key in texts} == texts, name


def test_a_default_text_of_the_plays_becomes_a_line_of_your_corpus(tmp_path, capsys):
    """Left at its default (a line of the plays) with a corpus of your own, a text becomes the opening words
    of a line of the corpus (about the default's length), with one printed line, whether or not the
    tokenizer could spell it; set by you, it is kept, or, with characters a char tokenizer of your corpus
    never saw, stops with one line naming the parameter and the fix."""
    from workbench.tokenizer import CharTokenizer, train_tokenizer

    corpus = stories_corpus(tmp_path)
    char, bpe = train_tokenizer("char", corpus.train_text), train_tokenizer("bpe", corpus.train_text, 300)
    ctx = notebook.NotebookContext("01_attention", "smoke", tmp_path)
    default = notebook.DEFAULT_TEXTS["01_attention"]["text"]
    text = notebook.corpus_text(ctx, "text", default, corpus, char)
    # val's first line is where the 90% cut fell, mid-story: the passage opens the first whole line after it
    assert corpus.splits["val"].startswith("he woods\n\nShe found")
    assert text == "She found some grains of wheat and asked" and len(text) <= len(default)
    assert capsys.readouterr().out == (f"text: {default!r} has characters stories.csv never shows (',', 'T', 'b', 'q'); "
                                       f"using {text!r} from stories.csv (set text to choose)\n")
    with pytest.raises(ValueError, match=r"^text='Hello, world' has characters stories.csv never shows \(',', 'H'\), "
                                         r"which its char tokenizer cannot encode: set text to text of that corpus "
                                         r"\(text=\"...\"; in a report -p text \"...\"\)$"):
        notebook.corpus_text(ctx, "text", "Hello, world", corpus, char)
    assert notebook.corpus_text(ctx, "text", "the lazy pig", corpus, char) == "the lazy pig"  # yours, and spelled
    assert notebook.corpus_text(ctx, "text", default, corpus, bpe) == text  # BPE spells it, but it is the plays'
    assert capsys.readouterr().out == (f"text: {default!r} is a line of the plays; using {text!r} from stories.csv "
                                       "(set text to choose)\n")
    plays = data.load_corpus("shakespeare")
    assert notebook.corpus_text(ctx, "text", default, plays, bpe) == default  # the default data: kept
    assert notebook.corpus_text(ctx, "text", "Hello, world", corpus, bpe, CharTokenizer.train("Helo, wrd")) == \
        "Hello, world"  # only char tokenizers are checked, each against its own characters
    assert capsys.readouterr().out == ""
    prompt = notebook.corpus_text(notebook.NotebookContext("02_pretraining", "smoke", tmp_path), "sample_prompt",
                                  "ROMEO:\n", corpus, char)
    assert prompt == "She"  # a short default: whole words within its 7 characters, at least one
    (tmp_path / "zh.txt").write_text(("床前明月光，疑是地上霜。举头望明月，低头思故乡。" * 2 + "\n") * 40,
                                     encoding="utf-8")
    zh = data.load_corpus(tmp_path / "zh.txt")
    passage = notebook.corpus_text(ctx, "text", default, zh, train_tokenizer("char", zh.text))
    assert passage == ("床前明月光，疑是地上霜。举头望明月，低头思故乡。" * 2)[:len(default)]  # no spaces: cut at its length


def test_05s_default_text_becomes_a_source_of_your_pairs(tmp_path, capsys):
    from workbench.translation import load_pairs

    rows = [f"{w}\t{d}" for w, d in zip(["one", "two", "three", "four", "five"] * 8, [1, 2, 3, 4, 5] * 8)]
    (tmp_path / "numbers.tsv").write_text("source\ttarget\n" + "\n".join(rows) + "\n")
    task = load_pairs(tmp_path / "numbers.tsv")
    ctx = notebook.NotebookContext("05_seq2seq", "smoke", tmp_path)
    default = notebook.DEFAULT_TEXTS["05_seq2seq"]["explore_text"]
    first = task.test["source"].iloc[0]
    assert notebook.pair_source_text(ctx, "explore_text", default, task) == first
    assert capsys.readouterr().out == (f"explore_text: {default!r} is a date; using {first!r}, the first test source "
                                       "of numbers.tsv (set explore_text to choose)\n")
    assert notebook.pair_source_text(ctx, "explore_text", "seven", task) == "seven"  # yours: kept
    dates = load_pairs("dates", n_train=20, n_val=5, n_test=5)
    assert notebook.pair_source_text(ctx, "explore_text", default, dates) == default and capsys.readouterr().out == ""


def test_finetune_task_says_when_the_profile_subsamples(tmp_path, capsys):
    """The smoke profile keeps at most 24 passages per label in each split: a line says so, with each
    split's rows before and after; a profile that keeps everything prints nothing."""
    import pandas as pd
    from helpers import tiny_rows

    pd.DataFrame(tiny_rows(50)).to_csv(tmp_path / "reviews.csv", index=False)
    task = notebook.finetune_task(notebook.NotebookContext("03_finetuning", "smoke", tmp_path), str(tmp_path / "reviews.csv"))
    assert (len(task.train), len(task.val), len(task.test)) == (72, 15, 15)
    assert capsys.readouterr().out == ("smoke profile: at most 24 passages per label in each split (per_label); "
                                       "train 120 → 72, val 15 → 15, test 15 → 15\n")
    notebook.finetune_task(notebook.NotebookContext("03_finetuning", "default", tmp_path), str(tmp_path / "reviews.csv"))
    assert capsys.readouterr().out == ""


def test_02s_corpus_table_of_your_own_text_has_no_genre_and_notes_the_document_in_both_splits(tmp_path):
    """Your corpus has no genres: its table is by split alone. The document the 90% cut falls in counts in
    both splits (109 + 13 documents of 121 rows), and a note on both rows says so."""
    from workbench import data

    corpus = stories_corpus(tmp_path)
    summary = data.corpus_summary(corpus)
    assert summary.index.names == ["split"] and summary.index.tolist() == ["train", "val"]
    assert summary["documents"].tolist() == [109, 13] and len(corpus.documents) == 121
    assert summary["note"].tolist() == ["its last document goes on in val",
                                        "its first document began in train"]
    assert summary["characters"].sum() == len(corpus.text)
    assert "note" not in data.corpus_summary(stories_corpus(tmp_path, 120))  # the cut falls between two rows
    plays = data.corpus_summary(data.load_corpus("shakespeare"))
    assert plays.index.names == ["split", "genre"] and "note" not in plays


def test_01s_gpt_is_02s_on_the_same_corpus_else_its_own_reused_and_one_of_other_settings_refused(tmp_path):
    """01 shows 02's GPT (run_dir/pretrain) only when 02 read the same corpus; else it trains one in
    run_dir/attention_gpt, which a rerun reuses (the same weights, not trained again), and which a rerun on
    another corpus or profile refuses in one line rather than show a model of other data."""
    from workbench.config import preset, updated
    from workbench.pretrain import pretrain

    for name, text in (("a.txt", "to be or not to be\n"), ("b.txt", "all the world's a stage\n")):
        (tmp_path / name).write_text(text * 400)
    ctx = notebook.start("01_attention", profile="smoke", run_dir=str(tmp_path / "run"))
    config = lambda corpus, iters=4: updated(preset("smoke", train={"max_iters": iters}),
                                             {"data": {"corpus": str(tmp_path / corpus)}})
    pretrain(config("a.txt"), ctx.path("pretrain"), progress=False)  # as 02 on a.txt
    assert notebook.trained_gpt(ctx, config("a.txt"))[2] == str(ctx.path("pretrain"))
    model, tokenizer, source = notebook.trained_gpt(ctx, config("b.txt"))  # not 02's: it read a.txt
    assert source == str(ctx.path("attention_gpt")) and set(tokenizer.chars) == set("all the world's a stage\n")
    again, _, _ = notebook.trained_gpt(ctx, config("b.txt"))
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(FileExistsError, match=r"already holds attention_gpt/, trained with other settings \(train"
                                              r".max_iters: 4 -> 8\): set run_dir to a new folder, or delete "):
        notebook.trained_gpt(ctx, config("b.txt", iters=8))


def test_tables_show_a_dash_where_no_value_exists_and_rounded_numbers(tmp_path):
    import pandas as pd

    tokens = pd.DataFrame({"tokenizer": ["char"] * 3 + ["bpe"], "position": [0, 1, 2, 0], "token": ["T", "o", " ", "To "]})
    wide = tokens.pivot(index="position", columns="tokenizer", values="token").T  # bpe has no position 1 or 2
    html = notebook.table(wide).to_html()
    assert "NaN" not in html and html.count(">—<") == 2
    numbers = notebook.table(pd.DataFrame({"perplexity": [61.86457, 62.95348], "tokens_per_s": [15932.98, 9000.0],
                                           "sparsity": [float("nan"), 0.5]})).to_html()
    assert ">61.865<" in numbers and ">—<" in numbers and "NaN" not in numbers
    assert ">15,933<" in numbers and ">9,000<" in numbers  # from 1,000 up, decimals are noise
    across = cells(notebook.table(pd.DataFrame({"ms": [999.5, 1000.5, float("nan")]})))
    assert across == ["999.500", "1,000.500", "—"]  # a column reads alike: one value under 1,000 keeps them all
    with pd.option_context("display.precision", 6):  # start() sets it for the notebook's plain tables
        notebook.start("01_attention", profile="smoke", run_dir=str(tmp_path))
        assert pd.get_option("display.precision") == notebook.TABLE_PRECISION == 3
        assert "0.123" in pd.DataFrame({"x": [0.1234567]})._repr_html_() and "0.1234" not in pd.DataFrame(
            {"x": [0.1234567]})._repr_html_()


def cells(styler) -> list[str]:
    """The text of a displayed table's data cells, row by row."""
    return re.findall(r'class="data [^>]*>([^<]*)</td>', styler.to_html())


def test_tables_show_integers_by_type_and_every_float_with_its_decimals():
    """A run's figures in an object Series keep their types (900 reads 900, 4.0197 reads 4.020); a count
    column with a missing value is "Int64"; a float that happens to be whole (an accuracy of 1.0, a
    loss of 4.0) keeps its decimals, so it reads like the rest of its column."""
    import pandas as pd

    figures = pd.Series({"val_loss": 4.0197, "best_step": 900, "params": 1055488, "exact": 1.0,
                         "tokens_per_s": 18264.429}, dtype=object)
    assert cells(notebook.table(figures)) == ["4.020", "900", "1,055,488", "1.000", "18,264"]
    decoders = pd.DataFrame({"beam": pd.array([1, 4, None], dtype="Int64"), "exact_match": [1.0, 0.969, 0.5],
                             "n": [993] * 3, "figure": [4, 0.25, "bleu"]})  # object column: value by value
    assert cells(notebook.table(decoders)) == ["1", "1.000", "993", "4", "4", "0.969", "993", "0.250",
                                               "—", "0.500", "993", "bleu"]
    assert cells(notebook.table(pd.Series([4.0, 0.5]))) == ["4.000", "0.500"]


def test_text_table_shows_text_whole_left_aligned_and_wrapped():
    import pandas as pd

    speech = "ROMEO:\n" + "But soft, what light through yonder window breaks? " * 4
    html = notebook.text_table(pd.DataFrame({"step": [0, 150], "val_loss": [None, 4.2], "text": ["x", speech]})).to_html()
    assert speech in html and ">—<" in html and ">4.200<" in html
    wrapped = {cell for selectors, rule in re.findall(r"([^{}]+)\{([^}]*)\}", html.split("</style>")[0])
               if "white-space: pre-wrap" in rule and "text-align: left" in rule
               for cell in re.findall(r"_(row\d+_col\d+)", selectors)}
    assert wrapped == {"row0_col2", "row1_col2"}  # the text column only


def test_metrics_summary_shows_every_row_and_paths_under_run_dir_relative(tmp_path):
    ctx = notebook.NotebookContext("04_evaluation", "smoke", tmp_path)
    ctx.write_metrics({f"figure_{i}": i + 0.5 for i in range(70)} | {"gpt_source": str(tmp_path / "pretrain"),
                                                                      "sweep": [1, 2], "steps": 900})
    summary = notebook.table(notebook.metrics_summary(ctx))
    assert len(summary.data) == 72  # the list is left out
    shown = cells(summary)
    assert len(shown) == 72 * 3 and "figure_69" in shown and "69.500" in shown  # no rows cut out of the middle
    assert "run_dir/pretrain" in shown and str(tmp_path) not in summary._repr_html_()
    assert shown[shown.index("steps") + 1] == "900"


def test_stream_sample_outside_ipython_prints_the_text_and_returns_it(capsys):
    """Outside a kernel (a script, this test) IPython's display() gives no handle to update: the
    prompt and the continuation are printed instead, and the continuation returned as in a kernel."""
    from helpers import tiny_gpt

    from workbench.generate import Engine, generate_text
    from workbench.tokenizer import train_tokenizer

    tokenizer = train_tokenizer("char", "to be or not to be")
    model = tiny_gpt(tokenizer.vocab_size)
    text = notebook.stream_sample(model, tokenizer, "to be", 12, seed=0)
    assert text == generate_text(Engine(model), tokenizer, ["to be"], 12, seed=0)[0]
    assert capsys.readouterr().out.endswith(f"to be{text}\n")


@pytest.mark.slow
def test_a_bad_parameter_stops_the_notebook_at_its_first_cell(tmp_path):
    out = tmp_path / "out.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(NOTEBOOKS / "02_pretraining.ipynb"), str(out), cwd=str(NOTEBOOKS),
                            parameters={"profile": "huge", "run_dir": str(tmp_path / "run")},
                            kernel_name="python3", execution_timeout=120, progress_bar=False)
    assert err.value.ename == "ValueError" and "profile='huge'" in err.value.evalue
    executed = nbformat.read(out, as_version=4)
    failed = [c for c in executed.cells if c.cell_type == "code" and any(o.get("output_type") == "error" for o in c.outputs)]
    assert len(failed) == 1 and "notebook.start(" in failed[0].source
    assert not (tmp_path / "run" / "pretrain").exists()


# ------------------------------------------------------------------ smoke runs
# Timing figures and absolute paths differ between runs; everything else must repeat exactly.
VOLATILE = {"tokens_per_s", "train_s", "estimated_train_s", "wall_s", "ms_per_iter_median", "gpt_source",
            "greedy_sentences_per_s", "beam_4_sentences_per_s", "rule-based_sentences_per_s"}  # 05's decoding speeds


def run_smoke_report(out):
    return run_report(None, out, profile="smoke", timeout=300)


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    """Every notebook through the real report runner with profile=smoke, sharing one run_dir."""
    out = tmp_path_factory.mktemp("report") / "smoke"
    report = run_smoke_report(out)
    return out, report


def metrics(out, name):
    return json.loads((out / "run" / "metrics" / f"{name}.json").read_text())


@pytest.mark.slow
def test_report_runs_every_notebook_in_order(smoke_report):
    out, report = smoke_report
    assert report["status"] == "ok"
    assert [n["name"] for n in report["notebooks"]] == [p.name for p in ALL]
    for entry in report["notebooks"]:
        assert entry["status"] == "ok" and entry["metrics"], entry["name"]
        assert (out / entry["html"]).exists()


@pytest.mark.slow
def test_01_attention_smoke_metrics(smoke_report):
    m = metrics(smoke_report[0], "01_attention")
    assert m["minilm_layers"] == 6 and m["minilm_heads"] == 12
    assert m["char_tokens"] == len("To be, or not to be, that is the question")
    assert 0 < m["bpe_tokens"] < m["char_tokens"]
    assert 2.0 < m["bpe_chars_per_token_val"] < 4.0
    assert m["walkthrough_rows_sum_to_one"] is True
    assert m["minilm_max_prev_token"] > 0.9  # pretrained MiniLM has a previous-token head
    assert m["gpt_layers"] == m["gpt_heads"] == 2 and m["gpt_mean_entropy"] > 0
    assert m["gpt_source"].endswith("attention_gpt")  # 01 runs before 02: it trains its own GPT


@pytest.mark.slow
def test_02_pretraining_smoke_metrics(smoke_report):
    import math
    out = smoke_report[0]
    m = metrics(out, "02_pretraining")
    assert m["val_loss"] < math.log(m["vocab_size"])  # learned something beyond uniform guessing
    assert m["vocab_size"] == 512
    assert len(m["sweep_params"]) == 3 and m["sweep_params"] == sorted(m["sweep_params"])
    assert m["sweep_non_embedding_params"] == sorted(m["sweep_non_embedding_params"])
    assert all(n < p for n, p in zip(m["sweep_non_embedding_params"], m["sweep_params"]))
    assert all(math.isfinite(v) for v in m["sweep_val_loss"])
    assert m["samples"] >= 2 and m["attention_snapshots"] >= 2
    assert m["estimated_train_s"] > 0 and m["tokens_per_s"] > 0
    assert (out / "run" / "pretrain" / "model" / "model.safetensors").exists()


@pytest.mark.slow
def test_03_finetuning_smoke_metrics(smoke_report):
    out = smoke_report[0]
    m = metrics(out, "03_finetuning")
    modes = ["full", "frozen", "scratch", "lora", "multitask", "hf", "tfidf"]
    f1 = {mode: m[f"{mode}_test_macro_f1_mean"] for mode in modes}
    assert m["best_mode"] == max(modes[:-1], key=f1.get)  # the best fine-tuned mode (TF-IDF is the reference)
    assert m["frozen_trainable_params"] < m["lora_trainable_params"] < m["full_trainable_params"]
    assert m["full_trainable_params"] == m["scratch_trainable_params"] == m["multitask_trainable_params"]
    assert m["n_train"] == m["n_val"] == m["n_test"] == 72  # 24 speeches per genre per split under smoke
    assert 0 < m["max_attention_shift"] < 1  # full fine-tuning moved the backbone's attention
    assert m["gpt_reads_whole_pct"] == 0  # smoke: passages of at least 200 characters, a 32-token window
    assert sorted(p.name for p in (out / "run" / "finetune").iterdir()) == sorted(modes[:-1])


@pytest.mark.slow
def test_04_evaluation_smoke_metrics(smoke_report):
    import math
    out = smoke_report[0]
    m, pretraining, finetuning = (metrics(out, n) for n in ("04_evaluation", "02_pretraining", "03_finetuning"))
    assert 0 < m["val_bits_per_char"] < 8 and 0 < m["test_bits_per_char"] < 8
    # the one held-out LM loss: 04 shows the whole-split val_loss 02 wrote (test_evaluate.py checks that
    # scoring the split again with evaluate.split_loss gives it)
    assert m["val_loss_nats_per_token"] == pytest.approx(pretraining["val_loss"], rel=1e-9)
    assert 1 < m["test_perplexity"] < pretraining["vocab_size"]  # better than a uniform guess
    # bits per character = log2(perplexity per token) / characters per token, about 02's BPE figure
    assert math.log2(m["test_perplexity"]) / m["test_bits_per_char"] == pytest.approx(
        pretraining["bpe_chars_per_token_val"], rel=0.05)
    # 04 takes the test probabilities each 03 run saved (finetune.load_predictions) for the same test plays: the
    # same macro-F1 (one seed under smoke, so 03's mean is that run's score)
    saved = {mode: finetuning[f"{mode}_test_macro_f1_mean"] for mode in ("full", "frozen", "scratch", "lora", "multitask", "hf")}
    assert m["classifiers"] == 6 and m["best_test_macro_f1"] == saved[m["best_classifier"]] == max(saved.values())
    assert {"bleu_greedy", "chrf_greedy", "bleu_top-p 0.9", "chrf_top-p 0.9"} <= m.keys()
    assert 0 < m["int8_size_ratio"] < 1  # int8 weights are smaller
    assert abs(m["int8_delta_perplexity"]) < 0.05 * m["test_perplexity"]


@pytest.mark.slow
def test_05_seq2seq_smoke_metrics(smoke_report):
    out = smoke_report[0]
    m = metrics(out, "05_seq2seq")
    assert m["reference_parser"].startswith("rule-based: ") and m["n_test"] > 90
    for decoder in ("greedy", "beam_4", "rule-based"):
        assert 0 <= m[f"{decoder}_exact_match"] <= 1 and 0 <= m[f"{decoder}_chrf"] <= 100
        assert (m[f"{decoder}_cer"] == 0) == (m[f"{decoder}_exact_match"] == 1)  # any wrong date costs characters
    assert m["rule-based_exact_match"] > 0.9  # dateparser reads nearly every date; the smoke model is a few steps old
    assert m["greedy_sentences_per_s"] > m["beam_4_sentences_per_s"] > 0
    assert {f"greedy_exact_match_{loc}" for loc in ("en", "fr", "de", "es", "it", "pt", "nl", "ru", "zh", "ja", "all")} <= m.keys()
    assert m["val_loss"] < 3.0 and m["snapshots"] == 1 + 3 and 0 <= m["month_alignment"] <= 1  # untrained, 3 evals
    assert (out / "run" / "seq2seq" / "model" / "model.safetensors").exists()


@pytest.mark.slow
def test_06_interpretability_smoke_metrics(smoke_report):
    import math
    out = smoke_report[0]
    m, pretraining = metrics(out, "06_interpretability"), metrics(out, "02_pretraining")
    assert m["gpt_source"].endswith("pretrain")  # 02's model, with the weights it kept every 10 of its 40 steps
    assert m["snapshots"] == 4 and m["heads"] == 2 * 2
    assert m["base_loss"] < math.log(pretraining["vocab_size"])
    assert len(m["top_ablation_heads"]) == 3 and m["top_mean_ablation_delta"] == sorted(m["top_mean_ablation_delta"], reverse=True)
    # the logit lens after the last block is the model itself, on the same held-out windows
    assert len(m["logit_lens_loss"]) == 3 and m["logit_lens_loss"][-1] == pytest.approx(m["base_loss"], rel=1e-5)
    assert 0 <= m["max_induction_score"] <= 1 and all(0 <= a <= 1 for a in m["logit_lens_accuracy"])


@pytest.mark.slow
@pytest.mark.browser
def test_report_html_shows_heatmaps_and_loss_curves_offline(smoke_report):
    from test_browser import assert_plotly_figures_drawn, require_chromium

    require_chromium()
    out = smoke_report[0]
    attention = assert_plotly_figures_drawn(out / "01_attention.html", min_figures=8)
    assert sum("heatmap" in f["traces"] for f in attention) >= 6
    pretraining = assert_plotly_figures_drawn(out / "02_pretraining.html", min_figures=3)
    assert any("scatter" in f["traces"] for f in pretraining)  # the loss curves
    assert any("heatmap" in f["traces"] for f in pretraining)  # attention across checkpoints
    seq2seq = assert_plotly_figures_drawn(out / "05_seq2seq.html", min_figures=6)
    assert sum("heatmap" in f["traces"] for f in seq2seq) >= 4  # cross-attention: menu, grid, step slider, typed text
    interpretability = assert_plotly_figures_drawn(out / "06_interpretability.html", min_figures=7)
    assert sum("heatmap" in f["traces"] for f in interpretability) >= 4  # ablation, induction over steps, logit lens, explorer


@pytest.mark.slow
@pytest.mark.browser
def test_report_formulas_render_offline_and_no_page_references_the_network(smoke_report):
    from test_browser import assert_formulas_rendered, require_chromium

    from workbench.report import network_references

    out = smoke_report[0]
    for page in sorted(out.glob("*.html")):
        assert network_references(page.read_text(encoding="utf-8")) == [], page.name
    require_chromium()
    formulas = assert_formulas_rendered(out / "01_attention.html", min_formulas=10)
    assert sum(f["display"] == "block" for f in formulas) == 2  # the attention and multi-head formulas


@pytest.mark.slow
def test_a_second_report_gives_the_same_metrics(smoke_report, tmp_path):
    out, _ = smoke_report
    run_smoke_report(tmp_path / "again")
    for path in ALL:
        first, second = metrics(out, path.stem), metrics(tmp_path / "again", path.stem)
        assert first.keys() == second.keys()
        for key in first.keys() - VOLATILE:
            assert first[key] == second[key], f"{path.stem}: {key} differs between identical runs"


@pytest.mark.slow
def test_02_to_04_run_on_a_corpus_and_a_task_of_your_own(tmp_path):
    """The parameters a user sets for their own data reach every step: 02 pretrains on a CSV corpus's
    `body` column, 03 fine-tunes on a table with other column names, and 04 scores the run's own corpus
    (not the plays) and 03's task."""
    import math
    import shutil

    import pandas as pd
    from helpers import tiny_rows, word_corpus

    from workbench import data
    from workbench import evaluate as ev
    from workbench.pretrain import load_pretrained

    lines = word_corpus(tmp_path / "lines.txt", "the quick brown fox jumps over a lazy dog while seven wise owls "
                        "sing of rivers mountains and distant cities at night", 1500, 12).read_text().splitlines()
    pd.DataFrame({"id": range(len(lines)), "body": lines}).to_csv(tmp_path / "own.csv", index=False)
    pd.DataFrame(tiny_rows(30)).rename(columns={"text": "review", "label": "sentiment"}).to_csv(
        tmp_path / "reviews.csv", index=False)
    chain = tmp_path / "notebooks"
    chain.mkdir()
    for name in ("02_pretraining", "03_finetuning", "04_evaluation"):
        shutil.copy(NOTEBOOKS / f"{name}.ipynb", chain)
    report = run_report(chain, tmp_path / "report", profile="smoke", timeout=300,
                        parameters={"corpus": str(tmp_path / "own.csv"), "text_column": "body",
                                    "classification_task": str(tmp_path / "reviews.csv"), "text_col": "review",
                                    "label_col": "sentiment"})
    assert report["status"] == "ok"
    given = {entry["name"]: entry["parameters"] for entry in report["notebooks"]}  # to the notebooks that have them
    assert given["02_pretraining.ipynb"]["text_column"] == "body" and "text_column" not in given["03_finetuning.ipynb"]
    finetuning, m = (metrics(tmp_path / "report", n) for n in ("03_finetuning", "04_evaluation"))
    assert finetuning["task"] == str(tmp_path / "reviews.csv") and finetuning["n_train"] == 72  # 24 of each label
    assert m["classifiers"] == 6 and m["test_bits_per_char"] is None  # a CSV corpus has no test split
    model, tokenizer, config = load_pretrained(tmp_path / "report" / "run" / "pretrain")
    assert config.data.corpus == str(tmp_path / "own.csv") and config.data.text_column == "body"
    corpus = data.load_corpus(config.data.corpus, text_column="body")
    own = ev.lm_metrics(model, tokenizer, corpus.splits["val"][:3000])  # smoke: 04 scores 3,000 characters
    assert m["val_bits_per_char"] == pytest.approx(own["bits_per_char"], rel=1e-6) and math.isfinite(own["bits_per_char"])


def run_one_notebook(name, tmp_path, parameters):
    """`name` alone through the report runner (smoke profile) with `parameters`; its metrics."""
    import shutil

    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(NOTEBOOKS / f"{name}.ipynb", folder)
    report = run_report(folder, tmp_path / "report", profile="smoke", timeout=300, parameters=parameters)
    assert report["status"] == "ok" and report["notebooks"][0]["parameters"].items() >= parameters.items()
    return metrics(tmp_path / "report", name)


def printed(executed: Path) -> str:
    """Everything an executed notebook's cells printed."""
    nb = nbformat.read(executed, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.get("output_type") == "stream")


def figure_titles(executed: Path) -> list[str]:
    """The title of every Plotly figure an executed notebook shows."""
    nb = nbformat.read(executed, as_version=4)
    layouts = [o["data"]["application/vnd.plotly.v1+json"].get("layout", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    return [layout.get("title", {}).get("text", "") for layout in layouts]


@pytest.mark.slow
def test_01_attention_runs_on_a_corpus_of_your_own(tmp_path):
    """`corpus` and `text_column` reach 01: its comparison tokenizers and the GPT it trains (02 has not
    run) read the CSV's `body` column, not the plays. Its default `text` has characters the corpus never
    shows (',', 'T'): a line of the corpus stands in, and the printout says so, and says that the GPT
    sees only the last block_size (32) of its tokens."""
    import pandas as pd
    from helpers import word_corpus

    from workbench import data
    from workbench.pretrain import load_pretrained
    from workbench.tokenizer import train_tokenizer

    lines = word_corpus(tmp_path / "lines.txt", "the quick brown fox jumps over a lazy dog", 400, 12).read_text()
    pd.DataFrame({"id": range(400), "body": lines.splitlines()}).to_csv(tmp_path / "own.csv", index=False)
    m = run_one_notebook("01_attention", tmp_path, {"corpus": str(tmp_path / "own.csv"), "text_column": "body"})
    own = data.load_corpus(tmp_path / "own.csv", text_column="body")
    assert m["corpus"] == "own.csv" and m["char_vocab_size"] == len(set(own.text)) == 28  # a-z, space, newline
    ctx = notebook.NotebookContext("01_attention", "smoke", tmp_path)
    text = notebook.corpus_text(ctx, "text", notebook.DEFAULT_TEXTS["01_attention"]["text"], own,
                                train_tokenizer("char", own.train_text))
    assert m["char_tokens"] == len(text) > 32 and set(text) <= set(own.train_text)
    out = printed(tmp_path / "report" / "01_attention.ipynb")
    assert ("text: 'To be, or not to be, that is the question' has characters own.csv never shows (',', 'T'); "
            f"using {text!r} from own.csv (set text to choose)\n") in out and m["text"] == text
    assert ("GPT from run_dir/attention_gpt (char tokenizer): 2 layers x 2 heads, 32 tokens "
            "(text cut to its last 32 tokens, the model's block_size)\n") in out
    _, tokenizer, config = load_pretrained(tmp_path / "report" / "run" / "attention_gpt")
    assert (config.data.corpus, config.data.text_column) == (str(tmp_path / "own.csv"), "body")
    assert tokenizer.vocab_size == 28  # smoke: a char GPT of the CSV's characters


def test_05s_headings_name_dates_only_as_the_default_task():
    """05 runs on your pairs too: a heading that speaks of the date task says it is the default."""
    nb = nbformat.read(NOTEBOOKS / "05_seq2seq.ipynb", as_version=4)
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("## ")]
    assert "## The task: source → target (by default, dates as people write them → ISO 8601)" in headings
    assert all("by default" in h for h in headings if "ISO 8601" in h)


@pytest.mark.slow
def test_05_seq2seq_runs_on_pairs_of_your_own(tmp_path):
    """`translation_task`, `source_col` and `target_col` reach 05: it trains on a TSV of pairs (its
    `locale` and `split` columns kept) and scores them without the date task's parser and month alignment."""
    import pandas as pd

    ones = "zero one two three four five six seven eight nine".split()
    tens = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
    rows = [{"words": f"{tens[n // 10]} {ones[n % 10]}", "digits": str(n), "locale": "en"} for n in range(20, 100)]
    rows += [{"words": " ".join(str(n)), "digits": str(n), "locale": "spaced"} for n in range(20, 100)]
    pairs = pd.DataFrame(rows).assign(split=lambda df: ["test" if i % 10 == 7 else "val" if i % 10 == 3 else "train"
                                                        for i in range(len(df))])
    pairs.to_csv(tmp_path / "pairs.tsv", sep="\t", index=False)
    m = run_one_notebook("05_seq2seq", tmp_path, {"translation_task": str(tmp_path / "pairs.tsv"),
                                                 "source_col": "words", "target_col": "digits",
                                                 "explore_text": "forty two"})
    assert m["task"] == "pairs.tsv" and m["n_test"] == (pairs["split"] == "test").sum() == 16
    assert m["explore_text"] == "forty two"  # set: kept
    assert not {"reference_parser", "month_alignment", "rule-based_exact_match"} & m.keys()
    assert {"greedy_exact_match_en", "greedy_exact_match_spaced", "greedy_exact_match_all"} <= m.keys()
    assert 0 <= m["greedy_exact_match_all"] <= 1 and 0 <= m["beam_4_bleu"] <= 100
    titles = figure_titles(tmp_path / "report" / "05_seq2seq.ipynb")
    assert "exact match against decoding speed (test pairs)" in titles and not any("date" in t for t in titles)
    source = json.loads((tmp_path / "report" / "run" / "seq2seq" / "model" / "task_source.json").read_text())
    assert source == {"spec": str(tmp_path / "pairs.tsv"), "source_col": "words", "target_col": "digits", "seed": 0}

# ------------------------------------------------------------------ interrupting a kernel
KERNEL_SETUP = """
import pathlib
from workbench import pretrain as pt
from workbench.config import preset
corpus = pathlib.Path({root!r}) / "text.txt"
corpus.write_text("to be or not to be that is the question whether tis nobler in the mind\\n" * 400)
config = preset("smoke", data={{"corpus": str(corpus)}},
                train={{"max_iters": 3000, "eval_interval": 1000, "device": "cpu"}})

class Started:  # lets the test interrupt once training runs
    def on_step(self, trainer, record):
        if trainer.step == 20:
            (pathlib.Path({root!r}) / "started").touch()
"""
# The notebook's own training call (02_pretraining): rerunning the cell resumes.
KERNEL_TRAIN = ('result = pt.pretrain(config, pathlib.Path({root!r}) / "run", callbacks=[Started()], progress=False, '
                'resume="auto")\nprint("RESULT", result.metrics["completed"], result.metrics["final_step"])')


def _run_cell(kc, code: str, timeout: float = 300) -> tuple[str, str]:
    """Execute `code` in the kernel; (reply status, printed text)."""
    printed = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=lambda m: printed.append(
        m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
    return reply["content"]["status"], "".join(printed)


@pytest.mark.slow
def test_interrupting_the_kernel_stops_training_with_a_checkpoint_and_a_rerun_resumes(tmp_path):
    import threading
    import time

    from jupyter_client.manager import start_new_kernel

    from workbench import checkpoint as ckpt

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        assert _run_cell(kc, KERNEL_SETUP.format(root=str(tmp_path)))[0] == "ok"

        def interrupt_once_started():
            deadline = time.monotonic() + 120
            while not (tmp_path / "started").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            km.interrupt_kernel()  # what the ■ button does: SIGINT to the kernel

        threading.Thread(target=interrupt_once_started, daemon=True).start()
        status, printed = _run_cell(kc, KERNEL_TRAIN.format(root=str(tmp_path)))
        assert status == "ok", printed  # the cell returns; no KeyboardInterrupt traceback
        completed, step = printed.split("RESULT")[1].split()[:2]
        assert completed == "False" and 20 <= int(step) < 3000
        assert ckpt.load_checkpoint(tmp_path / "run").state["step"] == int(step)
        assert not (tmp_path / "run" / "model").exists()

        status, printed = _run_cell(kc, KERNEL_TRAIN.format(root=str(tmp_path)))
        assert status == "ok" and printed.split("RESULT")[1].split() == ["True", "3000"], printed
        assert (tmp_path / "run" / "model" / ckpt.MODEL_FILE).is_file()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
