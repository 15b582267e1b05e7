#!/usr/bin/env python
"""How much does a generator's prediction depend on each of its conditions?

For each pipeline, on one batch of prepared windows (``--shards``, default the validation shards of
``scripts/train_vmas_tiny.py``), teacher-forced: the LDM's relative change of its denoiser output
(``||f(x, c') - f(x, c)|| / ||f(x, c)||`` at several noise levels) and the AR's KL divergence of its
next-code distributions, when the beat is dropped, moved 0.25 s late, the video dropped, or all
conditions dropped. The table of docs/alignment_results.md ("why the LDM ignores the video").

Usage: ``python scripts/condition_sensitivity.py vmas-tiny-ldm vmas-tiny-ar [--shards DIR]``
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def variants(conds: dict, beat_key: str, video_key: str) -> dict:
    """The conditions as given, and with each change the table reports."""
    beat = conds[beat_key]
    late = replace(beat, tensor=beat.tensor.roll(int(0.25 * beat.frame_rate), dims=1))
    return {"no beat": {video_key: conds[video_key]}, "beat 0.25 s late": {video_key: conds[video_key], beat_key: late},
            "no video": {beat_key: beat}, "all dropped": {}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="pipeline folders or bundled names")
    parser.add_argument("--shards", default=str(ROOT / ".cache" / "vmas_tiny" / "shards_val"))
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)

    import torch

    from vmas_diffusion import VideoToMusicPipeline
    from vmas_diffusion.conditions import BEAT, VIDEO
    from vmas_diffusion.data import ShardDataset
    from vmas_diffusion.recipes import LossWeights
    from vmas_diffusion.training.task import VideoMusicTask

    torch.set_num_threads(1)
    batch = next(iter(ShardDataset(args.shards, batch_size=args.batch)))
    for name in args.models:
        pipe = VideoToMusicPipeline.from_pretrained(name)
        gen = pipe.generator.eval()
        task = VideoMusicTask(pipe.video_encoder.eval(), gen, pipe.contrastive_head, LossWeights())
        with torch.no_grad():
            video_out, beat = task.encode_video(batch)
            conds = {VIDEO: video_out.condition(), BEAT: beat}
            changed = variants(conds, BEAT, VIDEO)
            if gen.music_key == "latents":
                x0 = batch["latents"]
                noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
                for t in (200, 500, 800):
                    steps = torch.full((x0.shape[0],), t)
                    noisy = gen.noise_scheduler.add_noise(x0, noise, steps)

                    def predict(c):
                        return gen._denoise(noisy, steps.float(), gen.fuse_conditions(c, x0.shape[-1]), None)[0]

                    ref = predict(conds)
                    rel = {k: f"{float((predict(c) - ref).norm() / ref.norm()):.2%}" for k, c in changed.items()}
                    print(f"{name} (relative change, t={t}): {rel}")
            else:
                codes = batch["codes"]
                _, inputs = gen._teacher_forcing(codes)
                s, b = inputs.shape[-1], codes.shape[0]

                def log_probs(c):
                    return torch.log_softmax(gen._logits(gen._hidden(inputs, gen.fuse_conditions(c, s, 0, b))).float(), -1)

                ref = log_probs(conds)
                kl = {k: f"{float((ref.exp() * (ref - log_probs(c))).sum(-1).mean()):.4f}" for k, c in changed.items()}
                print(f"{name} (KL nats per step): {kl}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
