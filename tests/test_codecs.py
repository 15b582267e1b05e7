"""Codec layer: EnCodec through transformers (32 kHz, MusicGen's tokens) and the encodec package."""

import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from dummies import dummy_codec

from vmas_diffusion.errors import CheckpointError, ConfigError, InputError
from vmas_diffusion.models.codecs import MusicCodec, build_codec
from vmas_diffusion.models.codecs.base import (
    chunk_windows,
    decode_in_chunks,
    encode_in_chunks,
    rename_legacy_weight_norm,
)
from vmas_diffusion.models.codecs.encodec_hf import EncodecHFCodec
from vmas_diffusion.weights import read_weights

TINY_ARCH = dict(
    sampling_rate=16000, audio_channels=1, num_filters=8, upsampling_ratios=[8, 5, 8], codebook_size=64,
    codebook_dim=16, hidden_size=16, num_lstm_layers=1, target_bandwidths=[1.2],
)  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # the test machine's cores are shared: one intra-op thread is many times faster than two here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_music(media, sample_rate, seconds, channels=1):
    """``[1, C, S]`` of the real Big Buck Bunny soundtrack, peak-normalised to 0.5."""
    from vmas_diffusion.media import load_audio

    audio = load_audio(media("bigbuckbunny.mp4"), sample_rate, mono=channels == 1, start=0.0, end=seconds)
    wav = torch.from_numpy(audio)[None]
    if wav.shape[1] != channels:
        wav = wav.mean(1, keepdim=True).expand(1, channels, -1).contiguous()
    return 0.5 * wav / wav.abs().max()


@pytest.fixture(scope="module")
def music16k(media):
    return load_music(media, 16000, 4.0)


# ---- the interface and the MusicGen token space -------------------------------------------


def test_dummy_codec_properties():
    codec = dummy_codec()
    assert isinstance(codec, MusicCodec) and codec.is_discrete and codec.is_continuous
    assert (codec.sample_rate, codec.channels, codec.hop_length, codec.frame_rate) == (16000, 1, 320, 50.0)
    assert (codec.num_codebooks, codec.cardinality, codec.latent_dim) == (4, 64, 16)
    assert not codec.training


def test_default_config_is_musicgen_32khz():
    with torch.device("meta"):  # architecture only: no memory, no init time
        codec = build_codec({"type": "encodec_hf", "config": {}})
    assert (codec.sample_rate, codec.channels, codec.hop_length, codec.frame_rate) == (32000, 1, 640, 50.0)
    assert (codec.num_codebooks, codec.cardinality, codec.latent_dim) == (4, 2048, 128)
    hf = codec.model.config  # the transformers EncodecConfig of facebook/encodec_32khz
    expected = dict(
        sampling_rate=32000, audio_channels=1, num_filters=64, upsampling_ratios=[8, 5, 4, 4], codebook_size=2048,
        hidden_size=128, num_lstm_layers=2, normalize=False, use_causal_conv=False, target_bandwidths=[2.2],
        norm_type="weight_norm", pad_mode="reflect", compress=2, residual_kernel_size=3, trim_right_ratio=1.0,
        dilation_growth_rate=2, kernel_size=7, last_kernel_size=7, num_residual_layers=1, codebook_dim=128,
        use_conv_shortcut=False,
    )  # fmt: skip
    assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in ((k, getattr(hf, k)) for k in expected)} == expected


def test_dummy_codec_is_deterministic_and_codes_vary(music16k):
    a, b = dummy_codec(), dummy_codec()
    codes = a.tokenize(music16k)
    assert torch.equal(codes, b.tokenize(music16k))
    # random codebooks are drawn around the encoder's latents, so ids depend on the input
    assert all(codes[0, k].unique().numel() > 8 for k in range(a.num_codebooks))


# ---- round trips on real music ------------------------------------------------------------


def test_round_trip_real_music_keeps_length_and_rate(music16k):
    codec = dummy_codec()
    wav = music16k[..., : 3 * 16000 + 123]  # not a multiple of the hop
    frames = math.ceil(wav.shape[-1] / codec.hop_length)
    codes = codec.tokenize(wav)
    assert codes.shape == (1, 4, frames) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < codec.cardinality
    audio = codec.decode_tokens(codes)
    assert audio.shape == (1, 1, frames * codec.hop_length) and audio.shape[-1] >= wav.shape[-1]
    assert audio.shape[-1] / codec.sample_rate == pytest.approx(frames / codec.frame_rate)
    latents = codec.encode(wav)
    assert latents.shape == (1, codec.latent_dim, frames)
    assert codec.decode(latents).shape == audio.shape
    assert torch.isfinite(audio).all()


