"""Tiny deterministic components for tests (seed 0, widths 8-32, 1-2 layers, CPU).

One function per component, ``dummy_<component>()``; each builds a fresh, randomly
initialised instance under ``torch.manual_seed(0)`` so two calls give identical weights.
"""

from pathlib import Path

import torch

SEED = 0
ROOT = Path(__file__).resolve().parents[1]


def seeded(build):
    """Decorator: run ``build`` under ``torch.manual_seed(SEED)``."""

    def wrapper(*args, **kwargs):
        torch.manual_seed(SEED)
        return build(*args, **kwargs)

    wrapper.__name__ = build.__name__
    wrapper.__doc__ = build.__doc__
    return wrapper


@seeded
def dummy_video_encoder(**overrides):
    """Tiny TemporalVideoEncoder: 32x32 frames at 8 fps, CNN backbone (F=16), D=16, 2 layers, window 8, 2 memory tokens."""
    from vmas_diffusion.models.video_encoder import TemporalVideoEncoder

    config = dict(
        fps=8.0, frame_size=32, backbone="cnn", feature_dim=16, cnn_channels=8, cnn_stages=2, hidden_dim=16,
        num_layers=2, num_heads=2, window=8, num_memory_tokens=2, ff_mult=2, frame_chunk_size=32,
        inference_chunk_frames=64,
    )  # fmt: skip
    config.update(overrides)
    return TemporalVideoEncoder(**config).eval()


@seeded
def dummy_ar_generator(num_codebooks=4, cardinality=64, video_dim=16, frame_rate=50.0, **overrides):
    """Tiny ARTokenLM: hidden 32, 2 layers, 4 heads, delay pattern, 1 s window (0.5 s stride), eval mode."""
    from vmas_diffusion.models.generators.ar_token_lm import ARTokenLM

    config = dict(
        num_codebooks=num_codebooks, cardinality=cardinality, video_dim=video_dim, frame_rate=frame_rate,
        hidden_size=32, num_layers=2, num_heads=4, ffn_dim=64, max_duration=1.0, extend_stride=0.5,
    )  # fmt: skip
    config.update(overrides)
    return ARTokenLM(**config).eval()


@seeded
def dummy_codec(**overrides):
    """Tiny EncodecHFCodec: 16 kHz mono, hop 320 (ratios 8*5*8) -> 50 frames/s, 4 codebooks x 64 ids, latent_dim 16, eval mode."""
    from vmas_diffusion.models.codecs.encodec_hf import EncodecHFCodec

    config = dict(
        sampling_rate=16000, audio_channels=1, num_filters=8, upsampling_ratios=[8, 5, 8], codebook_size=64,
        codebook_dim=16, hidden_size=16, num_lstm_layers=1, target_bandwidths=[1.2],
    )  # fmt: skip
    config.update(overrides)
    return EncodecHFCodec(**config).eval()


@seeded
def dummy_mel_codec(**overrides):
    """Tiny MelGriffinLimCodec: 16 kHz mono, hop 320 -> 50 frames/s, 32 mels, 2 codebooks x 16 ids, 16 Griffin-Lim iterations."""
    from vmas_diffusion.models.codecs.mel_griffinlim import MelGriffinLimCodec

    config = dict(n_mels=32, num_codebooks=2, codebook_size=16, griffin_lim_iters=16)
    config.update(overrides)
    return MelGriffinLimCodec(**config).eval()


@seeded
def dummy_ldm_generator(latent_dim=16, video_dim=16, frame_rate=50.0, **overrides):
    """Tiny LatentDiT: hidden 32, 2 layers, 4 heads, v-prediction, 4 s windows (1 s overlap), eval mode;
    latent_dim 16 and 50 frames/s match dummy_codec().

    Its adaLN-Zero gates and output projections (zeros at init) get small random weights, so
    the untrained model's output already depends on the latents, timestep and conditions.
    """
    from vmas_diffusion.models.generators.latent_dit import LatentDiT

    config = dict(
        latent_dim=latent_dim, video_dim=video_dim, frame_rate=frame_rate, hidden_size=32, num_layers=2,
        num_heads=4, ffn_mult=2.0, max_duration=4.0, window_overlap=1.0, num_train_timesteps=1000,
    )  # fmt: skip
    config.update(overrides)
    model = LatentDiT(**config)
    with torch.no_grad():
        frame_outs = [proj.out for proj in model.cond_proj.values() if hasattr(proj, "out")]  # "adaln" conditions
        cross_outs = [block.cross_attn.out_proj for block in model.blocks if block.cross_attn is not None]
        for layer in [block.ada_ln for block in model.blocks] + [model.ada_ln_out, model.proj_out] + frame_outs + cross_outs:
            layer.weight.normal_(0.0, 0.1)
    return model.eval()


