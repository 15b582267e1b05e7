"""A third backend needs no edit outside its own file: register the toy generator (tests/toy_generator.py)
and the pipeline, a training run and the evaluation take it as they take "ar" and "ldm"."""

import json

import numpy as np
import pytest
import torch
import yaml
from dummies import ROOT, make_synthetic_data, tiny_recipe

from vmas_diffusion import VideoToMusicPipeline
from vmas_diffusion.defaults import DEMO_VIDEO
from vmas_diffusion.models.generators import GENERATORS

TOY = {"type": "toy", "config": {"hidden_size": 32}}


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The one line a backend adds: its name in the generator registry."""
    monkeypatch.setitem(GENERATORS, "toy", "toy_generator:ToyFrameGenerator")


def toy_recipe() -> dict:
    recipe = yaml.safe_load((ROOT / "recipes" / "tiny_ldm.yaml").read_text())
    recipe["generator"] = TOY
    return recipe


def test_pipeline_runs_the_toy_backend():
    torch.manual_seed(0)
    pipe = VideoToMusicPipeline.from_recipe(toy_recipe())
    pipe.set_progress_bar_config(disable=True)
    assert pipe.backend == "toy" and pipe.scheduler is None  # it samples without a scheduler
    assert pipe.generator.config.latent_dim == pipe.codec.latent_dim  # derived from the codec, not repeated

    def run(seed, video=str(DEMO_VIDEO)):
        return pipe(video=video, duration=1.0, generator=torch.Generator().manual_seed(seed))

    out = run(0)
    assert out.audios.shape == (1, 1, pipe.sample_rate) and np.isfinite(out.audios).all()
    np.testing.assert_array_equal(out.audios, run(0).audios)
    assert not np.allclose(out.audios, run(1).audios)
    batch = pipe(video=[str(DEMO_VIDEO)] * 2, duration=1.0,
                 generator=[torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)])
    np.testing.assert_allclose(batch.audios[0], out.audios[0], atol=1e-5)
    assert pipe.embed_music(out.audios[0], out.sample_rate).shape == (pipe.contrastive_head.config.embed_dim,)


def test_a_saved_toy_pipeline_loads_back(tmp_path):
    torch.manual_seed(0)
    pipe = VideoToMusicPipeline.from_recipe(toy_recipe())
    pipe.save_pretrained(tmp_path)
    again = VideoToMusicPipeline.from_pretrained(tmp_path)
    assert type(again.generator).__name__ == "ToyFrameGenerator"
    kwargs = dict(video=str(DEMO_VIDEO), duration=0.5)
    np.testing.assert_array_equal(pipe(generator=torch.Generator().manual_seed(0), **kwargs).audios,
                                  again(generator=torch.Generator().manual_seed(0), **kwargs).audios)


def test_training_runs_the_toy_backend(tmp_path):
    from vmas_diffusion.training import train

    data = make_synthetic_data(tmp_path / "data")
    recipe = tiny_recipe("ldm", tmp_path / "run", data, max_steps=2, checkpoint_every=2, validate_every=2)
    recipe["generator"] = TOY
    result = train(recipe, progress=False)
    assert result.step == 2
    metrics = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert any("mse" in m for m in metrics)  # the toy's own loss, next to the alignment terms
    assert list((tmp_path / "run" / "samples").rglob("*.wav"))  # validation generated through generate_audio


def test_evaluation_runs_the_toy_backend(tmp_path):
    from vmas_diffusion.evaluation import run_evaluation

    recipe = tmp_path / "toy.yaml"
    recipe.write_text(yaml.safe_dump(toy_recipe()))
    manifest = tmp_path / "set.jsonl"
    manifest.write_text("".join(
        json.dumps({"video": str(DEMO_VIDEO), "start": start, "end": start + 1.5, "id": f"bikes{i}"}) + "\n"
        for i, start in enumerate((0.0, 3.0))
    ))
    report = run_evaluation([str(recipe)], str(manifest), str(tmp_path / "out"), seed=0, progress=False, plots=False)
    assert report.columns == ["toy (toy)"]
    metrics = report.results["models"][0]["metrics"]
    assert metrics["generated_this_run"] == 2 and metrics["rtf"] > 0
    assert metrics["visual.bhs_window"] is not None and metrics["R@1"] is not None  # beats and retrieval scored
