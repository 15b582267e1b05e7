"""Experiment trackers for Accelerate: a JSON Lines tracker that needs no extra package.

``JSONLTracker`` writes one JSON object per ``accelerator.log`` call to
``<logging_dir>/<run>/metrics.jsonl`` (``{"step": N, "time": ..., "loss": ..., ...}``) and the run's
configuration to ``config.json``. A resumed run appends to the same file; :func:`read_metrics`
keeps the last value written for each step, which is what an unbroken run would have logged.
"""

import json
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Union

from accelerate.tracking import GeneralTracker


class JSONLTracker(GeneralTracker):
    """Accelerate tracker writing ``metrics.jsonl`` (main process only)."""

    name = "jsonl"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, run_name: str, logging_dir: Union[str, Path]):
        super().__init__()
        self.run_name = run_name
        self.dir = Path(logging_dir) / run_name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"

    @property
    def tracker(self):
        return self.path

    def store_init_configuration(self, values: dict):
        (self.dir / "config.json").write_text(json.dumps(values, indent=1, sort_keys=True, default=str), encoding="utf-8")

    def log(self, values: dict, step: Optional[int] = None, **kwargs):
        row = {"step": step, "time": round(time.time(), 3)}
        for key, value in values.items():
            if hasattr(value, "item"):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                value = str(value)  # JSON has no NaN/inf
            row[key] = value
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()


def read_metrics(path: Union[str, Path], key: Optional[str] = None) -> Dict[int, dict]:
    """``{step: row}`` from a ``metrics.jsonl`` (later rows for a step replace earlier ones).

    With ``key``, only rows holding that key count (e.g. ``"loss"`` for training rows).
    """
    rows: Dict[int, dict] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if row.get("step") is None or (key is not None and key not in row):
            continue
        rows[int(row["step"])] = row
    return rows


def make_trackers(names: str, run_name: str, logging_dir: Path) -> List[Union[str, GeneralTracker]]:
    """The recipe's ``train.trackers`` as Accelerate ``log_with`` entries.

    ``"auto"``: JSON Lines, plus TensorBoard when it is installed. Otherwise a comma-separated list of
    ``jsonl`` and Accelerate's own tracker names (``tensorboard``, ``wandb``, ``mlflow``, ...).
    """
    from accelerate.tracking import is_tensorboard_available

    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if wanted == ["auto"]:
        wanted = ["jsonl"] + (["tensorboard"] if is_tensorboard_available() else [])
    out: List[Union[str, GeneralTracker]] = []
    for name in wanted:
        out.append(JSONLTracker(run_name, logging_dir) if name == "jsonl" else name)
    return out
