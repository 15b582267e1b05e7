"""Training: the objective, checkpoints without pickle, exact resume after SIGKILL, the CLI, two processes = one."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from dummies import make_synthetic_data, tiny_recipe
from safetensors.torch import load_file

from vmas_diffusion.data import ShardDataset
from vmas_diffusion.errors import ConfigError, InputError
from vmas_diffusion.training import read_metrics
from vmas_diffusion.training.checkpoints import (
    list_checkpoints,
    optimizer_from_files,
    optimizer_to_files,
    restore_rng_state,
    rng_state_tensors,
)
from vmas_diffusion.training.task import VideoMusicTask, item_generators, mix_seed

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_synthetic_data(tmp_path_factory.mktemp("synthetic"))


# ---------------------------------------------------------------------------------------- task
def _task(backend, weights=None):
    import dummies

    from vmas_diffusion.models.contrastive_head import ContrastiveHead
    from vmas_diffusion.recipes import LossWeights

    torch.manual_seed(0)
    generator = dummies.dummy_ar_generator() if backend == "ar" else dummies.dummy_ldm_generator()
    head = ContrastiveHead(video_dim=16, music_dim=32, embed_dim=8)
    return VideoMusicTask(dummies.dummy_video_encoder(), generator.train(), head, weights or LossWeights(), seed=0)


@pytest.mark.parametrize("backend, gen_loss", [("ar", "ce"), ("ldm", "diffusion")])
def test_task_sums_weighted_terms(data_dir, backend, gen_loss):
    from vmas_diffusion.recipes import LossWeights

    batch = next(iter(ShardDataset(data_dir, batch_size=3)))
    total, terms, metrics = _task(backend)(batch)
    assert set(terms) == {gen_loss, "contrastive", "beat_onset", "beat_visual"}
    assert torch.allclose(total, sum(terms.values()))
    assert total.requires_grad and "logit_scale" in metrics
    # weights scale their terms; a zero weight drops the term (its heads leave the task)
    doubled = _task(backend, LossWeights(contrastive=0.2, beat_onset=0.0, beat_visual=0.0))
    total2, terms2, _ = doubled(batch)
    assert set(terms2) == {gen_loss, "contrastive"}
    assert torch.allclose(terms2["contrastive"], 2 * terms["contrastive"], rtol=1e-5)
    assert torch.allclose(terms2[gen_loss], terms[gen_loss], rtol=1e-5)  # same per-sample randomness
    with pytest.raises(ConfigError, match="nothing to train"):
        _task(backend, LossWeights(generation=0, contrastive=0, beat_onset=0, beat_visual=0))(batch)


@pytest.mark.parametrize("backend, gen_loss", [("ar", "ce"), ("ldm", "diffusion")])
def test_onset_emphasis_weights_the_generation_loss_by_the_music_onsets(data_dir, backend, gen_loss):
    from vmas_diffusion.recipes import LossWeights

    batch = next(iter(ShardDataset(data_dir, batch_size=3)))
    task = _task(backend, LossWeights(onset_emphasis=3.0))
    sent = {}
    forward_train = task.generator.forward_train
    task.generator.forward_train = lambda b: sent.update(b) or forward_train(b)
    emphasised = task(batch)[1][gen_loss]
    torch.testing.assert_close(sent["frame_weight"], 1.0 + 3.0 * batch["onset"])
    plain = _task(backend)(batch)[1][gen_loss]  # the same weights and per-sample draws, no emphasis
    assert emphasised > plain  # every weight is >= 1 and the onsets are not all zero
    with pytest.raises(ConfigError, match="onset_emphasis"):
        _task(backend, LossWeights(onset_emphasis=-1.0))


@pytest.mark.parametrize("backend", ["ar", "ldm"])
def test_music_pace_source_trains_on_the_target_musics_own_pace(data_dir, backend):
    """pace_source="music": the generator gets the music's local pace, read off its onset envelope, as the
    "pace" condition (a control it learns to follow); pace_source="video" leaves it to the beat."""
    import dummies

    from vmas_diffusion.conditions import PACE, Condition, local_pace
    from vmas_diffusion.recipes import LossWeights

    batch = next(iter(ShardDataset(data_dir, batch_size=2)))
    make = dummies.dummy_ar_generator if backend == "ar" else dummies.dummy_ldm_generator
    for source in ("video", "music"):
        generator = make(pace_seconds=2.0, pace_source=source).train()
        task = VideoMusicTask(dummies.dummy_video_encoder(), generator, None, LossWeights(contrastive=0), seed=0)
        sent = {}
        forward_train = generator.forward_train
        generator.forward_train = lambda b: sent.update(b) or forward_train(b)
        task(batch)
        if source == "video":
            assert PACE not in sent["conditions"]
            continue
        rate = float(generator.config.frame_rate)
        want = local_pace(Condition(batch["onset"][..., None], batch["music_mask"], rate), 2.0)
        torch.testing.assert_close(sent["conditions"][PACE].tensor, want.tensor)
        assert sent["conditions"][PACE].frame_rate == rate
    no_onset = {k: v for k, v in batch.items() if k != "onset"}
    with pytest.raises(InputError, match="onset"):
        task(no_onset)


def test_pace_map_is_fitted_on_the_training_samples(data_dir):
    from vmas_diffusion.conditions import Condition, check_pace_map, local_pace, map_pace
    from vmas_diffusion.training.pace_map import fit_pace_map_on_shards, pace_pairs

    data = ShardDataset(data_dir, batch_size=1, shuffle=False)
    video, music = pace_pairs(data_dir, 2.0)
    first = next(iter(data))
    frames = int(first["video_mask"].sum())
    assert video.shape == music.shape and video.shape[1] == 2
    assert len(video) >= frames * min(data.num_samples, 2)  # every valid frame of every sample
    own = local_pace(Condition(first["visual_envelope"][..., None], first["video_mask"], data.video_fps), 2.0)
    torch.testing.assert_close(video[:frames], own.tensor[0, :frames])
    table = fit_pace_map_on_shards(data_dir, 2.0, num_quantiles=5)
    assert check_pace_map(table, "pace_map") is None
    # the map puts the videos' pace on the music's scale: the busiest video frame maps to the busiest music
    mapped = map_pace(Condition(video[None], torch.ones(1, len(video), dtype=torch.bool), 1.0), table).tensor[0]
    torch.testing.assert_close(mapped.max(0).values, music.max(0).values, atol=1e-5, rtol=0)
    assert (mapped >= music.min(0).values - 1e-6).all()


def test_flux_map_is_fitted_on_the_training_windows(data_dir):
    from vmas_diffusion.conditions import Condition, check_quantile_map, interpolate_map, local_pace
    from vmas_diffusion.training.pace_map import fit_flux_map_on_shards, flux_pairs

    def flux(latents):  # any codec's flux: the mean rise of the latent channels
        return torch.relu(latents[..., 1:] - latents[..., :-1]).mean(1)

    data = ShardDataset(data_dir, batch_size=1, shuffle=False)
    pace, music = flux_pairs(data_dir, flux, 2.0)
    assert pace.shape == music.shape == (data.num_samples,)  # one pair per window (every one has a video)
    first = next(iter(data))
    own = local_pace(Condition(first["visual_envelope"][..., None], first["video_mask"], data.video_fps), 2.0)
    torch.testing.assert_close(pace[0], own.tensor[0, first["video_mask"][0], 0].mean())
    valid = first["music_mask"][0]
    torch.testing.assert_close(music[0], flux(first["latents"])[0][valid[1:] & valid[:-1]].mean())
    table = fit_flux_map_on_shards(data_dir, flux, 2.0, num_quantiles=5)
    assert check_quantile_map(table)
    # quantiles (ties in pace keep their mean flux): a map onto the music's range, rising with the pace
    mapped = interpolate_map(pace.float(), table)
    assert music.min() - 1e-5 <= mapped.min() and mapped.max() <= music.max() + 1e-5
    assert table[0] == sorted(table[0]) and table[1] == sorted(table[1])
    assert mapped[pace.argmax()] > mapped[pace.argmin()]


def test_task_randomness_is_a_function_of_the_samples(data_dir):
    task = _task("ldm")
    batch = next(iter(ShardDataset(data_dir, batch_size=2)))
    torch.manual_seed(1)
    a = task(batch)[0]
    torch.manual_seed(2)  # the process RNG does not matter
    b = task(batch)[0]
    c = task(batch, salt=1)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert mix_seed(1, 2) == mix_seed(1, 2) != mix_seed(2, 1)
    g = item_generators(0, torch.tensor([5, 7]))
    assert torch.equal(torch.rand(3, generator=g[0]), torch.rand(3, generator=item_generators(0, torch.tensor([5]))[0]))


def test_cached_features_give_the_same_losses_as_frames(data_dir):
    """data.video_input=features: the task runs the temporal encoder on stored backbone features."""
    task = _task("ar")
    batch = next(iter(ShardDataset(data_dir, batch_size=2)))
    with torch.no_grad():
        features = task.video_encoder.encode_frames(batch["frames"])
    cached = {k: v for k, v in batch.items() if k != "frames"}
    cached["features"] = features
    with torch.no_grad():
        a, terms_a, _ = task(batch)
        b, terms_b, _ = task(cached)
    assert torch.allclose(a, b, atol=1e-6) and terms_a.keys() == terms_b.keys()


def test_zero_contrastive_weight_without_heads_is_allowed_but_positive_is_not():
    import dummies

    from vmas_diffusion.recipes import LossWeights

    with pytest.raises(ConfigError, match="contrastive"):
        VideoMusicTask(dummies.dummy_video_encoder(), dummies.dummy_ar_generator(), None, LossWeights())
    task = VideoMusicTask(dummies.dummy_video_encoder(), dummies.dummy_ar_generator(), None, LossWeights(contrastive=0.0))
    assert task.contrastive_head is None


# ---------------------------------------------------------------------------------------- checkpoint pieces
def test_rng_states_round_trip_as_tensors():
    import random

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    state = rng_state_tensors()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    first = (torch.rand(4), np.random.rand(4), random.random(), np.random.normal())
    restore_rng_state(state)
    second = (torch.rand(4), np.random.rand(4), random.random(), np.random.normal())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[2:] == second[2:]


def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    optimizer_to_files(opt.state_dict(), tmp_path)
    fresh = torch.optim.AdamW(model.parameters(), lr=0.5)
    fresh.load_state_dict(optimizer_from_files(tmp_path))
    want, got = opt.state_dict(), fresh.state_dict()
    assert got["param_groups"][0]["betas"] == (0.8, 0.9) and got["param_groups"][0]["lr"] == 0.1
    for index in want["state"]:
        for name, value in want["state"][index].items():
            assert torch.equal(value, got["state"][index][name])


# ---------------------------------------------------------------------------------------- the loop
KILLED_RUN = textwrap.dedent(
    """
    import json, os, signal, sys
    from vmas_diffusion.training import train

    def crash(step, values):
        if step == 3:  # after step 3, before its checkpoint: the last checkpoint is step 2
            os.kill(os.getpid(), signal.SIGKILL)

    train(json.load(open(sys.argv[1])), progress=False, step_callbacks=[crash])
    """
)


def _losses(run_dir: Path) -> dict:
    return {step: row["loss"] for step, row in read_metrics(run_dir / "logs" / "metrics.jsonl", "loss").items()}


def test_sigkilled_run_resumes_exactly(tmp_path, data_dir):
    """kill -9 after step 3 (last checkpoint: step 2), resume: per-step losses and weights equal an unbroken run."""
    from vmas_diffusion.training import train

    def recipe(out):
        return tiny_recipe("ar", out, data_dir, max_steps=3, validate_every=10, num_validation_samples=0)

    unbroken = tmp_path / "unbroken"
    assert train(recipe(unbroken), progress=False).step == 3

    broken = tmp_path / "broken"
    recipe_file = tmp_path / "recipe.json"
    recipe_file.write_text(json.dumps(recipe(broken)))
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(recipe_file)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [p.name for p in list_checkpoints(broken / "checkpoints")] == ["step-00000002"]
    before = _losses(broken)
    assert sorted(before) == [1, 2, 3]

    resumed = train(json.loads(recipe_file.read_text()), resume="auto", progress=False)
    assert resumed.step == 3 and sorted(resumed.losses) == [3]  # steps 1-2 were not run again
    want, got = _losses(unbroken), _losses(broken)
    assert sorted(got) == [1, 2, 3]
    assert len({round(v, 6) for v in want.values()}) == 3  # the loss moves from step to step
    for step in range(1, 4):
        assert got[step] == pytest.approx(want[step], rel=1e-6, abs=1e-7), step
    assert before[3] == pytest.approx(got[3], rel=1e-6)  # the step run before the kill equals its re-run
    a = load_file(str(unbroken / "checkpoints" / "step-00000003" / "model.safetensors"))
    b = load_file(str(broken / "checkpoints" / "step-00000003" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.parametrize("backend", ["ldm"])
def test_checkpoint_layout_and_exported_pipeline(tmp_path, data_dir, backend):
    import vmas_diffusion.losses.contrastive  # noqa: F401
    import vmas_diffusion.models.codecs.encodec_hf  # noqa: F401 - diffusers finds saved classes only in imported modules
    import vmas_diffusion.models.generators.latent_dit  # noqa: F401
    import vmas_diffusion.models.video_encoder  # noqa: F401
    from vmas_diffusion.pipelines import VideoToMusicPipeline
    from vmas_diffusion.training import train

    run = tmp_path / "run"
    result = train(tiny_recipe(backend, run, data_dir, max_steps=3, keep_checkpoints=1, ema_decay=0.9), progress=False)
    kept = list_checkpoints(run / "checkpoints")
    assert [p.name for p in kept] == ["step-00000003"] and result.last_checkpoint == kept[0]
    files = [p for p in kept[0].rglob("*") if p.is_file()]
    assert files and all(p.suffix in (".safetensors", ".json", ".md") for p in files), files  # nothing pickled
    assert not list((run / "checkpoints").glob(".tmp-*"))
    pipe = VideoToMusicPipeline.from_pretrained(str(kept[0] / "pipeline"))
    assert pipe.backend == backend
    assert "3 optimiser steps of 2 windows" in pipe.model_card["training_data"] and str(data_dir) in pipe.model_card["training_data"]
    # the exported generator holds the EMA weights
    ema = load_file(str(kept[0] / "ema.safetensors"))
    gen_params = list(pipe.generator.parameters())
    assert all(torch.allclose(p, ema[f"shadow.{i}"]) for i, p in enumerate(gen_params))
    frames = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    out = pipe(video=frames, fps=8.0, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.audios.shape == (1, 1, 16000) and np.isfinite(out.audios).all()
    metrics = read_metrics(run / "logs" / "metrics.jsonl")
    assert {"loss", "diffusion", "contrastive", "beat_onset", "beat_visual", "lr"} <= set(metrics[1])
    assert "val/loss" in metrics[3]


def test_cli_train_and_prepare_errors_are_one_line(tmp_path, capsys, data_dir):
    from vmas_diffusion.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe("ar", tmp_path / "run", data_dir)))
    assert main(["train", str(recipe), "train.max_stepz=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "max_stepz" in err and len(err.splitlines()) == 1
    assert main(["train", str(recipe), "train.mixed_precision=fp8"]) == 2
    assert "mixed_precision" in capsys.readouterr().err
    assert main(["train", str(recipe), "data.train_dir=" + str(tmp_path / "nowhere")]) == 2
    assert "vmas-diffusion prepare" in capsys.readouterr().err
    assert main(["prepare", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "d"), "--recipe", str(recipe)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_train_runs_and_resumes(tmp_path, data_dir, capsys):
    from vmas_diffusion.cli import main

    run = tmp_path / "run"
    (run / "checkpoints" / ".tmp-step-00000002").mkdir(parents=True)  # a save killed half-way
    (run / "checkpoints" / "step-00000009").mkdir()  # a folder without trainer_state.json is not a checkpoint
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe("ar", run, data_dir)))
    common = ["--no-progress", str(recipe), "train.validate_every=10", "train.num_validation_samples=0"]
    assert main(["train", "--resume", *common, "train.max_steps=2"]) == 0  # nothing usable to resume: fresh start
    assert "trained to step 2" in capsys.readouterr().err
    assert not (run / "checkpoints" / ".tmp-step-00000002").exists()  # the next save cleared the stale one
    assert main(["train", *common, "train.max_steps=3", "--resume"]) == 0
    assert sorted(_losses(run)) == [1, 2, 3]
    assert main(["train", *common, "--resume-from", str(run / "checkpoints" / "step-00000009")]) == 2
    assert "not a finished training checkpoint" in capsys.readouterr().err


def test_gradient_accumulation_equals_the_larger_batch(tmp_path, data_dir):
    """batch 2 x 2 accumulation steps == batch 4 (no contrastive term: its negatives are per micro-batch)."""
    from vmas_diffusion.training import train

    def run(out, batch, accumulation):
        recipe = tiny_recipe("ar", out, data_dir, max_steps=2, batch_size=batch, gradient_accumulation_steps=accumulation,
                             checkpoint_every=2, validate_every=5, num_validation_samples=0)  # fmt: skip
        recipe["generator"]["config"].update(dropout=0.0, cond_dropout=0.0)
        recipe["losses"] = {"contrastive": 0.0}
        return train(recipe, progress=False)

    big, accumulated = run(tmp_path / "big", 4, 1), run(tmp_path / "acc", 2, 2)
    for step in (1, 2):
        assert accumulated.losses[step] == pytest.approx(big.losses[step], rel=1e-5)
    a = load_file(str(tmp_path / "big" / "checkpoints" / "step-00000002" / "model.safetensors"))
    b = load_file(str(tmp_path / "acc" / "checkpoints" / "step-00000002" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=5e-5) for k in a)
    assert json.loads((tmp_path / "acc" / "checkpoints" / "step-00000002" / "trainer_state.json").read_text())["micro_step"] == 4


def test_mixed_precision_choice(monkeypatch):
    from vmas_diffusion.training.trainer import resolve_mixed_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_mixed_precision("auto") == "no" and resolve_mixed_precision("fp16") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_mixed_precision("auto") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_mixed_precision("auto") == "fp16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert resolve_mixed_precision("auto") is None  # `accelerate launch --mixed_precision` decides
    with pytest.raises(ConfigError, match="mixed_precision"):
        resolve_mixed_precision("fp8")


# ---------------------------------------------------------------------------------------- recipes
@pytest.mark.parametrize("backend", ["ar", "ldm"])
@pytest.mark.parametrize(
    "ablation, changed",
    [
        ("no_contrastive", {"contrastive": None, "losses": {"contrastive": 0.0}}),
        ("no_beat", {"losses": {"beat_onset": 0.0, "beat_visual": 0.0}}),
    ],
)
def test_ablation_recipes_differ_from_their_base_only_where_named(backend, ablation, changed):
    from omegaconf import OmegaConf

    from vmas_diffusion.recipes import load_recipe

    base = OmegaConf.to_container(load_recipe(ROOT / "recipes" / f"tiny_{backend}.yaml"))
    variant = OmegaConf.to_container(load_recipe(ROOT / "recipes" / f"tiny_{backend}_{ablation}.yaml"))
    assert variant.pop("name") == f"tiny_{backend}_{ablation}"
    base.pop("name")
    for key, value in changed.items():
        if isinstance(value, dict):
            base[key].update(value)
        else:
            base[key] = value
    assert variant == base


@pytest.mark.parametrize("name, backend", [("small_ar", "ar"), ("small_ldm", "ldm")])
def test_small_recipes_have_the_stated_sizes(name, backend):
    from omegaconf import OmegaConf

    from vmas_diffusion.models.generators import build_generator
    from vmas_diffusion.recipes import load_recipe

    cfg = load_recipe(ROOT / "recipes" / f"{name}.yaml", ["data.train_dir=somewhere"])
    gen = OmegaConf.to_container(cfg.generator.config)
    assert cfg.codec.type == "encodec_hf" and not cfg.codec.config  # EnCodec 32 kHz defaults
    assert gen["hidden_size"] == 1024 and gen["num_heads"] == 16
    assert cfg.data.window_seconds == 10.0 and cfg.data.train_dir == "somewhere"
    if backend == "ar":
        assert gen["num_layers"] == 24 and gen["ffn_dim"] == 4096  # MusicGen-small's decoder
        with torch.device("meta"):  # no memory, no init time
            model = build_generator({"type": "ar", "config": dict(gen, num_codebooks=4, cardinality=2048, video_dim=768)})
        assert 3.0e8 < sum(p.numel() for p in model.parameters()) < 6.0e8


def test_musicgen_warm_start_key(tmp_path):
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    from vmas_diffusion.building import build_training_components
    from vmas_diffusion.recipes import load_recipe

    config = MusicgenDecoderConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, num_codebooks=4,
        pad_token_id=64, bos_token_id=64, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    MusicgenForCausalLM(config).save_pretrained(tmp_path / "musicgen")
    hf = load_file(str(tmp_path / "musicgen" / "model.safetensors"))
    recipe = tiny_recipe("ar", tmp_path / "run", tmp_path, musicgen_checkpoint=str(tmp_path / "musicgen"))
    generator = build_training_components(load_recipe(recipe))["generator"]
    ours = generator.state_dict()
    assert torch.equal(ours["lm_heads.0.weight"], hf["lm_heads.0.weight"])
    assert generator.config.video_dim == 16  # the recipe's other settings are kept
    recipe["generator"]["config"]["hidden_size"] = 64
    with pytest.raises(Exception, match="does not fit|hidden"):
        build_training_components(load_recipe(recipe))


# ---------------------------------------------------------------------------------------- distributed
DISTRIBUTED_ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: windows of 1-4 s, unequal within every batch and between the two processes' halves of it
UNEVEN_SECONDS = [1.0, 3.5, 2.0, 4.0, 1.5, 3.0, 2.5, 1.0, 4.0, 2.0, 3.0, 1.5]


def two_vs_one(tmp_path, data_dir, backend="ar", steps=3):
    """Train ``steps`` steps under ``accelerate launch`` on 2 CPU processes x batch 2 and in this process
    x batch 4, every dropout on; returns ``(losses_one, losses_two, weights_one, weights_two, weights_start)``."""
    from vmas_diffusion.training import train

    def recipe(out, batch):
        # adam_epsilon 1e-6: biases right before a GroupNorm have a zero gradient up to float noise, which
        # Adam with eps 1e-8 scales to full steps of either sign (true gradients here are 1e-4 and more)
        r = tiny_recipe(backend, out, data_dir, max_steps=steps, batch_size=batch, checkpoint_every=1, keep_checkpoints=steps,
                        validate_every=steps, num_validation_samples=0, adam_epsilon=1e-6)  # fmt: skip
        r["generator"]["config"].update(cond_dropout=0.5, **({"dropout": 0.2} if backend == "ar" else {}))
        r["video_encoder"]["config"]["dropout"] = 0.2
        return r

    two = tmp_path / "two"
    recipe_file = tmp_path / "two.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe(two, 2)))
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "vmas_diffusion.cli", "train", str(recipe_file), "--no-progress",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), **DISTRIBUTED_ENV)
    proc = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = step_dir(steps)
    assert json.loads((two / "checkpoints" / last / "trainer_state.json").read_text())["world_size"] == 2
    assert (two / "checkpoints" / last / "rng_1.safetensors").is_file()

    one = tmp_path / "one"
    train(recipe(one, 4), progress=False)
    weights = [load_file(str(run / "checkpoints" / last / "model.safetensors")) for run in (one, two)]
    start = load_file(str(one / "checkpoints" / step_dir(1) / "model.safetensors"))
    return _losses(one), _losses(two), weights[0], weights[1], start


def step_dir(step: int) -> str:
    return f"step-{step:08d}"


@pytest.mark.parametrize("backend", ["ar", pytest.param("ldm", marks=pytest.mark.slow)])
def test_two_cpu_processes_match_one_process(tmp_path_factory, tmp_path, backend):
    """accelerate launch, 2 processes x batch 2 == 1 process x batch 4, on windows of 1-4 s with every dropout on.

    The losses are normalised by the global count of valid frames (not a mean of per-process means) and
    every random draw, dropout masks included, comes from the sample's own seed, whatever its batch's
    padding: the per-step losses and the weights after 3 steps agree within float noise (here 2e-7 and
    1.2e-7; before: losses 1.7e-3 (AR) / 2.7e-2 (LDM) relative apart, weights 2.9e-3). ~30 s alone on 2 cores.
    """
    data_dir = make_synthetic_data(tmp_path_factory.mktemp("uneven"), seconds=UNEVEN_SECONDS)
    losses_one, losses_two, a, b, first = two_vs_one(tmp_path, data_dir, backend)
    assert a.keys() == b.keys()
    for step in (1, 2, 3):
        assert losses_two[step] == pytest.approx(losses_one[step], rel=1e-5)
    moved = {k: float((a[k] - first[k]).abs().max()) for k in a}
    assert max(moved.values()) > 1e-3  # lr 1e-3: 2 more Adam steps move weights by up to 2e-3
    for key in a:
        # a weight with a real gradient agrees to 1e-4 of what it moves; the biases right before a
        # GroupNorm (zero gradient up to float noise) move by ~1e-6 and agree to that
        tolerance = 2e-7 if moved[key] > 1e-5 else 5e-6
        assert torch.allclose(a[key], b[key], rtol=0, atol=tolerance), (key, float((a[key] - b[key]).abs().max()))


# ---------------------------------------------------------------------------------------- kills during a save
class Killed(BaseException):
    """Stands for a SIGKILL inside the process: nothing after it runs (no cleanup in the save catches it)."""


def _kill_at(monkeypatch, phase: str, step: int):
    """Make the save of ``step`` stop at ``phase``; a deletion phase first deletes part of the folder."""
    from vmas_diffusion.training.checkpoints import CheckpointManager

    def on_phase(self, name, folder):
        if name == phase and step_dir(step) in folder.name:
            if name.startswith("removing"):  # killed halfway through the deletion
                for path in sorted(p for p in folder.rglob("*") if p.is_file())[::2]:
                    path.unlink()
            raise Killed(phase)

    monkeypatch.setattr(CheckpointManager, "on_phase", on_phase)


SAVE_PHASES = ["started", "model written", "files written", "files synced", "complete", "old renamed away", "renamed in",
               "removing old"]  # fmt: skip


@pytest.fixture(scope="module")
def unbroken_run(tmp_path_factory, data_dir):
    """3 steps, a checkpoint every step, the last 2 kept: step-2 and step-3."""
    from vmas_diffusion.training import train

    out = tmp_path_factory.mktemp("unbroken")
    recipe = tiny_recipe("ar", out / "run", data_dir, max_steps=3, checkpoint_every=1, keep_checkpoints=2, validate_every=10,
                         num_validation_samples=0)  # fmt: skip
    train(recipe, progress=False)
    return recipe, out / "run"


def _check_resumed(recipe, run: Path, want: Path):
    from vmas_diffusion.training import train
    from vmas_diffusion.training.checkpoints import checkpoint_problem

    result = train(recipe, resume="auto", progress=False)
    assert result.step == 3
    root = run / "checkpoints"
    names = sorted(p.name for p in root.iterdir())
    assert not [n for n in names if n.startswith(".")] and names[-2:] == ["step-00000002", "step-00000003"], names
    assert all(checkpoint_problem(p) is None for p in root.iterdir())
    a = load_file(str(want / "checkpoints" / step_dir(3) / "model.safetensors"))
    b = load_file(str(root / step_dir(3) / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(run)[3] == pytest.approx(_losses(want)[3], rel=1e-6)


@pytest.mark.parametrize(
    "replacing, phase",
    [(True, phase) for phase in SAVE_PHASES] + [(False, phase) for phase in ("started", "files synced", "complete", "renamed in")],
)
def test_a_kill_during_a_save_leaves_a_resumable_run(tmp_path, monkeypatch, unbroken_run, replacing, phase):
    """A kill at each phase of the save of step 3 leaves only complete step folders (and leftovers that
    --resume finishes or removes); the resumed run ends with the unbroken run's weights.

    ``replacing``: --resume-from step-2 re-runs step 3 and saves it over the existing step-3 (as
    docs/training.md describes); otherwise a fresh run, which without a finished step-3 re-runs it.
    """
    import shutil

    from vmas_diffusion.training import train
    from vmas_diffusion.training.checkpoints import list_checkpoints

    recipe, want = unbroken_run
    run = tmp_path / "run"
    recipe = {**recipe, "train": {**recipe["train"], "output_dir": str(run)}}
    _kill_at(monkeypatch, phase, 3)
    with pytest.raises(Killed):
        if replacing:
            shutil.copytree(want, run)
            train(recipe, resume=str(run / "checkpoints" / step_dir(2)), progress=False)
        else:
            train(recipe, progress=False)
    monkeypatch.undo()
    for folder in list_checkpoints(run / "checkpoints"):  # what --resume may pick is whole
        assert (folder / "optimizer.json").is_file() and (folder / "model.safetensors").is_file()
    _check_resumed(recipe, run, want)


def test_checkpoint_completeness(unbroken_run, tmp_path):
    """The manifest names every file and its size; a checkpoint written before manifests still counts."""
    import shutil

    from vmas_diffusion.training.checkpoints import checkpoint_problem, list_checkpoints

    folder = tmp_path / "checkpoints" / step_dir(3)
    shutil.copytree(unbroken_run[1] / "checkpoints" / step_dir(3), folder)
    manifest = json.loads((folder / "manifest.json").read_text())["files"]
    assert {"model.safetensors", "optimizer.json", "trainer_state.json", "pipeline/model_index.json"} <= set(manifest)
    assert checkpoint_problem(folder) is None
    with open(folder / "model.safetensors", "r+b") as handle:
        handle.truncate(100)
    assert "has 100 bytes" in checkpoint_problem(folder) and list_checkpoints(folder.parent) == []
    (folder / "model.safetensors").unlink()
    assert "is missing" in checkpoint_problem(folder)
    (folder / "manifest.json").unlink()  # as written before manifests: judged by its files
    assert "model or optimizer" in checkpoint_problem(folder)
    shutil.copy(unbroken_run[1] / "checkpoints" / step_dir(3) / "model.safetensors", folder)
    assert checkpoint_problem(folder) is None
    (folder / "trainer_state.json").unlink()
    assert "no manifest.json" in checkpoint_problem(folder)


def test_a_kill_while_pruning_leaves_a_resumable_run(tmp_path, monkeypatch, unbroken_run):
    """The save of step 3 deletes step-1 (keep 2): a kill halfway through that deletion."""
    from vmas_diffusion.training import train

    recipe, want = unbroken_run
    run = tmp_path / "run"
    recipe = {**recipe, "train": {**recipe["train"], "output_dir": str(run)}}
    _kill_at(monkeypatch, "removing .del-", 1)
    with pytest.raises(Killed):
        train(recipe, progress=False)
    monkeypatch.undo()
    assert (run / "checkpoints" / ".del-step-00000001").is_dir()  # the partly deleted folder is out of the way
    _check_resumed(recipe, run, want)


SIGKILLED_SAVE = textwrap.dedent(
    """
    import json, os, signal, sys
    from vmas_diffusion.training import train
    from vmas_diffusion.training.checkpoints import CheckpointManager

    def on_phase(self, name, folder):
        if name == "removing old":  # the old step-3 half deleted, then kill -9
            for path in sorted(p for p in folder.rglob("*") if p.is_file())[::2]:
                path.unlink()
            os.kill(os.getpid(), signal.SIGKILL)

    CheckpointManager.on_phase = on_phase
    train(json.load(open(sys.argv[1])), resume=sys.argv[2], progress=False)
    """
)


def test_sigkill_while_deleting_a_replaced_checkpoint(tmp_path, unbroken_run):
    """The case of issue 19: kill -9 while the replaced step-3 is being deleted; --resume used to pick the
    half-deleted folder and stop with "optimizer.json is missing"."""
    import shutil

    recipe, want = unbroken_run
    run = tmp_path / "run"
    shutil.copytree(want, run)
    recipe = {**recipe, "train": {**recipe["train"], "output_dir": str(run)}}
    recipe_file = tmp_path / "recipe.json"
    recipe_file.write_text(json.dumps(recipe))
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    resume_from = str(run / "checkpoints" / step_dir(2))
    proc = subprocess.run([sys.executable, "-c", SIGKILLED_SAVE, str(recipe_file), resume_from], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (run / "checkpoints" / ".old-step-00000003").is_dir()
    _check_resumed(recipe, run, want)
