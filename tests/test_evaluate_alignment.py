"""scripts/evaluate_alignment.py: the held-out alignment table, best-of-N rows and the retrieval-only mode."""

import importlib.util
import json
from pathlib import Path

import torch
from dummies import make_music_set

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("evaluate_alignment", ROOT / "scripts" / "evaluate_alignment.py")
evaluate_alignment = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(evaluate_alignment)


def test_best_of_n_rows_and_retrieval_only(tmp_path, capsys):
    data = make_music_set(tmp_path)
    # main() sets torch's thread count for the whole process: keep the one the other tests run with
    common = ["--data", str(data), "--model", "ar=vmas-tiny-ar", "--threads", str(torch.get_num_threads()),
              "--seconds", "2", "--window", "2", "--retrieval-seconds", "4"]
    assert evaluate_alignment.main(common + ["--seeds", "1", "--candidates", "2", "--out", str(tmp_path / "bon")]) == 0
    table = json.loads((tmp_path / "bon" / "results.json").read_text())["ar"]
    assert table["candidates"] == 2 and table["pace_weight"] == 0.0
    for row in ("model", "unconditional", "shuffled video", "real music"):
        assert table[row]["count"] == 3 and 0.0 <= table[row]["bhs_window"] <= 1.0  # 3 clips x 1 seed
    assert table["retrieval"]["pairs"] == 6  # 3 clips x 2 windows of 2 s
    capsys.readouterr()

    assert evaluate_alignment.main(common + ["--retrieval-only", "--out", str(tmp_path / "ret")]) == 0
    only = json.loads((tmp_path / "ret" / "results.json").read_text())["ar"]
    assert set(only) == {"retrieval"}
    assert only["retrieval"] == table["retrieval"]  # the same windows, the same embeddings
    printed = capsys.readouterr().out
    assert "| ar | 6 |" in printed and "| ar | all |" not in printed