@pytest.mark.parametrize("num_samples", [1, 319, 320, 321, 16000, 16001])
def test_frame_count_is_ceil_samples_over_hop(num_samples):
    codec = dummy_codec()
    wav = 0.1 * torch.randn(2, 1, num_samples, generator=torch.Generator().manual_seed(num_samples))
    expected = -(-num_samples // 320)
    assert codec.num_frames(num_samples) == expected
    assert codec.tokenize(wav).shape == (2, 4, expected)
    assert codec.encode(wav).shape == (2, 16, expected)


def test_batch_items_are_independent(music16k):
    codec = dummy_codec()
    pair = torch.cat([music16k, music16k.flip(-1)])
    codes = codec.tokenize(pair)
    assert torch.equal(codes[1:], codec.tokenize(music16k.flip(-1)))
    assert torch.allclose(codec.decode_tokens(codes)[:1], codec.decode_tokens(codes[:1]), atol=1e-6)


# ---- save / load and checkpoints ----------------------------------------------------------


def test_save_pretrained_round_trip_identical(tmp_path, music16k):
    codec = dummy_codec()
    codec.fit_latent_stats([music16k])
    codec.save_pretrained(tmp_path)
    loaded = EncodecHFCodec.from_pretrained(tmp_path)
    def public(config):  # JSON view without diffusers' bookkeeping (_name_or_path, ...)
        return json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))

    assert public(loaded.config) == public(codec.config)
    codes = codec.tokenize(music16k)
    assert torch.equal(loaded.tokenize(music16k), codes)
    assert torch.equal(loaded.decode_tokens(codes), codec.decode_tokens(codes))
    assert torch.equal(loaded.encode(music16k), codec.encode(music16k))
    config = json.loads((tmp_path / "config.json").read_text())
    assert len(config["latent_mean"]) == codec.latent_dim  # per-channel stats live in the config


def test_mismatched_folder_raises_checkpoint_error(tmp_path):
    dummy_codec().save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    config["hidden_size"] = config["codebook_dim"] = 32
    config_file.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"shape mismatch.*checkpoint \(16, .*\) vs model \(32, "):
        EncodecHFCodec.from_pretrained(tmp_path)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    from safetensors.torch import save_file

    codec = dummy_codec()
    codec.save_pretrained(tmp_path)
    state = read_weights(tmp_path / "diffusion_pytorch_model.safetensors")
    state.pop("model.decoder.layers.0.conv.bias")
    state["model.extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        EncodecHFCodec.from_pretrained(tmp_path)
    assert "1 missing key(s): model.decoder.layers.0.conv.bias" in str(err.value)
    assert "1 unexpected key(s): model.extra.weight" in str(err.value)


def test_foreign_or_absent_folder_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not a EncodecHFCodec config"):
        EncodecHFCodec.from_pretrained(tmp_path)  # empty folder
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(CheckpointError, match="UNet2DModel"):
        EncodecHFCodec.from_pretrained(tmp_path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "payload": InputError("not a tensor")}, path)
    with pytest.raises(CheckpointError, match="cannot be read as weights"):
        read_weights(path, torch_format=True)
    with pytest.raises(CheckpointError, match="not a .safetensors file"):  # torch files only when the caller opts in
        read_weights(path)


def _transformers_model(seed=0, **overrides):
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(seed)
    config = EncodecConfig(**{**TINY_ARCH, "use_causal_conv": False, "use_conv_shortcut": False, **overrides})
    model = EncodecModel(config)
    for layer in model.quantizer.layers:  # transformers leaves codebooks at zero
        layer.codebook.embed.normal_(0.0, 0.05)
    return model.eval()


