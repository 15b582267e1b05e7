"""Training checkpoints: safetensors and JSON only, written atomically, the last K kept.

Layout of ``<output_dir>/checkpoints/step-00000120/``::

    trainer_state.json        step, micro-batches consumed, world size, the resolved recipe
    model.safetensors         the trained modules (video_encoder.*, generator.*, contrastive_head.*)
    optimizer.safetensors     optimizer state tensors, keyed "state.<param index>.<name>"
                              (DeepSpeed / FSDP: accelerate/ from save_state(safe_serialization=True) instead)
    optimizer.json            param_groups and non-tensor state (JSON)
    scheduler.json            LR scheduler state (JSON); grad_scaler.json with fp16
    ema.safetensors/.json     the EMA weights and counters (when train.ema_decay is set)
    rng_<rank>.safetensors    every process's RNG states as tensors (torch CPU and CUDA, numpy, random)
    pipeline/                 VideoToMusicPipeline.save_pretrained output (safetensors + JSON configs)

    manifest.json             written last: every other file's size; a folder whose files do not match
                              it is not a checkpoint

Nothing is pickled, so loading never runs code (DDP and single-process runs; under DeepSpeed / FSDP
the sharded optimizer state is Accelerate's own, whose files are ``torch.save`` pickles).

Atomic. A checkpoint is written to ``.tmp-step-N``, every file fsynced, the manifest last; then it
is renamed into place (a rename is atomic on one file system). Saving a step that already has a
checkpoint (a re-run after ``--resume-from`` an older one) renames the old folder away to
``.old-step-N`` first, renames the new one in, and only then deletes the old one; pruned
checkpoints are renamed to ``.del-step-N`` before they are deleted. So a run killed at any moment
leaves every ``step-N`` folder either complete or absent: :func:`latest_checkpoint` lists complete
folders only (manifest checked), and :func:`recover` (run before resuming and before each save)
finishes an interrupted replacement (the new folder if complete, else the old one back) and removes
leftovers.
"""

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from safetensors.torch import save_file

from ..atomic import fsync_dir
from ..errors import CheckpointError
from ..weights import load_state_dict_checked, read_weights

logger = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d+)$")
TMP_PREFIX = ".tmp-"  # being written
OLD_PREFIX = ".old-"  # replaced by a new save of the same step, deleted once the new one is in place
DEL_PREFIX = ".del-"  # pruned, being deleted
MANIFEST = "manifest.json"
#: what a checkpoint written before manifests needs (the model and optimizer either as files or under accelerate/)
_LEGACY_FILES = ("trainer_state.json", "scheduler.json")


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoint_problem(folder: Path, legacy: bool = True) -> Optional[str]:
    """Why ``folder`` is not a complete checkpoint (None when it is): its manifest is missing or a file
    it lists is missing or has another size. ``legacy``: accept a folder written before manifests by its files."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    manifest = folder / MANIFEST
    if not manifest.is_file() and not legacy:
        return f"{folder} has no {MANIFEST} (unfinished)"
    if not manifest.is_file():
        # written before manifests existed: complete when its files are there (never the case mid-write:
        # the old code renamed a finished folder into place too)
        if not all((folder / name).is_file() for name in _LEGACY_FILES):
            return f"{folder} has no {MANIFEST} (an unfinished or partly deleted checkpoint)"
        if not (folder / "accelerate").is_dir() and not all(
            (folder / n).is_file() for n in ("model.safetensors", "optimizer.safetensors", "optimizer.json")
        ):
            return f"{folder} lacks its model or optimizer files"
        return None
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{folder / MANIFEST} is unreadable ({err})"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} has {path.stat().st_size} bytes, the manifest says {size}"
    return None


def list_checkpoints(root: Path) -> List[Path]:
    """Complete checkpoints under ``root``, oldest first (unfinished and partly deleted folders are left out)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if checkpoint_problem(p) is None]


def latest_checkpoint(root: Path) -> Optional[Path]:
    found = list_checkpoints(root)
    return found[-1] if found else None


def _remove(folder: Path, prefix: str, on_phase=None) -> None:
    """Rename ``folder`` to ``<prefix><name>`` (atomic), then delete it: a kill never leaves it half there."""
    gone = folder.with_name(prefix + folder.name)
    if gone.exists():
        shutil.rmtree(gone)
    os.replace(folder, gone)
    fsync_dir(folder.parent)
    if on_phase is not None:
        on_phase(f"removing {prefix}", gone)
    shutil.rmtree(gone)


