"""The benchmark command reports every figure, with consistent arithmetic (speed itself is
measured by running it, never asserted by a timed test)."""

import json

from workbench.__main__ import main
from workbench.bench import run_bench
from workbench.config import preset


def test_bench_figures_are_consistent():
    config = preset("smoke", model={"vocab_size": 65}, train={"device": "cpu"})
    r = run_bench(config, iters=5, warmup=2)
    assert r["tokens_per_iter"] == 8 * 32
    assert abs(r["tokens_per_s"] - r["tokens_per_iter"] / (r["ms_per_iter"] / 1000)) < 1e-6 * r["tokens_per_s"]
    assert abs(r["mfu"] - r["flops_per_token"] * r["tokens_per_s"] / (r["peak_tflops"] * 1e12)) < 1e-9
    assert 0 < r["mfu"] < 1 and r["peak_memory_mb"] > 0 and r["params"] == 28_576
    for n in (128, 512):
        assert r[f"gen{n}_cached_tokens_per_s"] > 0 and r[f"gen{n}_uncached_tokens_per_s"] > 0


def test_bench_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--preset", "smoke", "--iters", "3", "--warmup", "1", "--no-generation",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ms / iteration (median)" in printed and "MFU" in printed
    figures = json.loads(out.read_text())
    assert figures["n_layer"] == 2 and figures["vocab_size"] == 65 and "gen128_cached_tokens_per_s" not in figures