def test_from_encodec_pretrained_folder_matches_transformers(tmp_path, music16k):
    hf = _transformers_model()
    hf.save_pretrained(tmp_path)
    codec = EncodecHFCodec.from_encodec_pretrained(tmp_path, chunk_frames=0)
    assert codec.config.chunk_frames == 0 and codec.sample_rate == 16000
    with torch.no_grad():
        out = hf.encode(music16k, bandwidth=1.2)
        reference_audio = hf.decode(out.audio_codes, out.audio_scales).audio_values
    codes = codec.tokenize(music16k)
    assert torch.equal(codes, out.audio_codes[0])
    assert torch.allclose(codec.decode_tokens(codes), reference_audio, atol=1e-6)


def legacy_weight_norm_keys(state):
    """The old ``weight_g`` / ``weight_v`` naming of the Hub's and the encodec package's files."""
    new_to_old = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    renamed = {}
    for key, value in state.items():
        for new, old in new_to_old.items():
            key = key.replace(new, old)
        renamed[key] = value
    return renamed


def test_from_encodec_pretrained_legacy_file(tmp_path, music16k):
    hf = _transformers_model()
    legacy = legacy_weight_norm_keys(hf.state_dict())
    assert any(key.endswith("weight_g") for key in legacy)
    assert rename_legacy_weight_norm(legacy).keys() == hf.state_dict().keys()
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    codec = EncodecHFCodec.from_encodec_pretrained(tmp_path / "pytorch_model.bin", **TINY_ARCH)
    with torch.no_grad():
        assert torch.equal(codec.tokenize(music16k), hf.encode(music16k, bandwidth=1.2).audio_codes[0])


