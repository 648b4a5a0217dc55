"""run/benchmark.py works: at a tiny size it prints its tables and writes every figure to JSON.

(The benchmark itself stays out of the suite: its figures are the README's, measured with
`python run/benchmark.py`; here it only has to run, in seconds.)
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_runs_at_a_tiny_size(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "run", "benchmark.py"), "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training step" in result.stdout and "importance-sampled" in result.stdout
    figures = json.loads(out.read_text())
    assert figures["device"] == "cpu" and figures["machine"]["torch"]
    train = figures["train"]
    assert {(r["model"], r["dim"], r["steps"]) for r in train} == {
        (m, d, t) for m in ("rnn-gmm", "vrnn-i-gauss", "vrnn-gmm") for d in (3, 6) for t in (4, 7)}
    for row in train:
        assert row["pyro_s"] > 0 and row["torch_s"] > 0 and row["ratio"] > 0
        assert row["ratio_low"] <= row["ratio"] <= row["ratio_high"]
        assert abs(row["extra_s_per_step"] * row["steps"] - (row["pyro_s"] - row["torch_s"])) < 1e-9
    importance = figures["importance"]
    assert {r["model"] for r in importance} == {"vrnn-i-gauss", "vrnn-gmm"}  # the RNNs' log p(x) is exact
    for row in importance:
        assert row["num_samples"] == 5 and 1 <= row["chunk_size"] <= 5
        assert row["pyro_s_per_seq"] > 0 and row["torch_s_per_seq"] > 0
        assert row["pyro_peak_bytes"] is None or row["pyro_peak_bytes"] >= 0
