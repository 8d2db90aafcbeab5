"""workbench.compare's summary table, on hand-made runs (the grid itself trains models: test_finetune.py)."""

import pandas as pd
import pytest

from workbench.compare import ROW_KEYS, summarize


def _run(mode, seed, f1, steps):
    return {"mode": mode, "seed": seed, "test_accuracy": f1 + 0.01, "test_macro_f1": f1, "val_accuracy": 0.5,
            "val_macro_f1": 0.5, "train_s": 1.0, "trainable_params": 10, "steps": steps}


def test_summarize_gives_no_spread_for_a_single_seed():
    runs = pd.DataFrame([_run("full", 0, 0.40, 200), _run("full", 1, 0.44, 200), _run("hf", 0, 0.45, 60),
                         {**_run("tfidf", None, 0.39, None), "trainable_params": 66}], columns=list(ROW_KEYS))
    s = summarize(runs)
    assert list(s.index) == ["full", "hf", "tfidf"] and s["seeds"].tolist() == [2, 1, 1]
    assert s.loc["full", "test_macro_f1_mean"] == pytest.approx(0.42)
    assert s.loc["full", "test_macro_f1_std"] == pytest.approx(pd.Series([0.40, 0.44]).std(ddof=1))
    # one run says nothing about the spread: NaN (a dash in notebook.table), not a misleading 0
    for mode in ("hf", "tfidf"):
        assert pd.isna(s.loc[mode, "test_macro_f1_std"]) and pd.isna(s.loc[mode, "test_accuracy_std"]), mode
    # each mode's own step budget is in its row (TF-IDF has none)
    assert s.loc["full", "steps"] == 200 and s.loc["hf", "steps"] == 60 and pd.isna(s.loc["tfidf", "steps"])