def test_from_encodec_pretrained_wrong_sample_rate_and_shapes(tmp_path):
    _transformers_model(sampling_rate=24000).save_pretrained(tmp_path / "hf24")
    with pytest.raises(CheckpointError, match="sample rate: checkpoint 24000 vs requested 32000"):
        EncodecHFCodec.from_encodec_pretrained(tmp_path / "hf24", sampling_rate=32000)
    # a file holds no config: the architecture asked for must fit its tensors
    torch.save(_transformers_model().state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        EncodecHFCodec.from_encodec_pretrained(tmp_path / "tiny.pt", **{**TINY_ARCH, "num_filters": 4})
    with pytest.raises(CheckpointError, match="cannot be fetched from the Hub"):
        EncodecHFCodec.from_encodec_pretrained(tmp_path / "no-such-model")  # offline: treated as a Hub id
    with pytest.raises(ConfigError, match="unknown argument"):
        EncodecHFCodec.from_encodec_pretrained(tmp_path / "hf24", sample_rate=24000)


# ---- chunked processing -------------------------------------------------------------------


def test_chunk_windows_cover_and_overlap_exactly():
    for total, chunk, overlap in [(200, 40, 8), (41, 40, 8), (99, 20, 0), (1000, 17, 8), (3, 40, 8)]:
        windows = chunk_windows(total, chunk, overlap)
        assert windows[0][0] == 0 and windows[-1][1] == total
        assert all(end - start <= chunk for start, end in windows)
        assert all(prev[1] - nxt[0] == overlap for prev, nxt in zip(windows, windows[1:]))


def test_chunk_helpers_are_exact_for_frame_local_functions():
    # a per-frame encoder and a per-frame decoder have no edge effects: chunking must be exact,
    # which checks the frame alignment of the cuts and that crossfade weights sum to one
    hop = 4
    wav = torch.randn(2, 1, 403, generator=torch.Generator().manual_seed(0))

    def encode(x):  # frame t = sum of samples t*hop .. t*hop+hop-1 (zero-padded at the end)
        x = torch.nn.functional.pad(x, (0, -x.shape[-1] % hop))
        return x.unfold(-1, hop, hop).sum(-1)

    def decode(frames):
        return frames.repeat_interleave(hop, dim=-1) * 0.5

    frames = encode(wav)
    assert torch.allclose(encode_in_chunks(encode, wav, hop, chunk_frames=16, context_frames=3), frames)
    assert torch.allclose(decode_in_chunks(decode, frames, hop, chunk_frames=16, overlap_frames=5), decode(frames))


def test_chunked_codec_is_bounded_and_near_identical(music16k):
    whole = dummy_codec(chunk_frames=0)
    chunked = dummy_codec(chunk_frames=40, chunk_overlap_frames=8)  # same seed: same weights
    encoder_inputs, decoder_inputs = [], []
    chunked.model.encoder.register_forward_pre_hook(lambda m, args: encoder_inputs.append(args[0].shape[-1]))
    chunked.model.decoder.register_forward_pre_hook(lambda m, args: decoder_inputs.append(args[0].shape[-1]))

    codes = whole.tokenize(music16k)  # 4 s = 200 frames
    chunked_codes = chunked.tokenize(music16k)
    assert len(encoder_inputs) > 4 and max(encoder_inputs) <= 40 * chunked.hop_length
    assert (chunked_codes == codes).float().mean() >= 0.98

    latents, chunked_latents = whole.encode(music16k), chunked.encode(music16k)
    assert chunked_latents.shape == latents.shape
    assert (chunked_latents - latents).norm() / latents.norm() < 1e-2

    audio, chunked_audio = whole.decode_tokens(codes), chunked.decode_tokens(codes)
    assert len(decoder_inputs) > 4 and max(decoder_inputs) <= 40
    assert chunked_audio.shape == audio.shape == (1, 1, 200 * 320)
    assert (chunked_audio - audio).norm() / audio.norm() < 1e-3


def test_chunking_config_is_validated():
    with pytest.raises(ConfigError, match="chunk_frames=10 must exceed"):
        dummy_codec(chunk_frames=10, chunk_overlap_frames=5)


# ---- freezing, normalisation, input checks ------------------------------------------------


def test_frozen_codec_stays_eval_and_passes_gradients_to_latents(music16k):
    codec = dummy_codec().freeze()
    parent = torch.nn.ModuleDict({"codec": codec, "head": torch.nn.Linear(2, 2)})
    parent.train()
    assert parent["head"].training and not codec.training and codec.is_frozen
    assert not any(p.requires_grad for p in codec.parameters())
    latents = codec.encode(music16k)
    assert not latents.requires_grad  # frozen encode runs under no_grad
    latents = latents.clone().requires_grad_(True)
    codec.decode(latents).pow(2).mean().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    assert all(p.grad is None for p in codec.parameters())


def test_latent_normalisation_round_trip(music16k):
    plain = dummy_codec()
    normalised = dummy_codec()
    halves = [music16k[..., :32000], music16k[..., 32000:]]
    mean, std = normalised.fit_latent_stats(halves)
    raw = torch.cat([plain.encode(half) for half in halves], dim=-1)  # stats 0 / 1: raw latents
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), raw.mean(dim=(0, 2)).double(), atol=1e-5)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), raw.std(dim=(0, 2), correction=0).double(), rtol=1e-4)
    normalised.fit_latent_stats([music16k])
    latents = normalised.encode(music16k)
    assert latents.mean(dim=(0, 2)).abs().max() < 1e-3
    assert torch.allclose(latents.std(dim=(0, 2)), torch.ones(16), atol=0.02)
    # decode un-normalises: same audio as the codec without stats
    assert torch.allclose(normalised.decode(latents), plain.decode(plain.encode(music16k)), atol=1e-5)
    mean, std = normalised.fit_latent_stats([music16k], per_channel=False)
    assert isinstance(mean, float) and normalised.config.latent_std == std
    with pytest.raises(ConfigError, match="latent_mean has 3 values; latent_dim is 16"):
        dummy_codec(latent_mean=[0.0, 0.0, 0.0])