def _install(tmp: Path, final: Path, on_phase=None) -> None:
    """Put the complete folder ``tmp`` in place of ``final``: an existing ``final`` is renamed away to
    ``.old-<name>`` first and deleted last, so at every moment ``final`` is complete or absent."""
    old = final.with_name(OLD_PREFIX + final.name)
    if final.exists():  # the same step saved twice (a re-run after --resume-from an older checkpoint)
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        fsync_dir(final.parent)
        if on_phase is not None:
            on_phase("old renamed away", old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if on_phase is not None:
        on_phase("renamed in", final)
    if old.exists():
        if on_phase is not None:
            on_phase("removing old", old)
        shutil.rmtree(old)


def recover(root: Path) -> None:
    """Finish or undo what a killed save left under ``root`` (main process only, before reading it).

    A complete ``.tmp-step-N`` (manifest written) is the newest save of step N: it is installed. An
    ``.old-step-N`` goes back when ``step-N`` is not complete and is deleted otherwise. Everything else
    temporary, and ``step-N`` folders that are not complete, are deleted.
    """
    root = Path(root)
    if not root.is_dir():
        return
    for tmp in sorted(root.glob(f"{TMP_PREFIX}step-*")):
        final = root / tmp.name[len(TMP_PREFIX) :]
        if STEP_DIR.match(final.name) and checkpoint_problem(tmp, legacy=False) is None:
            _install(tmp, final)
            logger.warning("installed %s, saved completely by a run killed before renaming it", final)
        else:
            shutil.rmtree(tmp)
    for old in sorted(root.glob(f"{OLD_PREFIX}step-*")):
        final = root / old.name[len(OLD_PREFIX) :]
        if checkpoint_problem(final) is not None and checkpoint_problem(old) is None:
            if final.exists():
                _remove(final, DEL_PREFIX)
            os.replace(old, final)
            fsync_dir(root)
            logger.warning("restored %s, which a killed save was replacing", final)
        else:
            shutil.rmtree(old)
    for leftover in root.glob(f"{DEL_PREFIX}*"):
        shutil.rmtree(leftover)
    for folder in root.iterdir():
        if folder.is_dir() and STEP_DIR.match(folder.name) and checkpoint_problem(folder) is not None:
            logger.warning("removing the incomplete checkpoint %s (%s)", folder, checkpoint_problem(folder))
            _remove(folder, DEL_PREFIX)


# ------------------------------------------------------------------------------------------- tensors
def _save_tensors(path: Path, tensors: Dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=1, sort_keys=True), encoding="utf-8")


def _read_json(path: Path):
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint file {path} is not valid JSON: {err}") from err