@seeded
def dummy_contrastive_head(video_dim=16, music_dim=32, **overrides):
    """ContrastiveHead, 8-wide joint space; defaults fit dummy_video_encoder (D=16) and the dummy generators (hidden 32)."""
    from vmas_diffusion.models.contrastive_head import ContrastiveHead

    return ContrastiveHead(video_dim=video_dim, music_dim=music_dim, **{"embed_dim": 8, **overrides})


# ---------------------------------------------------------------------------- training inputs


def tiny_recipe(backend: str, out_dir, data_dir, **train) -> dict:
    """recipes/tiny_<backend>.yaml with a short training run on ``data_dir``."""
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes" / f"tiny_{backend}.yaml").read_text())
    recipe["train"] = {
        "output_dir": str(out_dir), "max_steps": 4, "batch_size": 2, "learning_rate": 1e-3, "log_every": 1,
        "checkpoint_every": 2, "keep_checkpoints": 2, "validate_every": 4, "validation_batches": 1,
        "num_validation_samples": 1, "validation_inference_steps": 2, "warmup_steps": 1, **train,
    }  # fmt: skip
    recipe["data"] = {"train_dir": str(data_dir)}
    return recipe


def make_synthetic_data(folder: Path, num_samples: int = 6, seconds=0.5) -> Path:
    """A prepared folder of random windows shaped like the tiny codec's (50 Hz, 4 x 64 codes, 16-d latents) at 8 fps.

    ``seconds``: every window's length, or one length per sample (windows of unequal length).
    """
    from vmas_diffusion.data import ShardWriter
    from vmas_diffusion.data.shards import write_index

    lengths = list(seconds) if isinstance(seconds, (list, tuple)) else [seconds] * num_samples
    num_samples = len(lengths)
    gen = torch.Generator().manual_seed(0)
    refs = []
    for number in range((num_samples + 1) // 2):
        writer = ShardWriter(folder, number)
        for j in range(min(2, num_samples - 2 * number)):
            key = f"s{number}_{j}"
            tv, tm = int(8 * lengths[2 * number + j]), int(50 * lengths[2 * number + j])
            onset = torch.zeros(tm)
            onset[torch.randint(0, tm, (3,), generator=gen)] = 1.0
            tensors = {
                "frames": torch.randint(0, 256, (tv, 32, 32, 3), generator=gen, dtype=torch.uint8),
                "visual_envelope": torch.rand(tv, generator=gen),
                "codes": torch.randint(0, 64, (4, tm), generator=gen),
                "latents": torch.randn(16, tm, generator=gen),
                "onset": onset,
            }
            writer.write(key, tensors, {"id": key})
        refs += writer.close()
    info = {"options": {"fps": 8.0}, "music_frame_rate": 50.0, "sample_rate": 16000}
    write_index(folder, refs, info)
    return folder


def remux_video(src, dst, faststart: bool = False) -> None:
    """Copy the video stream of ``src`` into ``dst`` (moov atom first with faststart)."""
    import av

    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(src)) as inp, av.open(str(dst), "w", options=options) as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for packet in inp.demux(vin):
            if packet.dts is not None:
                packet.stream = vout
                out.mux(packet)


def make_music_set(folder: Path, splits=("test",), clips: int = 3) -> Path:
    """A music set (as ``scripts/build_music_set.py`` writes one) of real footage, the bundled demo clip, with
    clicks at a different tempo per clip: ``SPLIT.jsonl`` for each split, its 6 s wav files beside it."""
    import json

    import numpy as np
    import soundfile as sf

    rate, video = 16000, ROOT / "vmas_diffusion" / "assets" / "demo_bikes.mp4"
    for split in splits:
        lines = []
        for i in range(clips):
            wav = np.zeros(6 * rate, np.float32)
            for t in np.arange(0.2, 6.0, 0.4 + 0.15 * i):
                wav[int(t * rate) : int(t * rate) + 200] = 0.5
            sf.write(folder / f"{split}{i}.wav", wav, rate)
            lines.append(json.dumps({"id": f"{split}{i}", "video": str(video), "audio": f"{split}{i}.wav"}))
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder
