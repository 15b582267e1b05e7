#!/usr/bin/env python
"""Give a pipeline's contrastive head a rhythm part (``ContrastiveHead(rhythm_frames=...)``) fitted on a music set.

1. Every training clip is cut into ``--window``-second windows (as retrieval cuts them); each window's visual
   beat envelope and its real music's onset envelope are read as the pipeline reads them
   (``pipe.visual_beat_envelope`` / ``pipe.music_onset_envelope``).
2. The rhythm kernel (``2 * reach + 1`` taps, starting as the identity) is fitted by symmetric InfoNCE over
   batches of training windows, the rhythm part alone (the global projections stay as trained).
3. The rhythm part's share of the similarity is chosen on the validation windows: the share with the best
   R@5 of video -> real music retrieval with the whole joint embedding (ties: the smaller share).
4. The pipeline is saved to ``--out`` with the new head; everything else is unchanged.

Usage: ``python scripts/fit_rhythm_head.py --model vmas-tiny-ar --data .cache/music_set_v4 --out DIR``
(prints the validation table; the envelopes are cached in ``--cache``).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def window_inputs(pipe, data: Path, split: str, window: float, seconds: float, frames_out: int, pooled: bool) -> dict:
    """Per window of the split: visual beat and onset envelopes on ``frames_out`` bins (as the head pools
    them) and, when ``pooled``, the pooled embeddings."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from vmas_diffusion.evaluation.windows import clip_windows

    fps, size = float(pipe.video_encoder.config.fps), int(pipe.video_encoder.config.frame_size)
    out = {"beat": [], "onset": [], "video": [], "music": []}
    clips = [json.loads(line) for line in (data / f"{split}.jsonl").read_text().splitlines()]
    with torch.no_grad():
        for clip in tqdm(clips, desc=f"{split} windows"):
            for frames, wav in clip_windows(str(data / clip["video"]), str(data / clip["audio"]), fps=fps, size=size,
                                            sample_rate=pipe.sample_rate, window=window, seconds=seconds):
                audio = pipe.prepare_music(wav, pipe.sample_rate)
                for key, envelope in (("beat", pipe.visual_beat_envelope(frames)), ("onset", pipe.music_onset_envelope(audio))):
                    out[key].append(F.adaptive_max_pool1d(envelope.float()[:, None], frames_out)[0, 0])
                if pooled:
                    out["video"].append(pipe.pooled_video(frames)[0])
                    out["music"].append(pipe.pooled_music(audio)[0])
    return {k: torch.stack([x.float().cpu() for x in v]) for k, v in out.items() if v}


def cached_inputs(pipe, args, split: str, pooled: bool) -> dict:
    """``window_inputs``, cached as safetensors; the pooled embeddings are keyed by the model's files."""
    import hashlib

    from safetensors.torch import load_file, save_file

    from vmas_diffusion.evaluation.cache import model_fingerprint

    name = f"{split}_{args.window:g}s_{args.seconds:g}s_{args.frames}"
    if pooled:
        model = json.dumps(model_fingerprint(pipe.name_or_path), sort_keys=True)
        name += "_" + hashlib.sha256(model.encode()).hexdigest()[:16]
    path = Path(args.cache) / f"{name}.safetensors"
    if path.is_file():
        return load_file(path)
    inputs = window_inputs(pipe, args.data, split, args.window, args.seconds, args.frames, pooled)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(inputs, path)
    return inputs


def fit_kernel(head, train: dict, steps: int, batch: int, lr: float, seed: int) -> list:
    """InfoNCE on the rhythm part alone; returns the loss every 100 steps."""
    import torch

    from vmas_diffusion.losses import InfoNCELoss

    objective = InfoNCELoss()
    log_scale = torch.tensor(np.log(10.0), requires_grad=True)  # a temperature of the fit's own
    opt = torch.optim.Adam([head.rhythm_kernel, log_scale], lr=lr)
    g = torch.Generator().manual_seed(seed)
    n, losses = train["beat"].shape[0], []
    for step in range(steps):
        idx = torch.randperm(n, generator=g)[:batch]
        v, m = head.rhythm(train["beat"][idx], video=True), head.rhythm(train["onset"][idx], video=False)
        loss = objective(v, m, log_scale.exp())["contrastive"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            losses.append(round(float(loss.detach()), 4))
    return losses


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="pipeline folder or bundled name")
    parser.add_argument("--data", type=Path, required=True, help="a music set (scripts/build_music_set.py)")
    parser.add_argument("--out", type=Path, required=True, help="where the pipeline with the new head goes")
    parser.add_argument("--cache", default=str(ROOT / ".cache" / "rhythm_fit"))
    parser.add_argument("--window", type=float, default=4.0, help="seconds per window (retrieval's)")
    parser.add_argument("--seconds", type=float, default=16.0, help="seconds of each clip cut into windows")
    parser.add_argument("--frames", type=int, default=40, help="bins of the rhythm part")
    parser.add_argument("--reach", type=int, default=3, help="kernel taps before and after")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shares", default="0,0.25,0.5,0.75,0.9,1", help="rhythm shares tried on validation")
    args = parser.parse_args(argv)

    import torch

    from vmas_diffusion.losses import retrieval_recall
    from vmas_diffusion.models.contrastive_head import ContrastiveHead
    from vmas_diffusion.pipelines import VideoToMusicPipeline

    torch.manual_seed(args.seed)
    pipe = VideoToMusicPipeline.from_pretrained(args.model)
    old = pipe._contrastive_head()
    config = {k: v for k, v in old.config.items() if not k.startswith("_")}

    def rhythm_head(share: float) -> ContrastiveHead:
        return ContrastiveHead(**{**config, "rhythm_frames": args.frames, "rhythm_reach": args.reach, "rhythm_share": share})

    head = rhythm_head(0.0)
    state = {k: v for k, v in old.state_dict().items() if k != "rhythm_kernel"}
    head.load_state_dict(state, strict=False)  # the global projections and temperature as trained

    train = cached_inputs(pipe, args, "train", pooled=False)
    val = cached_inputs(pipe, args, "val", pooled=True)
    print(f"{train['beat'].shape[0]} training windows, {val['beat'].shape[0]} validation windows")
    losses = fit_kernel(head, train, args.steps, args.batch, args.lr, args.seed)
    kernel = head.rhythm_kernel.detach()
    print("InfoNCE every 100 steps:", losses)
    print("kernel:", [round(float(k), 3) for k in kernel])

    rows, best = [], None
    with torch.no_grad():
        for share in [float(s) for s in args.shares.split(",")]:
            trial = rhythm_head(share)
            trial.load_state_dict(head.state_dict())
            video, music = trial.embed_video(val["video"], val["beat"]), trial.embed_music(val["music"], val["onset"])
            recall = retrieval_recall(video, music, ks=(1, 5))
            rows.append((share, recall))
            if best is None or recall["R@5"] > best[1]["R@5"]:
                best = (share, recall, trial)
    print("| rhythm share | R@1 | R@5 (validation) |\n|---|---|---|")
    for share, r in rows:
        print(f"| {share:g} | {r['R@1']:.3f} | {r['R@5']:.3f} |")
    print(f"chance: R@1 {rows[0][1]['chance@1']:.4f}, R@5 {rows[0][1]['chance@5']:.4f}; chosen share {best[0]:g}")
    pipe.register_modules(contrastive_head=best[2])
    pipe.save_pretrained(args.out)
    print("saved", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
