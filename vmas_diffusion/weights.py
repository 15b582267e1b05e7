"""Reading weight files: the one place that decides how a file becomes a state dict.

* safetensors first: a ``.safetensors`` file (or a folder's ``model.safetensors``, sharded or not)
  is read as is;
* a torch file (``.pt``, ``.pth``, ``.th``, ``.bin``, ...) is read only when the caller says its
  format takes one (``torch_format=True``), and then with ``torch.load(weights_only=True)``, which
  rebuilds tensors and plain containers but runs no code from the file;
* a checkpoint wrapping its weights (``{"state_dict": ...}``, ``{"model": ...}``) is unwrapped;
* :func:`state_dict_mismatch` compares a state dict with a model's and names the missing,
  unexpected and mis-shaped keys; :func:`load_state_dict_checked` loads only when they agree.

Every failure is a :class:`~vmas_diffusion.errors.CheckpointError` naming the file.
"""

import json
from pathlib import Path
from typing import Dict, Mapping, Sequence, Tuple, Union

import torch

from .errors import CheckpointError

PathLike = Union[str, Path]
#: keys under which checkpoints of other projects wrap their weights, tried in order
WRAPPERS = ("state_dict", "model", "best_state")


def read_weights(
    path: PathLike, torch_format: bool = False, what: str = "weights file", allow_pickle: bool = False
) -> Dict[str, torch.Tensor]:
    """The tensors of one weights file (see the module docstring).

    ``torch_format``: the caller's format takes torch files, read with ``weights_only=True``;
    ``allow_pickle``: full unpickling of a torch file the caller trusts (an explicit opt-in, off by default).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist or is not a file")
    if path.suffix != ".safetensors" and not (torch_format or allow_pickle):
        raise CheckpointError(f"{what} {path} is not a .safetensors file, and this loader reads no torch files")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=not allow_pickle)
    except Exception as err:  # corrupt file, a pickle with code, another format: one cause for the user
        hint = "" if allow_pickle else " (read with torch.load(weights_only=True): no code runs from the file)"
        raise CheckpointError(f"{what} {path} cannot be read as weights: {err}{hint}") from err
    for wrapper in WRAPPERS:
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what} {path} holds a {type(state).__name__}, not a state dict")
    bad = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{what} {path} does not hold a state dict of tensors (e.g. {bad[:3]})")
    return dict(state)


def read_safetensors_folder(folder: PathLike, what: str = "model folder") -> Dict[str, torch.Tensor]:
    """All tensors of ``folder/model.safetensors`` or of a sharded ``model.safetensors.index.json``."""
    folder = Path(folder)
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text()).get("weight_map", {})
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{what}: {index} is unreadable: {err}") from err
        files = [folder / name for name in sorted(set(weight_map.values()))]
    else:
        raise CheckpointError(
            f"{what}: {folder} has no model.safetensors (or index); pickled weights are not loaded, "
            "re-save the model with safe_serialization=True"
        )
    tensors: Dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(read_weights(file, what=what))
    return tensors


def safetensors_shapes(path: Union[str, Path]) -> Dict[str, Tuple[int, ...]]:
    """``{name: shape}`` of a safetensors file, read from its header only (no tensor data)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as err:  # truncated or not safetensors
        raise CheckpointError(f"checkpoint {path} cannot be read as safetensors: {err}") from err


def state_dict_mismatch(expected: Mapping[str, object], found: Mapping[str, object], limit: int = 5) -> str:
    """One line naming missing keys, unexpected keys and shape mismatches ('' when they agree).
    Values are tensors or shapes."""

    def shape(value) -> Tuple[int, ...]:
        return tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)

    def names(keys: Sequence[str]) -> str:
        keys = sorted(keys)
        more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more

    missing = set(expected) - set(found)
    unexpected = set(found) - set(expected)
    shapes = [
        f"{k}: checkpoint {shape(found[k])} vs model {shape(expected[k])}"
        for k in sorted(set(expected) & set(found))
        if shape(found[k]) != shape(expected[k])
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {names(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {names(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es): " + "; ".join(shapes[:limit]))
    return "; ".join(parts)


def load_state_dict_checked(module: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """``module.load_state_dict(state)`` that raises CheckpointError naming every difference."""
    problem = state_dict_mismatch(module.state_dict(), state)
    if problem:
        raise CheckpointError(f"{where} does not match the model: {problem}")
    module.load_state_dict(state, strict=True)
