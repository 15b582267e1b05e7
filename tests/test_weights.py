"""vmas_diffusion.weights: the one reader of weight files."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from vmas_diffusion.errors import CheckpointError, InputError
from vmas_diffusion.weights import load_state_dict_checked, read_safetensors_folder, read_weights, state_dict_mismatch


def test_safetensors_read_and_torch_files_only_on_opt_in(tmp_path):
    state = {"a": torch.arange(3.0), "b": torch.ones(2, 2)}
    save_file(state, str(tmp_path / "w.safetensors"))
    got = read_weights(tmp_path / "w.safetensors")
    assert got.keys() == state.keys() and torch.equal(got["b"], state["b"])
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="not a .safetensors file"):
        read_weights(tmp_path / "w.pt")
    unwrapped = read_weights(tmp_path / "w.pt", torch_format=True)  # the wrapper is opened
    assert torch.equal(unwrapped["a"], state["a"]) and "epoch" not in unwrapped


def test_pickled_code_and_non_tensors_are_refused(tmp_path):
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"x": InputError("code")}, handle, protocol=2)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_weights(tmp_path / "evil.pt", torch_format=True)
    torch.save({"x": torch.zeros(1), "n": 3}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match=r"tensors \(e.g. \['n'\]\)"):
        read_weights(tmp_path / "mixed.pt", torch_format=True)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_weights(tmp_path / "absent.safetensors")


def test_sharded_safetensors_folder(tmp_path):
    save_file({"a": torch.zeros(2)}, str(tmp_path / "model-1.safetensors"))
    save_file({"b": torch.ones(3)}, str(tmp_path / "model-2.safetensors"))
    index = {"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert sorted(read_safetensors_folder(tmp_path)) == ["a", "b"]
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        read_safetensors_folder(tmp_path / "empty_dir_that_is_missing")


def test_mismatch_names_the_keys():
    model = torch.nn.Linear(2, 3)
    state = {"weight": torch.zeros(3, 4), "extra": torch.zeros(1)}
    problem = state_dict_mismatch(model.state_dict(), state)
    assert "1 missing key(s): bias" in problem and "1 unexpected key(s): extra" in problem
    assert "weight: checkpoint (3, 4) vs model (3, 2)" in problem
    with pytest.raises(CheckpointError, match="missing key"):
        load_state_dict_checked(model, state, "test")
    good = {"weight": torch.ones(3, 2), "bias": torch.ones(3)}
    load_state_dict_checked(model, good, "test")
    assert torch.equal(model.weight, good["weight"])
    assert state_dict_mismatch(model.state_dict(), good) == ""
