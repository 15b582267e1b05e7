#!/usr/bin/env python
"""Which codec for vmas-tiny: reconstruction of held-out real music by each candidate.

Candidates are the signal-processing codec's two paths (latents for the LDM, tokens for the AR)
with quantizers of several sizes, each fitted (latent stats + k-means) on ``--fit-clips`` clips of
the music set's ``train`` split, plus the tiny EnCodec of ``recipes/tiny_ar.yaml`` (untrained) as
the learned-codec reference. Each encodes and decodes the first ``--seconds`` of ``--songs`` clips
of a held-out split (default ``val``); printed per candidate (mean over clips):

* spectral convergence ``||S - S'|| / ||S||`` of STFT magnitudes (0 = perfect) and log-spectral
  distance in dB;
* harmonic share and sustained pitched share kept (:mod:`vmas_diffusion.evaluation.music_content`),
  the decoded clips' mean over the originals' mean: does the melody survive;
* beat F1 (0.1 s) of the decoded music's beats against the clip's checked beat grid, for clips
  whose grid is trusted (the original's own F1 is the ceiling).

A spectrogram PNG (original and each candidate, one clip) is written to look at.

Each token row comes twice: as the centroids decode, and through the token post-filter fitted
on ``--post-filter`` train clips (``MelGriffinLimCodec.fit_sharpening``).

Usage: ``python scripts/compare_codecs.py [--quantizers 4x128 4x256 8x256 4x1024 8x256/4]``
(``KxN`` = K codebooks of N codes, ``/G`` = G band groups), or ``--codec FOLDER`` to judge a
saved codec (the shipped one: ``vmas_diffusion/assets/vmas-tiny/ar/codec``) as it is.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def spectral_errors(a, b):
    import torch

    window = torch.hann_window(1024)
    A = torch.stft(a, 1024, 256, window=window, return_complex=True).abs()
    B = torch.stft(b, 1024, 256, window=window, return_complex=True).abs()
    sc = float((A - B).norm() / A.norm())
    lsd = float((20 * torch.log10(A + 1e-4) - 20 * torch.log10(B + 1e-4)).pow(2).mean().sqrt())
    return sc, lsd


def parse_quantizer(spec: str) -> tuple[int, int, int]:
    size, _, groups = spec.partition("/")
    k, n = size.split("x")
    return int(k), int(n), int(groups or 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".cache" / "music_set")
    parser.add_argument("--split", default="val", help="held-out split the codecs are judged on")
    parser.add_argument("--quantizers", nargs="+", default=["4x128", "4x256", "8x256", "4x1024", "8x256/4"])
    parser.add_argument("--fit-clips", type=int, default=80)
    parser.add_argument("--songs", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--codec", type=Path, default=None,
                        help="judge this saved mel codec (e.g. vmas_diffusion/assets/vmas-tiny/ar/codec) instead of fitting")
    parser.add_argument("--post-filter", type=int, default=20, metavar="CLIPS",
                        help="also each quantizer with its token post-filter fitted on this many train clips (0: not)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / ".cache" / "codec_compare.png"))
    args = parser.parse_args(argv)

    import torch
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from vmas_diffusion.beats import beat_scores, music_beats
    from vmas_diffusion.evaluation.music_content import tonal_shares
    from vmas_diffusion.media import load_audio
    from vmas_diffusion.models.codecs import build_codec
    from vmas_diffusion.models.codecs.mel_griffinlim import MelGriffinLimCodec
    from vmas_diffusion.recipes import load_recipe

    torch.set_num_threads(2)
    rate = 16000
    meta = json.loads((args.data / "meta.json").read_text())
    rng = np.random.default_rng(args.seed)

    def clips(split, count):
        ids = sorted(k for k, v in meta.items() if v["split"] == split and v["package"] != "medley")
        return [ids[i] for i in rng.permutation(len(ids))[:count]]

    def wav(clip, seconds=None):
        audio = load_audio(str(args.data / "music" / f"{clip}.wav"), rate, end=seconds)
        return torch.from_numpy(audio)[None]

    def token_paths(codec, spec):
        """The codec's token round trip without and with its token post-filter (``token_sharpening``)."""
        plain = MelGriffinLimCodec.from_config({**codec.config, "token_sharpening": 0.0})
        plain.load_state_dict(codec.state_dict())
        paths = {f"mel + Griffin-Lim, tokens {spec}": lambda x, c=plain: c.decode_tokens(c.tokenize(x))}
        if codec.config.token_sharpening:
            name = f"mel + Griffin-Lim, tokens {spec} + post-filter (a={codec.config.token_sharpening:.2f})"
            paths[name] = lambda x, c=codec: c.decode_tokens(c.tokenize(x))
        return paths

    held_out = clips(args.split, args.songs)
    if args.codec:  # a saved codec, judged as it is
        codec = MelGriffinLimCodec.from_pretrained(str(args.codec)).eval()
        codecs = {"mel + Griffin-Lim, latents": lambda x, c=codec: c.decode(c.encode(x))}
        codecs.update(token_paths(codec, f"{codec.num_codebooks}x{codec.cardinality} ({args.codec})"))
    else:
        fit_music = [wav(c) for c in clips("train", args.fit_clips)]
        codecs = {}
        for spec in tqdm(args.quantizers, desc="fit quantizers"):
            k, n, groups = parse_quantizer(spec)
            codec = MelGriffinLimCodec(n_mels=128, num_codebooks=k, codebook_size=n, num_groups=groups)
            codec.set_latent_stats(*codec.fit_latent_stats(fit_music))
            codec.fit_codebooks(fit_music, iters=15, max_frames=60000, seed=args.seed)
            if args.post_filter:
                codec.fit_sharpening(fit_music[: args.post_filter])
            if not codecs:
                codecs["mel + Griffin-Lim, latents"] = lambda x, c=codec: c.decode(c.encode(x))
            codecs.update(token_paths(codec, spec))
        torch.manual_seed(args.seed)
        encodec = build_codec(OmegaConf.to_container(load_recipe(str(ROOT / "recipes" / "tiny_ar.yaml")).codec))
        codecs["tiny EnCodec (untrained), tokens"] = lambda x: encodec.decode_tokens(encodec.tokenize(x))

    rows, shown = {}, {}
    for clip in tqdm(held_out, desc="clips"):
        x = wav(clip, args.seconds)
        original = x[0, 0]
        harmonic, sustained = tonal_shares(original.numpy(), rate)
        grid = np.asarray(meta[clip]["beats"])
        grid = grid[grid < args.seconds] if meta[clip]["trusted"] else None

        def f1(audio):
            if grid is None:
                return np.nan
            return beat_scores(music_beats(audio, rate).times, grid, args.seconds)["f1_window"]

        rows.setdefault("original", []).append((0.0, 0.0, harmonic, sustained, f1(original.numpy())))
        for name, roundtrip in codecs.items():
            with torch.no_grad():
                y = roundtrip(x)[0, 0, : original.numel()].float()
            shares = tonal_shares(y.numpy(), rate)
            rows.setdefault(name, []).append(spectral_errors(original, y) + shares + (f1(y.numpy()),))
            if clip == held_out[0]:
                shown[name] = y.numpy()
    print(f"{len(held_out)} held-out clips ({args.split}), {args.seconds:g} s each; quantizers fitted on {args.fit_clips} train clips")
    print("| codec | spectral convergence | log-spectral distance (dB) | harmonic share kept | sustained pitch kept | beat F1 vs grid |")
    print("|---|---|---|---|---|---|")
    reference = np.nanmean(np.asarray(rows["original"], dtype=np.float64), axis=0)
    for name, values in rows.items():
        v = np.nanmean(np.asarray(values, dtype=np.float64), axis=0)
        # kept = the decoded music's mean share over the original's (a per-clip ratio explodes
        # on a clip with almost no sustained tone)
        print(f"| {name} | {v[0]:.3f} | {v[1]:.1f} | {v[2] / reference[2]:.2f} | {v[3] / reference[3]:.2f} | {v[4]:.3f} |")
    print(f"original: harmonic share {reference[2]:.3f}, sustained pitched share {reference[3]:.3f}")

    import librosa
    from matplotlib.figure import Figure

    first = wav(held_out[0], 4.0)[0, 0].numpy()
    panels = [("original", first)] + [(n, y[: first.size]) for n, y in shown.items()]
    fig = Figure(figsize=(10, 2.2 * len(panels)))
    for i, (name, y) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        spec = librosa.amplitude_to_db(np.abs(librosa.stft(y, n_fft=1024, hop_length=256)), ref=np.max)
        ax.imshow(spec, origin="lower", aspect="auto", vmin=-80, cmap="magma", extent=(0, len(y) / rate, 0, rate / 2))
        ax.set_title(name)
        ax.set_ylabel("Hz")
    fig.tight_layout()
    fig.savefig(args.out, dpi=60)
    print(f"spectrograms: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
