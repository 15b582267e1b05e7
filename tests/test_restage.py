"""scripts/train_vmas_tiny.py restage: a new training stage from a trained pipeline with generator
settings changed, keeping every trained weight that still fits."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_LDM = ROOT / "vmas_diffusion" / "assets" / "vmas-tiny" / "ldm"


def restage(work: Path, *settings: str, source: Path = SHIPPED_LDM, shards: Path = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / "train_vmas_tiny.py"), "restage", "--backend", "ldm",
           "--work", str(work), "--source", str(source), *(["--shards", str(shards)] if shards else []), "--set", *settings]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_restage_to_a_new_beat_pathway_keeps_the_trained_weights(tmp_path):
    # a source with the summed beat pathway, saved without beat_dropout in its config (as before that setting)
    done = restage(tmp_path / "a", 'beat_fuse="sum"')
    assert done.returncode == 0, done.stderr
    source = tmp_path / "a" / "init_ldm"
    config_path = source / "generator" / "config.json"
    config = json.loads(config_path.read_text())
    del config["beat_dropout"]
    config_path.write_text(json.dumps(config))

    done = restage(tmp_path / "b", 'beat_fuse="adaln"', "beat_dropout=0.1", source=source)
    assert done.returncode == 0, done.stderr
    from vmas_diffusion.models.generators.latent_dit import FrameModulation, LatentDiT

    model = LatentDiT.from_pretrained(str(tmp_path / "b" / "init_ldm" / "generator"))
    # a setting the source's config never held (beat_dropout) is taken, not reset to its default
    assert model.config.beat_fuse == "adaln" and model.config.beat_dropout == 0.1
    assert isinstance(model.cond_proj["beat"], FrameModulation)
    old = load_file(str(source / "generator" / "diffusion_pytorch_model.safetensors"))
    new = model.state_dict()
    for name in ("proj_in.weight", "blocks.3.ada_ln.weight", "cond_proj.video.weight"):
        torch.testing.assert_close(new[name], old[name].float(), atol=0, rtol=0)
    assert "cond_proj.beat.weight" in old and "cond_proj.beat.weight" not in new  # dropped, said on stderr
    assert "cond_proj.beat.weight" in done.stderr and new["cond_proj.beat.out.weight"].abs().max() == 0


def test_restage_rejects_unknown_and_unfit_settings(tmp_path):
    for setting, message in (("hidden_sise=64", "no setting 'hidden_sise'"), ("hidden_size=64", "do not fit")):
        done = restage(tmp_path, setting)
        assert done.returncode == 2 and message in done.stderr, done.stderr


def test_restage_to_a_music_pace_control_fits_its_map_on_the_training_samples(tmp_path):
    from dummies import make_synthetic_data

    from vmas_diffusion.models.generators.latent_dit import LatentDiT
    from vmas_diffusion.training.pace_map import fit_pace_map_on_shards

    shards = make_synthetic_data(tmp_path / "shards")
    done = restage(tmp_path / "w", "pace_seconds=2.0", "pace_source=music", shards=shards)
    assert done.returncode == 0, done.stderr
    model = LatentDiT.from_pretrained(str(tmp_path / "w" / "init_ldm" / "generator"))
    assert model.config.pace_source == "music" and model.config.pace_seconds == 2.0
    assert model.config.pace_map == fit_pace_map_on_shards(shards, 2.0) and "pace map" in done.stderr
    assert model.pace_proj.weight.abs().max() == 0  # new, at its init: the music stays the shipped model's


def test_restage_to_flux_guidance_fits_its_map_on_the_training_samples(tmp_path):
    from dummies import make_synthetic_data

    from vmas_diffusion.models.codecs.mel_griffinlim import MelGriffinLimCodec
    from vmas_diffusion.models.generators.latent_dit import LatentDiT
    from vmas_diffusion.training.pace_map import fit_flux_map_on_shards

    shards = make_synthetic_data(tmp_path / "shards")  # 16-d latents: a 16-band mel codec's
    source = tmp_path / "source"  # the shipped LDM with a codec of the shards' 16 bands
    shutil.copytree(SHIPPED_LDM, source)
    codec_config = json.loads((source / "codec" / "config.json").read_text())
    codec = MelGriffinLimCodec(**{**{k: v for k, v in codec_config.items() if not k.startswith("_")}, "n_mels": 16,
                                  "latent_mean": 0.0, "latent_std": 1.0})
    codec.save_pretrained(str(source / "codec"))
    done = restage(tmp_path / "w", "flux_guidance_scale=0.5", "flux_map=null", source=source, shards=shards)
    assert done.returncode == 0, done.stderr
    model = LatentDiT.from_pretrained(str(tmp_path / "w" / "init_ldm" / "generator"))
    assert model.config.flux_guidance_scale == 0.5 and "flux map" in done.stderr
    assert model.config.flux_map == fit_flux_map_on_shards(shards, codec.spectral_flux, 4.0)
    # a model with a map keeps it unless told to fit a new one
    done = restage(tmp_path / "k", "flux_guidance_scale=1.0", source=tmp_path / "w" / "init_ldm", shards=shards)
    assert done.returncode == 0 and "flux map" not in done.stderr, done.stderr
    kept = LatentDiT.from_pretrained(str(tmp_path / "k" / "init_ldm" / "generator")).config
    assert kept.flux_guidance_scale == 1.0 and kept.flux_map == model.config.flux_map