def model_state(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """State dict with tensors shared between names (tied weights) stored once per name, cloned."""
    state, seen = {}, {}
    for name, tensor in module.state_dict().items():
        key = (tensor.data_ptr(), tensor.shape, tensor.stride()) if tensor.numel() else None
        state[name] = tensor.clone() if key in seen else tensor
        if key is not None:
            seen[key] = name
    return state


def load_model_state(module: torch.nn.Module, path: Path) -> None:
    load_state_dict_checked(module, read_weights(path, what="checkpoint file"), f"checkpoint {path}")


# ------------------------------------------------------------------------------------------- optimizer
def optimizer_to_files(state: dict, folder: Path, stem: str = "optimizer") -> None:
    """``optimizer.state_dict()`` -> ``<stem>.safetensors`` (tensors) + ``<stem>.json`` (the rest)."""
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    _save_tensors(folder / f"{stem}.safetensors", tensors)
    _write_json(folder / f"{stem}.json", {"param_groups": state["param_groups"], "scalars": scalars})


def optimizer_from_files(folder: Path, stem: str = "optimizer") -> dict:
    tensors = read_weights(folder / f"{stem}.safetensors", what="checkpoint file")
    meta = _read_json(folder / f"{stem}.json")
    state: Dict[int, dict] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entry in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    groups = meta["param_groups"]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


# ------------------------------------------------------------------------------------------- RNG
def rng_state_tensors() -> Dict[str, torch.Tensor]:
    """This process's RNG states as tensors (no pickle): torch CPU/CUDA, numpy's MT19937, Python's random."""
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch_cuda_{index}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    out["numpy_meta"] = torch.tensor([pos, has_gauss], dtype=torch.int64)
    out["numpy_cached"] = torch.tensor([cached], dtype=torch.float64)
    version, internal, gauss = random.getstate()
    out["python_state"] = torch.tensor(internal, dtype=torch.int64)
    out["python_meta"] = torch.tensor([version], dtype=torch.int64)
    out["python_gauss"] = torch.tensor([float("nan") if gauss is None else gauss], dtype=torch.float64)
    return out


def restore_rng_state(tensors: Dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("torch_cuda_"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])
    pos, has_gauss = (int(v) for v in tensors["numpy_meta"].tolist())
    np.random.set_state(
        ("MT19937", tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, float(tensors["numpy_cached"][0]))
    )
    gauss = float(tensors["python_gauss"][0])
    state = tuple(int(v) for v in tensors["python_state"].tolist())
    random.setstate((int(tensors["python_meta"][0]), state, None if gauss != gauss else gauss))


# ------------------------------------------------------------------------------------------- save / load
class CheckpointManager:
    """Saves and restores the whole training state under ``<output_dir>/checkpoints``."""

    def __init__(self, root: Path, keep: int):
        if keep < 1:
            raise CheckpointError(f"train.keep_checkpoints must be >= 1, got {keep}")
        self.root = Path(root)
        self.keep = int(keep)

    def save(
        self, accelerator, step: int, task, optimizer, scheduler, trainer_state: dict, export_pipeline=None, ema=None,
        sharded: bool = False,
    ) -> Path:
        """Write the checkpoint of ``step`` on every process (each its RNG), atomically; returns its folder.

        ``export_pipeline(folder)`` writes the loadable pipeline (main process only). ``sharded``
        (DeepSpeed / FSDP: the optimizer state is split across processes) stores the model and optimizer
        with Accelerate's ``save_state(safe_serialization=True)`` under ``accelerate/`` instead.
        """
        final = self.root / step_dir_name(step)
        tmp = self.root / f"{TMP_PREFIX}{step_dir_name(step)}"
        if accelerator.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            recover(self.root)  # what a run killed while saving left
            tmp.mkdir()
            self.on_phase("started", tmp)
        accelerator.wait_for_everyone()
        _save_tensors(tmp / f"rng_{accelerator.process_index}.safetensors", rng_state_tensors())
        if sharded:
            # every process writes its shard; Accelerate pickles the optimizer shards (torch.save): they are
            # read back only by load() below, from checkpoints this code wrote
            accelerator.save_state(str(tmp / "accelerate"), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if not sharded:
                _save_tensors(tmp / "model.safetensors", model_state(accelerator.unwrap_model(task)))
                optimizer_to_files(optimizer.state_dict(), tmp)
            _write_json(tmp / "scheduler.json", _jsonable(scheduler.state_dict()))
            if accelerator.scaler is not None:
                _write_json(tmp / "grad_scaler.json", _jsonable(accelerator.scaler.state_dict()))
            if ema is not None:
                ema_state = ema.state_dict()
                shadow = ema_state.pop("shadow_params")
                _save_tensors(tmp / "ema.safetensors", {f"shadow.{i}": t for i, t in enumerate(shadow)})
                _write_json(tmp / "ema.json", _jsonable(ema_state))
            self.on_phase("model written", tmp)
            if export_pipeline is not None:
                export_pipeline(tmp / "pipeline")
            _write_json(tmp / "trainer_state.json", trainer_state)
            self.on_phase("files written", tmp)
            sizes = {}
            for path in sorted(tmp.rglob("*")):
                if path.is_file():
                    with open(path, "rb") as handle:
                        os.fsync(handle.fileno())
                    sizes[path.relative_to(tmp).as_posix()] = path.stat().st_size
            for folder in sorted({p.parent for p in tmp.rglob("*")} | {tmp}):
                fsync_dir(folder)
            self.on_phase("files synced", tmp)
            _write_json(tmp / MANIFEST, {"files": sizes})  # last: marks the folder complete
            with open(tmp / MANIFEST, "rb") as handle:
                os.fsync(handle.fileno())
            fsync_dir(tmp)
            self.on_phase("complete", tmp)
            _install(tmp, final, self.on_phase)
            for pruned in list_checkpoints(self.root)[: -self.keep]:
                _remove(pruned, DEL_PREFIX, self.on_phase)
        accelerator.wait_for_everyone()
        return final

    def on_phase(self, phase: str, folder: Path) -> None:
        """Called at each phase of a save (main process); tests kill the run here."""

    @staticmethod
    def load(accelerator, folder: Path, task, optimizer, scheduler, ema=None) -> dict:
        """Restore a checkpoint into live objects (every process); returns its ``trainer_state``."""
        folder = Path(folder)
        problem = checkpoint_problem(folder)
        if problem is not None:
            raise CheckpointError(f"{folder} is not a complete training checkpoint: {problem}")
        state = _read_json(folder / "trainer_state.json")
        if (folder / "accelerate").is_dir():  # written by a DeepSpeed / FSDP run (see save)
            accelerator.load_state(str(folder / "accelerate"))
        else:
            load_model_state(accelerator.unwrap_model(task), folder / "model.safetensors")
            optimizer.load_state_dict(optimizer_from_files(folder))
        scheduler.load_state_dict(_read_json(folder / "scheduler.json"))
        if accelerator.scaler is not None and (folder / "grad_scaler.json").is_file():
            accelerator.scaler.load_state_dict(_read_json(folder / "grad_scaler.json"))
        if ema is not None:
            ema_state = _read_json(folder / "ema.json")
            shadow = read_weights(folder / "ema.safetensors", what="checkpoint file")
            ema_state["shadow_params"] = [shadow[f"shadow.{i}"] for i in range(len(shadow))]
            ema.load_state_dict(ema_state)
        rng = folder / f"rng_{accelerator.process_index}.safetensors"
        if rng.is_file():
            restore_rng_state(read_weights(rng, what="checkpoint file"))
        else:
            logger.warning("%s has no RNG state for process %d (saved with another process count)", folder, accelerator.process_index)
        return state


def _jsonable(value):
    """Scheduler / scaler / EMA state -> JSON types (tensors become numbers or lists)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    raise CheckpointError(f"cannot store {type(value).__name__} in a JSON checkpoint file")
