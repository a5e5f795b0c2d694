"""The synthetic tasks against plain loops over their definitions, learning, and the sweep."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from rlgate import synthetic
from rlgate.synthetic import BLANK, DELIMITER, SyntheticConfig, adding_batch, copy_batch

ROOT = Path(__file__).resolve().parents[1]


def test_copy_sequences_are_symbols_blanks_then_delimiters():
    x, target = copy_batch(5, 7, torch.Generator().manual_seed(0))
    assert x.shape == (10 + 7 + 10, 5) and target.shape == (10, 5)
    for b in range(5):
        seq = x[:, b].tolist()
        assert seq[:10] == target[:, b].tolist() and all(0 <= s < 8 for s in seq[:10])
        assert seq[10:17] == [BLANK] * 7 and seq[17:] == [DELIMITER] * 10


def test_adding_targets_are_the_sum_of_the_two_marked_values():
    x, target = adding_batch(64, 20, torch.Generator().manual_seed(0))
    for b in range(64):
        marked = [t for t in range(20) if x[t, b, 1] == 1.0]
        assert len(marked) == 2 and marked[0] < 10 <= marked[1]
        assert float(target[b]) == pytest.approx(sum(float(x[t, b, 0]) for t in marked))


def test_a_recurrent_core_learns_to_copy_above_chance():
    cfg = SyntheticConfig(task="copy", lag=2, core="gru", hidden_size=32, steps=200,
                          eval_every=100, learning_rate=3e-3)  # fmt: skip
    result = synthetic.train(cfg)
    first, last = result["curve"][0][2], result["final"]
    assert last["symbol_accuracy"] > 0.2  # chance: 1/8
    assert last["symbol_accuracy"] > first["symbol_accuracy"] - 0.02
    assert len(result["gate_hist"]) == synthetic.GATE_BINS


def test_bad_settings_name_what_is_valid():
    with pytest.raises(ValueError, match="valid tasks: copy, adding"):
        SyntheticConfig(task="reverse")
    with pytest.raises(ValueError, match="valid cores: lstm"):
        SyntheticConfig(core="transformer")
    with pytest.raises(ValueError, match="learning_rate"):
        SyntheticConfig(learning_rate=float("nan"))


def _script():
    spec = importlib.util.spec_from_file_location("synthetic_script", ROOT / "scripts/synthetic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sweep_writes_results_resumes_and_reports(tmp_path, capsys):
    script = _script()
    argv = ["--preset", "small", "--steps", "10", "--hidden-size", "8", "--out", str(tmp_path),
            "--jobs", "1", "--no-progress"]  # fmt: skip
    assert script.main(argv) == 0
    files = sorted((tmp_path / "results").glob("*.json"))
    assert len(files) == 4  # 2 cores x (1 copy lag + 1 adding length) x 1 seed
    record = json.loads(files[0].read_text())
    assert record["config"]["steps"] == 10 and record["provenance"]["commit"] is not None
    assert script.main(argv) == 0 and "ran 0, skipped 4" in capsys.readouterr().out
    assert (tmp_path / "results.md").exists() and (tmp_path / "accuracy_vs_lag.png").exists()
    assert script.main([*argv[:2], "--cores", "nope", "--out", str(tmp_path)]) == 2
