"""The POPGym benchmark's bookkeeping: MMER's blocks, the tables, and a resumable tiny run."""

import json
from dataclasses import replace

import pytest
import torch

from rlgate import popgym_report, sweep
from rlgate.popgym_suite import BLOCK_STEPS, SUITE, BlockMeans


def test_block_means_are_the_mean_return_of_each_blocks_episodes():
    per_update = BLOCK_STEPS // 4
    g = torch.Generator().manual_seed(0)
    updates = [torch.rand(int(torch.randint(0, 5, (1,), generator=g)), generator=g) - 0.5
               for _ in range(10)]  # fmt: skip
    blocks = BlockMeans(per_update)
    for returns in updates:
        blocks.add(returns)
    expected = []
    for start in range(0, 10, 4):  # naive: 4 updates a block, the last one partial
        chunk = torch.cat(updates[start : start + 4])
        if chunk.numel():
            end = min(start + 4, 10) * per_update
            expected.append((end, float(chunk.double().mean()), chunk.numel()))
    got = blocks.curve()
    assert [(s, n) for s, _, n in got] == [(s, n) for s, _, n in expected]
    assert [m for _, m, _ in got] == pytest.approx([m for _, m, _ in expected])


def _record(env, level, core, seed, mmer):
    return {"env": env, "level": level, "core": core, "seed": seed, "mmer": mmer, "final": mmer,
            "steps": 1, "provenance": {"commit": "abc"}}  # fmt: skip


def test_tables_average_over_seeds_and_normalise_on_shared_cells(tmp_path):
    records = [
        _record("RepeatFirst", "Easy", "gru", 1, 1.0),
        _record("RepeatFirst", "Easy", "gru", 2, 0.0),
        _record("RepeatFirst", "Easy", "lstm", 1, -1.0),
        _record("CountRecall", "Easy", "gru", 1, 0.5),  # lstm has no result here: not shared
    ]
    cores, rows = popgym_report.summarize(records)
    assert cores == ["lstm", "gru"]
    first = next(r for r in rows if r["env"] == "RepeatFirst")
    assert first["gru"] == (0.5, 0.5, 2) and first["lstm"] == (-1.0, 0.0, 1)
    norm = popgym_report.normalised(rows, cores)
    assert norm == {"lstm": (0.0, 1), "gru": (0.75, 1)}
    _, md = popgym_report.write_tables(records, tmp_path, ["header"])
    text = md.read_text()
    assert "0.500 ± 0.500" in text and "| RepeatFirst | Easy |" in text
    assert "1.000" in text  # POPGym's (unconfirmed) GRU beside it


def test_a_tiny_suite_runs_writes_its_results_and_resumes(tmp_path):
    tiny = replace(SUITE, envs=("RepeatFirst",), levels=("Easy",), cores=("mlp",), seeds=(1,))
    tiny = sweep.with_settings(tiny, num_envs=4, unroll_length=16, hidden_size=8,
                               encoder_size=8, head_size=0, total_timesteps=2048)  # fmt: skip
    assert sweep.run_sweep(tiny, tmp_path, progress=False) == 1
    (path,) = (tmp_path / "results").glob("*.json")
    record = json.loads(path.read_text())
    assert record["env"] == "RepeatFirst" and record["steps"] == 2048
    assert -1.0 <= record["mmer"] <= 1.0 and record["mmer"] == max(m for _, m, _ in record["curve"])
    assert sweep.run_sweep(tiny, tmp_path, progress=False) == 0  # finished: skipped
    paths, table = popgym_report.report(tiny, tmp_path)
    assert "RepeatFirst" in table and all(p.exists() for p in paths)