def test_bad_inputs_raise_input_error():
    codec = dummy_codec()
    with pytest.raises(InputError, match=r"\[B, C, S\]"):
        codec.tokenize(torch.zeros(1, 320))
    with pytest.raises(InputError, match="2 channel"):
        codec.encode(torch.zeros(1, 2, 320))
    with pytest.raises(InputError, match="empty"):
        codec.tokenize(torch.zeros(1, 1, 0))
    with pytest.raises(InputError, match="valid ids are 0 .. 63"):
        codec.decode_tokens(torch.full((1, 4, 3), 64))
    with pytest.raises(InputError, match="integer ids"):
        codec.decode_tokens(torch.zeros(1, 4, 3))
    with pytest.raises(InputError, match=r"K=4"):
        codec.decode_tokens(torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(InputError, match=r"D=16"):
        codec.decode(torch.zeros(1, 8, 3))


def test_bad_configs_raise_config_error():
    with pytest.raises(ConfigError, match="unknown key"):
        build_codec({"type": "encodec_hf", "config": {"hop": 320}})
    with pytest.raises(ConfigError, match="normalize=True is not supported"):
        dummy_codec(normalize=True)
    with pytest.raises(ConfigError, match="power of two"):
        dummy_codec(codebook_size=100)
    with pytest.raises(ConfigError, match="bandwidth 5.0 kbps"):
        build_codec({"type": "encodec", "config": {"bandwidth": 5.0}})
    with pytest.raises(ConfigError, match="sample_rate must be one of"):
        build_codec({"type": "encodec", "config": {"sample_rate": 44100}})


# ---- the encodec package (24 / 48 kHz) ----------------------------------------------------


def test_encodec_package_imports_without_torchaudio():
    script = (
        "import sys\n"
        "from vmas_diffusion.models.codecs._encodec_compat import import_encodec\n"
        "encodec = import_encodec()\n"
        "assert 'torchaudio' not in sys.modules, 'placeholder left behind'\n"
        "assert encodec.EncodecModel.__module__ == 'encodec.model'\n"
        "import torch\n"
        "try:\n"
        "    encodec.utils.convert_audio(torch.zeros(1, 8), 8000, 16000, 1)\n"
        "except ImportError as err:\n"
        "    print(err)\n"
        "try:\n"
        "    import torchaudio\n"
        "except ImportError:\n"
        "    print('torchaudio still absent')\n"
    )
    require_encodec()
    if subprocess.run([sys.executable, "-c", "import torchaudio"], capture_output=True).returncode == 0:
        pytest.skip("torchaudio is installed here: the placeholder is not used")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "torchaudio.transforms is unavailable" in result.stdout
    assert "torchaudio still absent" in result.stdout


def require_encodec():
    import importlib.util

    if importlib.util.find_spec("encodec") is None:
        pytest.skip("the encodec package is not installed: pip install --no-deps encodec==0.1.1 einops")


@pytest.fixture(scope="module")
def package_codec24():
    require_encodec()
    torch.manual_seed(0)
    return build_codec({"type": "encodec", "config": {"sample_rate": 24000, "bandwidth": 6.0}}).eval()


def test_encodec_package_24khz_round_trip(package_codec24, media):
    codec = package_codec24
    assert (codec.sample_rate, codec.channels, codec.frame_rate) == (24000, 1, 75.0)
    assert (codec.num_codebooks, codec.cardinality, codec.latent_dim) == (8, 1024, 128)
    wav = load_music(media, 24000, 1.0)[..., :23900]
    codes = codec.tokenize(wav)
    assert codes.shape == (1, 8, 75) and codes[0, 0].unique().numel() > 4
    audio = codec.decode_tokens(codes)
    assert audio.shape == (1, 1, 75 * 320) and torch.isfinite(audio).all()
    latents = codec.encode(wav)
    assert latents.shape == (1, 128, 75) and codec.decode(latents).shape == audio.shape


def test_encodec_package_local_checkpoint_loads_with_weights_only(package_codec24, tmp_path, media):
    from vmas_diffusion.models.codecs.encodec_package import EncodecPackageCodec

    wav = load_music(media, 24000, 0.5)
    path = tmp_path / "encodec_24khz-d7cc33bc.th"  # the original file name, so a folder works too
    torch.save(legacy_weight_norm_keys(package_codec24.model.state_dict()), path)  # the original key names
    for source in (path, tmp_path):
        loaded = EncodecPackageCodec.from_encodec_pretrained(source, sample_rate=24000)
        assert torch.equal(loaded.tokenize(wav), package_codec24.tokenize(wav))
    with pytest.raises(CheckpointError, match="is the 24000 Hz EnCodec; this codec was asked for sample rate 48000"):
        EncodecPackageCodec.from_encodec_pretrained(path, sample_rate=48000)
    state = legacy_weight_norm_keys(package_codec24.model.state_dict())
    state.pop("decoder.model.0.conv.conv.bias")
    torch.save(state, tmp_path / "broken.th")
    with pytest.raises(CheckpointError, match="missing key.*decoder.model.0.conv.conv.bias"):
        EncodecPackageCodec.from_encodec_pretrained(tmp_path / "broken.th")
    package_codec24.save_pretrained(tmp_path / "saved")
    reloaded = EncodecPackageCodec.from_pretrained(tmp_path / "saved")
    assert torch.equal(reloaded.tokenize(wav), package_codec24.tokenize(wav))
    # parametrized weight norm: copies work after a forward (the package's hook version breaks here)
    assert torch.equal(copy.deepcopy(reloaded).tokenize(wav), package_codec24.tokenize(wav))


def test_encodec_package_48khz_stereo(media):
    require_encodec()
    torch.manual_seed(0)
    codec = build_codec({"type": "encodec", "config": {"sample_rate": 48000, "bandwidth": 6.0, "output_rms": 0.1}})
    assert (codec.channels, codec.frame_rate, codec.num_codebooks, codec.latent_dim) == (2, 150.0, 4, 128)
    wav = load_music(media, 48000, 0.25, channels=2)
    codes = codec.tokenize(wav)
    assert codes.shape == (1, 4, math.ceil(wav.shape[-1] / 320))
    # a louder copy gives the same codes: the model sees unit-RMS audio
    assert (codec.tokenize(wav * 1.8) == codes).float().mean() > 0.95
    audio = codec.decode_tokens(codes)
    assert audio.shape == (1, 2, codes.shape[-1] * 320)
    assert audio.pow(2).mean().sqrt().item() == pytest.approx(0.1, rel=1e-3)


# ---- trained weights (skipped without a local copy) ---------------------------------------


def _spectral_similarity(a, b, n_fft=1024):
    """Correlation of log-magnitude spectrograms of two mono waveforms ``[S]``."""
    window = torch.hann_window(n_fft)
    spec = [torch.stft(x, n_fft, n_fft // 4, window=window, return_complex=True).abs().add(1e-5).log() for x in (a, b)]
    return torch.corrcoef(torch.stack([s.flatten() for s in spec]))[0, 1].item()


def test_trained_encodec32_reconstructs_music(media):
    path = os.environ.get("VMAS_ENCODEC32_PATH")
    if not path or not os.path.exists(path):
        pytest.skip(
            "trained EnCodec 32 kHz not available: set VMAS_ENCODEC32_PATH to a local facebook/encodec_32khz folder"
        )
    codec = EncodecHFCodec.from_encodec_pretrained(path)
    assert (codec.sample_rate, codec.num_codebooks, codec.cardinality, codec.frame_rate) == (32000, 4, 2048, 50.0)
    wav = load_music(media, 32000, 5.0)
    audio = codec.decode_tokens(codec.tokenize(wav))[..., : wav.shape[-1]]
    assert _spectral_similarity(audio[0, 0], wav[0, 0]) > 0.8
    # an untrained codec of the same architecture does not come close
    torch.manual_seed(0)
    random_audio = EncodecHFCodec().eval()
    noise = random_audio.decode_tokens(random_audio.tokenize(wav))[..., : wav.shape[-1]]
    assert _spectral_similarity(noise[0, 0], wav[0, 0]) < _spectral_similarity(audio[0, 0], wav[0, 0])


def test_trained_encodec24_reconstructs_music(media):
    path = os.environ.get("VMAS_ENCODEC24_PATH")
    if not path or not os.path.exists(path):
        pytest.skip("trained EnCodec 24 kHz not available: set VMAS_ENCODEC24_PATH to encodec_24khz-d7cc33bc.th")
    require_encodec()
    from vmas_diffusion.models.codecs.encodec_package import EncodecPackageCodec

    codec = EncodecPackageCodec.from_encodec_pretrained(path, sample_rate=24000, bandwidth=6.0)
    wav = load_music(media, 24000, 5.0)
    audio = codec.decode_tokens(codec.tokenize(wav))[..., : wav.shape[-1]]
    assert _spectral_similarity(audio[0, 0], wav[0, 0]) > 0.8


def test_from_musicgen_folder_takes_its_audio_encoder(tmp_path, music16k):
    """A MusicGen checkpoint carries the EnCodec whose tokens it predicts: loading the codec from
    it gives exactly MusicGen's token space (here a tiny MusicGen saved offline)."""
    from transformers import EncodecConfig, MusicgenConfig, MusicgenForConditionalGeneration, T5Config
    from transformers.models.musicgen.configuration_musicgen import MusicgenDecoderConfig

    torch.manual_seed(0)
    audio_encoder = EncodecConfig(**{**TINY_ARCH, "use_causal_conv": False, "use_conv_shortcut": False})
    config = MusicgenConfig(
        text_encoder=T5Config(vocab_size=32, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2).to_dict(),
        audio_encoder=audio_encoder.to_dict(),
        decoder=MusicgenDecoderConfig(
            vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32, num_codebooks=4,
            max_position_embeddings=64, pad_token_id=64, bos_token_id=64,
        ).to_dict(),
    )  # fmt: skip
    musicgen = MusicgenForConditionalGeneration(config).eval()
    for layer in musicgen.audio_encoder.quantizer.layers:
        layer.codebook.embed.normal_(0.0, 0.05)
    musicgen.save_pretrained(tmp_path / "single")
    musicgen.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")  # as the larger MusicGens ship
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    with torch.no_grad():
        expected = musicgen.audio_encoder.encode(music16k, bandwidth=1.2).audio_codes[0]
    for folder in ("single", "sharded"):
        codec = build_codec({"type": "encodec_hf", "config": {"chunk_frames": 0}, "pretrained": str(tmp_path / folder)})
        assert codec.config.chunk_frames == 0 and isinstance(codec, EncodecHFCodec)
        assert codec.num_codebooks == musicgen.decoder.config.num_codebooks
        assert torch.equal(codec.tokenize(music16k), expected)


def test_old_transformers_config_takes_transformers_defaults(tmp_path, music16k):
    # configs written before `use_conv_shortcut` existed mean transformers' default (True)
    hf = _transformers_model(use_conv_shortcut=True)
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["use_conv_shortcut"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    codec = EncodecHFCodec.from_encodec_pretrained(tmp_path)
    assert codec.config.use_conv_shortcut is True
    with torch.no_grad():
        assert torch.equal(codec.tokenize(music16k), hf.encode(music16k, bandwidth=1.2).audio_codes[0])
    config["normalize"] = True  # the 48 kHz model's volume normalisation
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="load it with the 'encodec' codec"):
        EncodecHFCodec.from_encodec_pretrained(tmp_path)


def test_unreadable_config_raises_checkpoint_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        EncodecHFCodec.from_pretrained(tmp_path)


@pytest.mark.parametrize("sr, n_fft, n_mels, f_min, f_max", [(16000, 1024, 128, 20.0, 8000.0), (22050, 2048, 64, 0.0, 11025.0),
                                                          (16000, 512, 40, 100.0, 7000.0)])  # fmt: skip
def test_mel_filterbank_is_librosas(sr, n_fft, n_mels, f_min, f_max):
    """The codec writes librosa's Slaney filterbank out (librosa costs seconds to import): same numbers."""
    librosa = pytest.importorskip("librosa")
    from vmas_diffusion.models.codecs.mel_griffinlim import _mel_filterbank

    ours = _mel_filterbank(sr, n_fft, n_mels, f_min, f_max)
    theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert float(abs(ours - theirs).max()) <= 1e-12


def test_the_mel_codec_s_spectral_flux_is_the_rise_of_its_bands_in_db():
    from dummies import dummy_mel_codec

    codec = dummy_mel_codec()
    t = torch.arange(16000 * 2) / 16000
    steady = 0.3 * torch.sin(2 * math.pi * 440 * t)
    bursts = steady * torch.exp(-(t % 0.5) / 0.08)  # a struck note every half second (frames 0, 25, 50, 75)
    flux = codec.spectral_flux(codec.encode(torch.stack([steady, bursts])[:, None]))
    assert flux.shape == (2, 99)  # 100 frames at 50 Hz
    assert flux[0, 5:-5].max() < 0.5  # a steady tone does not rise
    rises = (flux[1] > 10.0).nonzero().flatten()  # every attack rises by tens of dB, nothing else does
    assert len(rises) >= 3 and all(min(abs(int(f) + 1 - n) for n in (25, 50, 75)) <= 3 for f in rises[rises > 5])
    # in dB of amplitude: doubling the rise of the log-mel doubles the flux
    latents = codec.encode(bursts[None, None]).requires_grad_(True)
    mean, std = codec._latent_stats(latents)
    doubled = (2 * (latents * std + mean) - mean) / std
    torch.testing.assert_close(codec.spectral_flux(doubled), 2 * codec.spectral_flux(latents))
    codec.spectral_flux(latents).sum().backward()  # differentiable: a sampler can steer it
    assert latents.grad.abs().sum() > 0
