"""laion-clap's audio branch, loaded alone: builds offline with random weights, loads CLAP checkpoints."""

import math
import pickle
import sys

import pytest
import torch

from vmas_diffusion.errors import CheckpointError, ConfigError
from vmas_diffusion.models.clap_audio import ClapAudioEncoder, clap_available, fft_resample

pytestmark = pytest.mark.skipif(
    not clap_available(),
    reason="needs the `clap` extra: pip install --no-deps laion-clap==1.1.7 torchlibrosa==0.1.0",
)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return ClapAudioEncoder(htsat_size="tiny").eval()


def clap_checkpoint_state(model: ClapAudioEncoder) -> dict:
    """A state dict laid out like laion-clap's training checkpoints (DDP prefix, text keys too)."""
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    state["module.text_branch.embeddings.word_embeddings.weight"] = torch.zeros(4, 2)
    state["module.logit_scale_a"] = torch.tensor(2.6593)
    state["module.audio_transform.sequential.0.weight"] = torch.zeros(2, 2)
    return {"epoch": 45, "state_dict": state}


def test_builds_offline_without_the_package_init_or_torchvision(encoder):
    assert "laion_clap" not in sys.modules  # the package __init__ (text towers, tokenizers) never ran
    assert "laion_clap.hook" not in sys.modules
    # The torchvision / h5py shims only live while laion-clap's utils.py executes.
    for name in ("torchvision", "torchvision.ops.misc", "h5py"):
        module = sys.modules.get(name)
        assert module is None or getattr(module, "__file__", None), name
    # Same shapes as laion-clap's HTSAT-tiny CLAP: 768-wide pooled features, 512-wide projection.
    assert encoder.audio_branch.num_features == 768
    assert encoder.audio_projection[0].weight.shape == (512, 768)
    assert sum(p.numel() for p in encoder.parameters()) > 25_000_000


@pytest.fixture(scope="module")
def reference(encoder):
    """``(audio [2, 16000] at 32 kHz, embeddings [2, 512])`` computed once (a forward costs seconds)."""
    torch.manual_seed(1)
    audio = 0.1 * torch.randn(2, 16000)
    with torch.no_grad():
        return audio, encoder(audio, sample_rate=32000)


def test_embedding_shape_norm_and_batch_identity(encoder, reference):
    audio, emb = reference
    assert emb.shape == (2, 512)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(emb[0], emb[1], atol=1e-3)
    with torch.no_grad():
        single = encoder(audio[1:], sample_rate=32000)
    torch.testing.assert_close(single[0], emb[1], atol=1e-5, rtol=1e-4)
    # Channels are averaged: a stereo copy of a mono clip prepares the same windows.
    stereo = torch.stack([audio, audio], dim=1)
    torch.testing.assert_close(encoder.prepare(stereo, 32000), encoder.prepare(audio, 32000))


def test_prepare_repeatpads_short_and_windows_long_clips(encoder):
    short = torch.arange(1, 48001, dtype=torch.float32).unsqueeze(0)  # 1 s at 48 kHz
    windows = encoder.prepare(short, sample_rate=48000)
    assert windows.shape == (1, 1, 480000)
    torch.testing.assert_close(windows[0, 0], short[0].repeat(10))  # 10 whole copies, no padding left
    odd = encoder.prepare(torch.ones(1, 30000), sample_rate=48000)[0, 0]
    assert odd[: 16 * 30000].eq(1).all() and odd[16 * 30000:].eq(0).all()  # 16 copies then zeros
    long = torch.randn(2, 25 * 48000)
    lengths = torch.tensor([25 * 48000, 48000])
    windows = encoder.prepare(long, sample_rate=48000, lengths=lengths)
    assert windows.shape == (2, 3, 480000)
    torch.testing.assert_close(windows[0, 2], long[0, -480000:])  # last window aligned to the end
    torch.testing.assert_close(windows[1, 0], windows[1, 2])  # the short item repeats its window


def test_fft_resample_keeps_a_tone():
    sr_in, sr_out, freq = 32000, 48000, 440.0
    t = torch.arange(sr_in) / sr_in
    out = fft_resample(torch.sin(2 * math.pi * freq * t), sr_in, sr_out)
    assert out.shape == (sr_out,)
    expected = torch.sin(2 * math.pi * freq * torch.arange(sr_out) / sr_out)
    torch.testing.assert_close(out, expected, atol=1e-3, rtol=0)


def test_clap_checkpoint_round_trip_pt_and_safetensors(encoder, reference, tmp_path):
    from safetensors.torch import save_file

    audio, emb = reference
    expected = encoder.state_dict()
    pt_path = tmp_path / "630k-audioset-best.pt"
    torch.save(clap_checkpoint_state(encoder), pt_path)
    loaded = ClapAudioEncoder.from_clap_checkpoint(pt_path, htsat_size="tiny")
    assert not loaded.training
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())
    with torch.no_grad():
        torch.testing.assert_close(loaded(audio[:1], sample_rate=32000), emb[:1], atol=1e-5, rtol=1e-4)
    st_path = tmp_path / "clap_audio.safetensors"
    save_file({k: v.contiguous() for k, v in expected.items()}, str(st_path))
    from_st = ClapAudioEncoder.from_clap_checkpoint(st_path).state_dict()
    assert all(torch.equal(from_st[k], v) for k, v in expected.items())


def test_clap_checkpoint_errors(encoder, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ClapAudioEncoder.from_clap_checkpoint(tmp_path / "missing.pt")
    partial = clap_checkpoint_state(encoder)
    partial["state_dict"] = {k: v for k, v in partial["state_dict"].items() if "audio_projection" not in k}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="lacks"):
        ClapAudioEncoder.from_clap_checkpoint(tmp_path / "partial.pt")
    # A pickled arbitrary object is refused unless the caller opts in.
    with open(tmp_path / "object.pt", "wb") as handle:
        pickle.dump({"state_dict": {"x": ConfigError("not a tensor")}}, handle, protocol=2)
    with pytest.raises(CheckpointError, match="weights_only"):
        ClapAudioEncoder.from_clap_checkpoint(tmp_path / "object.pt")
    with pytest.raises(ConfigError, match="htsat_size"):
        ClapAudioEncoder(htsat_size="huge")
