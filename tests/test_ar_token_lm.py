import dummies
import pytest
import torch

from vmas_diffusion.conditions import Condition, local_pace
from vmas_diffusion.errors import CheckpointError, ConfigError, InputError
from vmas_diffusion.models.generators import build_generator
from vmas_diffusion.models.generators.ar_token_lm import ARTokenLM, sample_from_logits
from vmas_diffusion.modules.codebook_patterns import build_pattern

K, V, DV, FR = 4, 64, 16, 50.0


def make_conditions(batch=2, seconds=0.6, video_fps=10.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    tv = int(seconds * video_fps)
    video = Condition(torch.randn(batch, tv, DV, generator=g), torch.ones(batch, tv, dtype=torch.bool), video_fps)
    beat = Condition(torch.rand(batch, tv, 1, generator=g), torch.ones(batch, tv, dtype=torch.bool), video_fps)
    return {"video": video, "beat": beat}


def null(conditions):
    return {name: cond.null() for name, cond in conditions.items()}


def teacher_inputs(model, codes):
    steps = model.codebook_pattern.interleave(codes, model.special_id)
    return steps, torch.cat([torch.full_like(steps[..., :1], model.special_id), steps[..., :-1]], 2)


# ---------------------------------------------------------------------------------------------- training
def test_forward_train_shapes_and_gradients():
    model = dummies.dummy_ar_generator().train()
    codes = torch.randint(0, V, (2, K, 20))
    out = model.forward_train({"codes": codes, "conditions": make_conditions()})
    assert set(out.losses) == {"ce"}
    assert out.music_embedding.shape == (2, 32) and out.onset_logits.shape == (2, 20)
    assert torch.allclose(out.losses["ce"].detach(), out.ce_per_codebook.mean())
    # a fresh model is close to uniform over the codebook
    assert abs(out.losses["ce"].item() - torch.log(torch.tensor(float(V))).item()) < 0.3
    (out.losses["ce"] + out.onset_logits.sum() + out.music_embedding.sum()).backward()
    assert model.layers[0].cross_attn.q_proj.weight.grad.abs().sum() > 0  # video reaches the loss
    assert model.beat_proj.weight.grad.abs().sum() > 0
    assert model.beat_head.weight.grad.abs().sum() > 0


def test_beat_dropout_drops_the_beat_alone():
    """beat_dropout 0.99 trains on the video without its beat (the beat guidance's middle branch)."""
    model = dummies.dummy_ar_generator(cond_dropout=0.0, beat_dropout=0.99, dropout=0.0).train()
    codes, conds = torch.randint(0, V, (2, K, 20), generator=torch.Generator().manual_seed(0)), make_conditions()
    no_beat = dict(conds, beat=conds["beat"].null())

    def ce(conditions):
        return model.forward_train({"codes": codes, "conditions": conditions, "generator": torch.Generator().manual_seed(5)}).losses["ce"]

    torch.testing.assert_close(ce(conds), ce(no_beat))
    model.eval()  # no dropout: the beat is heard
    assert (ce(conds) - ce(no_beat)).abs() > 1e-6
    with pytest.raises(ConfigError, match="beat_dropout"):
        dummies.dummy_ar_generator(beat_dropout=1.0)


def test_context_noise_replaces_past_codes_not_targets():
    """context_noise p swaps about p of the teacher-forced input codes for random ones (never the start
    token), the same per item whatever the batch's padding; the targets, eval mode and the alignment
    pass see the clean past."""
    model = dummies.dummy_ar_generator(cond_dropout=0.0, context_noise=0.3, dropout=0.0).train()
    codes = torch.randint(0, V, (2, K, 200), generator=torch.Generator().manual_seed(0))
    _, inputs = teacher_inputs(model, codes)
    noisy = model._noisy_context(inputs, [torch.Generator().manual_seed(i) for i in (1, 2)])
    real = inputs != model.special_id
    changed = (noisy != inputs)[real].float().mean().item()
    assert 0.25 < changed < 0.32  # 0.3 minus the draws that land on the same code (1 in 64)
    assert torch.equal(noisy[~real], inputs[~real]) and noisy[real].max() < V
    # item 0 alone, on a shorter (less padded) clip, draws the same noise on the steps they share
    short = model._noisy_context(inputs[:1, :, :120], [torch.Generator().manual_seed(1)])
    torch.testing.assert_close(short, noisy[:1, :, :120])

    batch = {"codes": codes[:, :, :20], "conditions": make_conditions(), "generator": torch.Generator().manual_seed(3)}
    out = model.forward_train(batch)
    clean = dummies.dummy_ar_generator(cond_dropout=0.0, dropout=0.0).train()
    clean.load_state_dict(model.state_dict())
    ref = clean.forward_train(batch)
    assert not torch.allclose(out.losses["ce"], ref.losses["ce"])  # the LM pass reads a noisy past
    torch.testing.assert_close(out.music_embedding, ref.music_embedding)  # the alignment pass a clean one
    model.eval(), clean.eval()
    torch.testing.assert_close(model.forward_train(batch).losses["ce"], clean.forward_train(batch).losses["ce"])
    with pytest.raises(ConfigError, match="context_noise"):
        dummies.dummy_ar_generator(context_noise=1.0)


def test_alignment_features_read_the_music_alone_when_clean():
    codes = torch.randint(0, V, (2, K, 20))
    a, b = make_conditions(seed=0), make_conditions(seed=1)
    clean = dummies.dummy_ar_generator()
    out_a, out_b = (clean.forward_train({"codes": codes, "conditions": c}) for c in (a, b))
    torch.testing.assert_close(out_a.music_embedding, out_b.music_embedding)
    torch.testing.assert_close(out_a.onset_logits, out_b.onset_logits)
    assert not torch.allclose(out_a.losses["ce"], out_b.losses["ce"])  # generation still sees the video
    shared = dummies.dummy_ar_generator(align_features="lm")
    out_a, out_b = (shared.forward_train({"codes": codes, "conditions": c}) for c in (a, b))
    assert not torch.allclose(out_a.music_embedding, out_b.music_embedding)


def test_loss_ignores_masked_frames():
    model = dummies.dummy_ar_generator(cond_dropout=0.0)
    codes = torch.randint(0, V, (2, K, 16))
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 10:] = False
    conds = make_conditions()
    a = model.forward_train({"codes": codes, "conditions": conds, "mask": mask})
    # later frames are masked and, by causality, cannot change earlier predictions: same loss
    changed = codes.clone()
    changed[1, :, 10:] = torch.randint(0, V, (K, 6))
    b = model.forward_train({"codes": changed, "conditions": conds, "mask": mask})
    assert torch.allclose(a.losses["ce"], b.losses["ce"], atol=1e-6)
    assert torch.allclose(a.music_embedding, b.music_embedding, atol=1e-6)
    # sanity: without the mask the change is visible
    full_a = model.forward_train({"codes": codes, "conditions": conds})
    full_c = model.forward_train({"codes": changed, "conditions": conds})
    assert (full_a.ce_per_codebook - full_c.ce_per_codebook).abs().max() > 1e-5


def test_cross_entropy_matches_manual_computation():
    model = dummies.dummy_ar_generator()
    codes = torch.randint(0, V, (1, K, 6))
    conds = make_conditions(batch=1)
    out = model.forward_train({"codes": codes, "conditions": conds})
    steps, inputs = teacher_inputs(model, codes)
    logits = model(inputs, conds)[0]  # [K, S, V]
    layout = model.codebook_pattern.layout(6)
    manual = []
    for k in range(K):
        valid = layout[k] >= 0
        manual.append(torch.nn.functional.cross_entropy(logits[k][valid], steps[0, k][valid]))
    assert torch.allclose(out.ce_per_codebook, torch.stack(manual), atol=1e-5)


def test_onset_logits_undo_the_delay():
    """Frame t's onset logit is read before any code of frame t is seen, and after frame t-1 is."""
    model = dummies.dummy_ar_generator()
    codes = torch.randint(0, V, (1, K, 12))
    conds = make_conditions(batch=1)
    base = model.forward_train({"codes": codes, "conditions": conds}).onset_logits
    changed = codes.clone()
    changed[:, :, 6:] = (changed[:, :, 6:] + 1) % V
    after = model.forward_train({"codes": changed, "conditions": conds}).onset_logits
    assert torch.allclose(base[:, :7], after[:, :7], atol=1e-6)
    assert not torch.allclose(base[:, 7:], after[:, 7:], atol=1e-4)


def test_condition_dropout_one_equals_null_conditions():
    model = dummies.dummy_ar_generator(cond_dropout=0.99, dropout=0.0).train()
    codes = torch.randint(0, V, (2, K, 10))
    conds = make_conditions()
    torch.manual_seed(3)  # rand(B) < 0.99 drops both items with this seed
    assert bool((torch.rand(2) < 0.99).all())
    torch.manual_seed(3)
    dropped = model.forward_train({"codes": codes, "conditions": conds}).losses["ce"]
    model.eval()
    assert torch.allclose(dropped, model.forward_train({"codes": codes, "conditions": null(conds)}).losses["ce"])
    assert torch.allclose(dropped, model.forward_train({"codes": codes, "conditions": {}}).losses["ce"])
    assert not torch.allclose(dropped, model.forward_train({"codes": codes, "conditions": conds}).losses["ce"])


@pytest.mark.parametrize("video_fuse", ["cross", "prepend"])
def test_conditions_change_logits_and_are_causal(video_fuse):
    model = dummies.dummy_ar_generator(video_fuse=video_fuse)
    codes = torch.randint(0, V, (1, K, 10))
    conds = make_conditions(batch=1)
    _, inputs = teacher_inputs(model, codes)
    with_cond, without = model(inputs, conds), model(inputs, null(conds))
    assert not torch.allclose(with_cond, without, atol=1e-4)
    # a change at step 5 leaves the logits of positions <= 5 untouched
    changed = inputs.clone()
    changed[:, :, 6:] = (changed[:, :, 6:] + 1) % V
    after = model(changed, conds)
    assert torch.allclose(with_cond[:, :, :6], after[:, :, :6], atol=1e-6)
    assert not torch.allclose(with_cond[:, :, 6:], after[:, :, 6:], atol=1e-4)


@pytest.mark.parametrize("lookahead", [0, 2])
def test_beat_enters_at_the_step_that_predicts_its_frame(lookahead):
    """A beat at frame 4 reaches step 4 (the delay pattern predicts frame 4 there) and, with
    ``beat_lookahead``, the ``lookahead`` steps before it; never an earlier one."""
    model = dummies.dummy_ar_generator(video_fuse="none", beat_lookahead=lookahead)
    codes = torch.randint(0, V, (1, K, 10))
    _, inputs = teacher_inputs(model, codes)
    fps = FR  # beat at the music frame rate: frame i of the beat is music frame i
    beat = torch.zeros(1, 13, 1)
    a = model(inputs, {"beat": Condition(beat, torch.ones(1, 13, dtype=torch.bool), fps)})
    beat[0, 4] = 1.0
    b = model(inputs, {"beat": Condition(beat, torch.ones(1, 13, dtype=torch.bool), fps)})
    diff = (a - b).abs().amax(dim=(0, 1, 3))  # per position
    first = 4 - lookahead
    assert diff[:first].max() == 0 and diff[first] > 0


def test_with_beat_lookahead_keeps_the_logits_and_then_sees_ahead():
    model = dummies.dummy_ar_generator(video_fuse="none")
    torch.nn.init.normal_(model.beat_proj.weight)
    wide = model.with_beat_lookahead(3)
    assert wide.config.beat_lookahead == 3 and wide.beat_proj.weight.shape == (32, 4) and not wide.training
    _, inputs = teacher_inputs(model, torch.randint(0, V, (1, K, 10)))
    beat = Condition(torch.rand(1, 13, 1), torch.ones(1, 13, dtype=torch.bool), FR)
    assert torch.allclose(wide(inputs, {"beat": beat}), model(inputs, {"beat": beat}), atol=1e-6)
    torch.nn.init.normal_(wide.beat_proj.weight)  # once its new taps have weight, step 1 sees frame 4 (3 ahead)
    bumped = Condition(beat.tensor.clone(), beat.mask, FR)
    bumped.tensor[0, 4] += 1.0
    diff = (wide(inputs, {"beat": beat}) - wide(inputs, {"beat": bumped})).abs().amax(dim=(0, 1, 3))
    assert diff[:1].max() == 0 and diff[1] > 0
    with pytest.raises(ConfigError, match="fewer"):
        wide.with_beat_lookahead(1)
    with pytest.raises(ConfigError, match="beat_fuse"):
        dummies.dummy_ar_generator(beat_fuse="none").with_beat_lookahead(2)


def test_pace_starts_silent_then_tells_a_busy_video_from_a_calm_one():
    """``pace_seconds``: a zero-initialised projection of the beat condition's local pace; a model trained
    without it computes the same logits, and once it has weight a step far from any beat still sees
    how busy the video is around it (the beat itself reaches only ``beat_lookahead`` steps)."""
    plain = dummies.dummy_ar_generator(video_fuse="none")
    paced = dummies.dummy_ar_generator(video_fuse="none", pace_seconds=1.0)
    missing, unexpected = paced.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["pace_proj.weight"] and not unexpected and paced.pace_proj.weight.abs().max() == 0
    _, inputs = teacher_inputs(plain, torch.randint(0, V, (1, K, 10)))
    calm = torch.zeros(1, 40, 1)
    busy = calm.clone()
    busy[0, 20::4] = 1.0  # beats from music frame 20 on, past what steps 0-9 see
    conds = {name: {"beat": Condition(b, torch.ones(1, 40, dtype=torch.bool), FR)} for name, b in (("calm", calm), ("busy", busy))}
    torch.testing.assert_close(paced(inputs, conds["busy"]), plain(inputs, conds["busy"]), atol=0, rtol=0)
    assert torch.equal(plain(inputs, conds["busy"]), plain(inputs, conds["calm"]))
    torch.nn.init.normal_(paced.pace_proj.weight)
    assert not torch.allclose(paced(inputs, conds["busy"]), paced(inputs, conds["calm"]), atol=1e-4)
    # the dropped beat drops the pace with it: CFG's unconditional branch stays the no-video one
    torch.testing.assert_close(paced(inputs, null(conds["busy"])), plain(inputs, null(conds["busy"])), atol=0, rtol=0)
    # a given pace (the target music's in pace_source="music" training) is what the step sees, and
    # without one the video's is mapped by pace_map: a map onto a busy video's pace makes a calm one busy
    busy_pace = local_pace(conds["busy"]["beat"], 1.0)
    given = {**conds["calm"], "pace": busy_pace}
    torch.testing.assert_close(paced(inputs, given), paced(inputs, conds["busy"]), atol=0, rtol=0)
    constant = [[[0.0], [float(busy_pace.tensor[0, 5:35, f].mean())]] for f in range(2)]
    mapped = dummies.dummy_ar_generator(video_fuse="none", pace_seconds=1.0, pace_source="music", pace_map=constant)
    mapped.load_state_dict(paced.state_dict())
    assert not torch.allclose(mapped(inputs, conds["calm"]), paced(inputs, conds["calm"]), atol=1e-4)
    with pytest.raises(InputError, match="unknown condition"):
        plain(inputs, given)  # a model without the pace takes none
    for bad, needle in (({"pace_seconds": -1.0}, "pace_seconds"), ({"pace_seconds": 1.0, "beat_fuse": "none"}, "beat_fuse='sum'"),
                        ({"pace_source": "audio"}, "pace_source"), ({"pace_map": [[[1, 0], [0, 1]]] * 2}, "pace_map")):
        with pytest.raises(ConfigError, match=needle):
            dummies.dummy_ar_generator(**bad)


# -------------------------------------------------------------------------------------------- generation
def guided_logits(model, inputs, conds, scale):
    cond, uncond = model(inputs, conds), model(inputs, null(conds))
    return uncond + scale * (cond - uncond)


@pytest.mark.parametrize(
    "pattern,video_fuse", [("delay", "cross"), ("delay", "prepend"), ("flatten", "cross"), ("parallel", "cross")]
)
def test_greedy_generation_matches_teacher_forcing(pattern, video_fuse):
    """KV-cached, CFG-batched decoding reproduces argmax of the full forward at every sampled slot."""
    model = dummies.dummy_ar_generator(pattern=pattern, video_fuse=video_fuse)
    conds = make_conditions(batch=2)
    codes = model.generate(conds, 12, guidance_scale=2.5, temperature=0.0)
    assert codes.shape == (2, K, 12) and codes.dtype == torch.long
    steps, inputs = teacher_inputs(model, codes)
    argmax = guided_logits(model, inputs, conds, 2.5).argmax(-1)
    valid = model.codebook_pattern.valid_mask(12)
    assert torch.equal(argmax[:, valid], steps[:, valid])


def test_beat_guidance_is_a_third_branch_without_the_beat():
    """Greedy decoding with a guidance of the beat's own follows
    ``null + g (no_beat - null) + g_beat (cond - no_beat)`` of the full forward; ``g_beat = g`` is plain
    CFG; the config's value is the default and the argument overrides it."""
    model = dummies.dummy_ar_generator()
    conds = make_conditions(batch=2)
    greedy = dict(guidance_scale=2.5, temperature=0.0)
    codes = model.generate(conds, 12, beat_guidance_scale=8.0, **greedy)
    steps, inputs = teacher_inputs(model, codes)
    no_beat = {**conds, "beat": conds["beat"].null()}
    cond, middle, uncond = model(inputs, conds), model(inputs, no_beat), model(inputs, null(conds))
    argmax = (uncond + 2.5 * (middle - uncond) + 8.0 * (cond - middle)).argmax(-1)
    valid = model.codebook_pattern.valid_mask(12)
    assert torch.equal(argmax[:, valid], steps[:, valid])
    plain = model.generate(conds, 12, **greedy)
    assert not torch.equal(codes, plain)
    assert torch.equal(model.generate(conds, 12, beat_guidance_scale=2.5, **greedy), plain)
    video_only = {"video": conds["video"]}  # no beat to guide: plain CFG
    assert torch.equal(model.generate(video_only, 12, beat_guidance_scale=8.0, **greedy), model.generate(video_only, 12, **greedy))
    model.register_to_config(beat_guidance_scale=8.0)
    assert torch.equal(model.generate(conds, 12, **greedy), codes)
    assert torch.equal(model.generate(conds, 12, beat_guidance_scale=2.5, **greedy), plain)
    for bad in (-1.0, float("nan"), True):
        with pytest.raises(InputError, match="beat_guidance_scale"):
            model.generate(conds, 12, beat_guidance_scale=bad, **greedy)
    with pytest.raises(ConfigError, match="beat_guidance_scale"):
        dummies.dummy_ar_generator(beat_guidance_scale=-2.0)


def test_generation_is_reproducible_and_batch_equals_singles():
    model = dummies.dummy_ar_generator()
    conds = make_conditions(batch=2)

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    batch = model.generate(conds, 15, generator=gens(1, 2), top_k=10)
    again = model.generate(conds, 15, generator=gens(1, 2), top_k=10)
    assert torch.equal(batch, again)
    for i, seed in enumerate((1, 2)):
        single = {n: Condition(c.tensor[i : i + 1], c.mask[i : i + 1], c.frame_rate) for n, c in conds.items()}
        assert torch.equal(model.generate(single, 15, generator=gens(seed), top_k=10), batch[i : i + 1])
    assert not torch.equal(batch, model.generate(conds, 15, generator=gens(3, 4), top_k=10))
    # one generator for a batch: item 0 equals a single run with the same seed
    one = model.generate(conds, 15, generator=torch.Generator().manual_seed(7), top_k=10)
    single0 = {n: Condition(c.tensor[:1], c.mask[:1], c.frame_rate) for n, c in conds.items()}
    assert torch.equal(one[:1], model.generate(single0, 15, generator=torch.Generator().manual_seed(7), top_k=10))
    assert not torch.equal(one[0], one[1])
    # a single generator is the same stream as a one-item list (the pipeline's single runs vs batches)
    single1 = {n: Condition(c.tensor[1:], c.mask[1:], c.frame_rate) for n, c in conds.items()}
    assert torch.equal(model.generate(single1, 15, generator=torch.Generator().manual_seed(2), top_k=10), batch[1:])


@pytest.mark.parametrize("lookahead", [0, 3])
def test_windowed_continuation(lookahead):
    # window 10 frames, stride 6: a 25-frame piece takes windows at 0, 6, 12 and 18; with a beat
    # lookahead a window's last steps see the beat condition past its end, as teacher forcing does
    model = dummies.dummy_ar_generator(max_duration=0.2, extend_stride=0.12, beat_lookahead=lookahead)
    assert model.plan_windows(8) == [(0, 8, 0)]
    assert model.plan_windows(25) == [(0, 10, 0), (6, 10, 4), (12, 10, 4), (18, 7, 4)]
    conds = make_conditions(batch=1, seconds=0.6)
    ticks = []

    class Bar:
        def __init__(self, total):
            self.total = total

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            ticks.append(n)

    def factory(total):
        bar = Bar(total)
        ticks.append(-total)
        return bar

    greedy = dict(guidance_scale=2.0, temperature=0.0)
    long = model.generate(conds, 25, progress_bar=factory, **greedy)
    assert long.shape == (1, K, 25) and int(long.min()) >= 0 and int(long.max()) < V
    # steps sampled: window 1 all 13 steps; the others start after their prompt (10+3-4 and 7+3-4)
    assert ticks[0] == -(13 + 9 + 9 + 6) and sum(ticks[1:]) == 13 + 9 + 9 + 6
    # the first window is an ordinary single-window generation
    assert torch.equal(long[:, :, :10], model.generate(conds, 10, **greedy))
    # each later window continues its prompt: greedy decoding of window 2 given frames 6..9
    start, length, prompt_len = 6, 10, 4
    window = long[:, :, start : start + length]
    steps, inputs = teacher_inputs(model, window)
    argmax = guided_logits_window(model, inputs, conds, 2.0, start).argmax(-1)
    layout = model.codebook_pattern.layout(length)
    sampled = layout >= prompt_len
    assert torch.equal(argmax[:, sampled], steps[:, sampled])


def guided_logits_window(model, inputs, conds, scale, start_frame):
    cond = model(inputs, conds, start_frame=start_frame)
    uncond = model(inputs, null(conds), start_frame=start_frame)
    return uncond + scale * (cond - uncond)


def test_sampling_filters():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(4000, 1)
    u = torch.rand(4000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_from_logits(logits, u, top_k=1), torch.ones(4000, dtype=torch.long))
    assert torch.equal(sample_from_logits(logits, u, temperature=0.0), torch.ones(4000, dtype=torch.long))
    top2 = sample_from_logits(logits, u, top_k=2)
    assert set(top2.tolist()) == {1, 3}
    p = torch.tensor([3.0, 2.0]).softmax(0)[0].item()
    assert abs((top2 == 1).float().mean().item() - p) < 0.03
    full = sample_from_logits(logits, u, top_k=0)
    freq = torch.bincount(full, minlength=4).float() / 4000
    assert torch.allclose(freq, logits[0].softmax(0), atol=0.03)
    # nucleus 0.7: {1} holds 0.64 < 0.7, so {1, 3} are kept
    assert set(sample_from_logits(logits, u, top_p=0.7).tolist()) == {1, 3}


def test_sampling_defaults_come_from_the_config(tmp_path):
    """top_k / temperature left out of generate() are the model's own, saved with it; a call's own win."""
    conds = make_conditions(batch=1)
    run = lambda m, **kw: m.generate(conds, 12, generator=torch.Generator().manual_seed(0), **kw)  # noqa: E731
    plain = dummies.dummy_ar_generator()
    assert (plain.config.top_k, plain.config.temperature) == (250, 1.0)  # MusicGen's
    torch.testing.assert_close(run(plain), run(plain, top_k=250, temperature=1.0), rtol=0, atol=0)
    cool = dummies.dummy_ar_generator(temperature=0.5, top_k=4)
    cool.load_state_dict(plain.state_dict())
    torch.testing.assert_close(run(cool), run(plain, top_k=4, temperature=0.5), rtol=0, atol=0)
    torch.testing.assert_close(run(cool, top_k=250, temperature=1.0), run(plain), rtol=0, atol=0)
    assert not torch.equal(run(cool), run(plain))
    cool.save_pretrained(tmp_path)
    loaded = ARTokenLM.from_pretrained(tmp_path).eval()
    assert (loaded.config.top_k, loaded.config.temperature) == (4, 0.5)
    torch.testing.assert_close(run(loaded), run(cool), rtol=0, atol=0)
    # a config saved before these keys existed loads with MusicGen's defaults
    config = {k: v for k, v in cool.config.items() if k not in ("top_k", "temperature")}
    assert (ARTokenLM.from_config(config).config.top_k, ARTokenLM.from_config(config).config.temperature) == (250, 1.0)
    for bad, needle in (({"temperature": -0.1}, "temperature"), ({"temperature": float("nan")}, "temperature"),
                        ({"top_k": 2.5}, "top_k"), ({"top_k": -1}, "top_k"), ({"top_k": True}, "top_k")):
        with pytest.raises(ConfigError, match=needle):
            dummies.dummy_ar_generator(**bad)


def paced_conditions(beats_per_second: list, seconds: float, video_fps=10.0):
    """One item per rate: a random video with a beat envelope of hits at ``rate`` a second (0: still)."""
    conds = make_conditions(batch=len(beats_per_second), seconds=seconds, video_fps=video_fps)
    envelope = torch.zeros_like(conds["beat"].tensor)
    for i, rate in enumerate(beats_per_second):
        if rate:
            envelope[i, :: round(video_fps / rate), 0] = 1.0
    return {**conds, "beat": Condition(envelope, conds["beat"].mask, video_fps)}


def test_sampling_temperature_follows_the_videos_pace(tmp_path):
    """With a ``temperature_map`` each step samples at the map's temperature for the video's pace there:
    near-greedy under a still video, hot under a busy one, past the first window too; a call's own
    temperature samples every step at it, and without a beat the config's constant applies."""
    conds = paced_conditions([0, 5], seconds=2.8)  # still, 5 beats a second; longer than the music, so no step
    # (the delay pattern's last ones included) falls past the video's end, where the fallback applies
    plain = dummies.dummy_ar_generator(temperature=1.0)
    paced = dummies.dummy_ar_generator(temperature=1.0, temperature_map=[[0.0, 1.0], [1e-6, 5.0]])
    paced.load_state_dict(plain.state_dict())
    frames = 120  # 2.4 s: five windows of the 1 s model
    run = lambda m, c, **kw: m.generate(c, frames, guidance_scale=2.0, generator=torch.Generator().manual_seed(0), **kw)  # noqa: E731
    greedy = run(plain, conds, temperature=0.0)
    codes = run(paced, conds)
    assert torch.equal(codes[0], greedy[0])  # still video: the map's 1e-6, the argmax at every step
    assert (codes[1] != greedy[1]).float().mean() > 0.5  # busy: sampled at 5.0, far from the argmax
    assert torch.equal(run(paced, conds, temperature=0.0), greedy)  # a call's own temperature wins
    assert torch.equal(run(paced, {"video": conds["video"]}), run(plain, {"video": conds["video"]}))  # no beat: 1.0
    paced.save_pretrained(tmp_path)
    assert torch.equal(run(ARTokenLM.from_pretrained(tmp_path).eval(), conds), codes)
    for bad in ([[1.0, 0.0], [0.5, 0.9]], [[0.0, 3.0], [0.0, 0.9]], [[0.0], [0.5, 0.9]], "hot"):
        with pytest.raises(ConfigError, match="temperature_map"):
            dummies.dummy_ar_generator(temperature_map=bad)


def test_pace_temperature_changes_within_a_video():
    """:class:`PaceTemperature` reads the pace around each frame: a video still for 10 s and then busy is
    sampled cool at first and hot later, and at the fallback past its end."""
    from vmas_diffusion.guidance import plan_pace_temperature

    envelope = torch.zeros(1, 200, 1)
    envelope[0, 100::5, 0] = 1.0  # 10 fps: still, then 2 beats a second from 10 s
    beat = Condition(envelope, torch.ones(1, 200, dtype=torch.bool), 10.0)
    plan = plan_pace_temperature({"beat": beat}, [[0.0, 2.0], [0.5, 1.0]], fallback=0.8, window_seconds=4.0)
    temperature = plan.at(torch.tensor([100, 350, 700, 900, 1100]), FR)[0]  # 2, 7, 14, 18, 22 s
    torch.testing.assert_close(temperature, torch.tensor([0.5, 0.5, 1.0, 1.0, 0.8]), atol=0.03, rtol=0)
    assert plan_pace_temperature({"video": beat}, [[0.0], [0.5]], 0.8, 4.0) is None  # nothing says the pace
    assert plan_pace_temperature({"beat": beat}, None, 0.8, 4.0) is None


def test_per_row_temperature_is_each_rows_scalar_one():
    logits = torch.randn(6, 64, generator=torch.Generator().manual_seed(0))
    u = torch.rand(6, generator=torch.Generator().manual_seed(1))
    temperatures = torch.tensor([0.3, 0.5, 0.8, 1.0, 1.5, 3.0])
    rows = torch.stack([sample_from_logits(logits[i : i + 1], u[i : i + 1], top_k=20, temperature=float(t))[0]
                        for i, t in enumerate(temperatures)])
    assert torch.equal(sample_from_logits(logits, u, top_k=20, temperature=temperatures), rows)


# ------------------------------------------------------------------------------------- save, load, build
def test_save_load_round_trip(tmp_path):
    model = dummies.dummy_ar_generator(pattern="flatten", video_fuse="prepend")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = ARTokenLM.from_pretrained(tmp_path).eval()
    assert loaded.config.pattern == "flatten" and loaded.config.video_fuse == "prepend"
    _, inputs = teacher_inputs(model, torch.randint(0, V, (1, K, 5)))
    conds = make_conditions(batch=1)
    assert torch.equal(model(inputs, conds), loaded(inputs, conds))


def test_registry_and_bad_config():
    model = build_generator({"type": "ar", "config": {"num_codebooks": 2, "cardinality": 16, "hidden_size": 16,
                                                      "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "video_dim": 8}})
    assert isinstance(model, ARTokenLM) and model.backend == "ar"
    with pytest.raises(ConfigError, match="video_fuse"):
        dummies.dummy_ar_generator(video_fuse="sum")
    with pytest.raises(ConfigError, match="pattern"):
        dummies.dummy_ar_generator(pattern="zigzag")
    with pytest.raises(ConfigError, match="extend_stride"):
        dummies.dummy_ar_generator(extend_stride=1.0)
    with pytest.raises(ConfigError, match="beat_lookahead"):
        dummies.dummy_ar_generator(beat_lookahead=-1)
    with pytest.raises(ConfigError, match="unknown key"):
        build_generator({"type": "ar", "config": {"hidden": 8}})


def test_bad_inputs_raise_input_error():
    model = dummies.dummy_ar_generator()
    conds = make_conditions(batch=1)
    with pytest.raises(InputError, match="width 8"):
        model.generate({"video": Condition(torch.zeros(1, 3, 8), torch.ones(1, 3), 10.0)}, 5)
    with pytest.raises(InputError, match="unknown condition"):
        model.generate({"vidoe": conds["video"]}, 5)
    with pytest.raises(InputError, match="ids must lie"):
        model.forward_train({"codes": torch.full((1, K, 5), V), "conditions": conds})
    with pytest.raises(InputError, match="K=4"):
        model.forward_train({"codes": torch.zeros(1, 3, 5, dtype=torch.long), "conditions": conds})
    with pytest.raises(InputError, match="num_frames"):
        model.generate(conds, 0)
    with pytest.raises(InputError, match="generator list"):
        model.generate(conds, 5, generator=[torch.Generator(), torch.Generator()])


# ------------------------------------------------------------------------------------------- warm start
def tiny_musicgen(tmp_path, full=False):
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    config = MusicgenDecoderConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, num_codebooks=K,
        pad_token_id=V, bos_token_id=V, max_position_embeddings=64, dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = MusicgenForCausalLM(config).eval()
    hf.save_pretrained(tmp_path)
    return hf


def test_from_musicgen_gives_identical_logits(tmp_path):
    hf = tiny_musicgen(tmp_path)
    model = ARTokenLM.from_musicgen(tmp_path, video_dim=DV).eval()
    assert model.config.hidden_size == 32 and model.config.cardinality == V
    codes = torch.randint(0, V, (2, K, 9))
    _, inputs = teacher_inputs(model, codes)
    with torch.no_grad():
        ref = hf(input_ids=inputs.reshape(2 * K, -1)).logits.view(2, K, -1, V)
        ours = model(inputs)  # conditions off
        assert (ours - ref).abs().max() < 1e-4
        # the new video and beat branches start silent: conditions do not move the warm start yet
        assert (model(inputs, make_conditions(batch=2)) - ref).abs().max() < 1e-4


def test_from_musicgen_full_model_folder(tmp_path):
    """A whole MusicgenForConditionalGeneration folder (as facebook/musicgen-* ship): its decoder is used."""
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    decoder = MusicgenDecoderConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, num_codebooks=K,
        pad_token_id=V, bos_token_id=V, max_position_embeddings=64, dropout=0.0,
    )  # fmt: skip
    text = T5Config(vocab_size=32, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    codec = EncodecConfig(
        hidden_size=8, num_filters=4, codebook_size=V, upsampling_ratios=[2, 2], target_bandwidths=[1.0],
        num_residual_layers=1, num_lstm_layers=1, codebook_dim=8,
    )  # fmt: skip
    torch.manual_seed(0)
    full = MusicgenForConditionalGeneration(MusicgenConfig(text_encoder=text, audio_encoder=codec, decoder=decoder))
    full.eval().save_pretrained(tmp_path)
    model = ARTokenLM.from_musicgen(tmp_path, video_dim=DV, video_fuse="prepend").eval()
    _, inputs = teacher_inputs(model, torch.randint(0, V, (1, K, 7)))
    with torch.no_grad():
        ref = full.decoder(input_ids=inputs.reshape(K, -1)).logits.view(1, K, -1, V)
        assert (model(inputs) - ref).abs().max() < 1e-4


def test_text_condition_is_pluggable():
    model = dummies.dummy_ar_generator(text_dim=8, text_fuse="cross")
    _, inputs = teacher_inputs(model, torch.randint(0, V, (1, K, 6)))
    conds = make_conditions(batch=1)
    text = Condition(torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.bool))  # not time-aligned
    with_text = model(inputs, {**conds, "text": text})
    assert not torch.allclose(with_text, model(inputs, conds), atol=1e-4)
    assert torch.allclose(model(inputs, {**conds, "text": text.null()}), model(inputs, conds), atol=1e-6)
    codes = model.generate({**conds, "text": text}, 5, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (1, K, 5)
    with pytest.raises(ConfigError, match="text_dim"):
        dummies.dummy_ar_generator(text_fuse="cross")


def test_from_musicgen_errors(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        ARTokenLM.from_musicgen(tmp_path, video_dim=DV)
    tiny_musicgen(tmp_path)
    with pytest.raises(CheckpointError, match="does not fit"):
        ARTokenLM.from_musicgen(tmp_path, video_dim=DV, hidden_size=64, num_heads=4)
    (tmp_path / "model.safetensors").rename(tmp_path / "other.bin")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        ARTokenLM.from_musicgen(tmp_path, video_dim=DV)


def test_pattern_is_shared_index_logic():
    model = dummies.dummy_ar_generator(pattern="parallel")
    assert model.codebook_pattern.num_steps(7) == build_pattern("parallel", K).num_steps(7) == 7


def test_condition_dropout_draws_per_item_generators():
    """With one generator per item, an item's dropout draw does not depend on its batch mates."""
    model = dummies.dummy_ar_generator(cond_dropout=0.5, dropout=0.0).train()
    codes = torch.randint(0, V, (4, K, 12))
    conds = make_conditions(batch=4)

    def losses(idx, seeds):
        sub = {n: Condition(c.tensor[idx], c.mask[idx], c.frame_rate) for n, c in conds.items()}
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        out = model.forward_train({"codes": codes[idx], "conditions": sub, "generator": gens})
        return out.ce_per_codebook

    batch = [losses([i], [10 + i]) for i in range(4)]
    whole = [losses([0, 1, 2, 3], [10, 11, 12, 13])]
    # per-item CE of the batch is not exposed, so compare the batch mean with the singles' mean
    torch.testing.assert_close(whole[0], torch.stack(batch).mean(0), atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match="3 generators for a batch of 4"):
        losses([0, 1, 2, 3], [1, 2, 3])


# ------------------------------------------------------------------------------------- decoding speed
def test_generate_leaves_the_weight_layout_and_values_as_they_were():
    """generate holds linear weights column-major while it runs (faster CPU matmuls) and gives them back."""
    model = dummies.dummy_ar_generator().eval()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.generate(make_conditions(batch=1), 6, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    for name, p in model.named_parameters():
        assert p.is_contiguous(), name
        assert torch.equal(p, before[name]), name


def test_column_major_linears_keep_the_outputs():
    from vmas_diffusion.modules.transformer import column_major_linears

    model = dummies.dummy_ar_generator().eval()
    codes = torch.randint(0, V, (2, K, 9), generator=torch.Generator().manual_seed(0))
    _, inputs = teacher_inputs(model, codes)
    with torch.no_grad():
        plain = model(inputs, make_conditions())
        with column_major_linears(model):
            assert not model.layers[0].ffn.fc1.weight.is_contiguous()
            packed = model(inputs, make_conditions())
    assert model.layers[0].ffn.fc1.weight.is_contiguous()
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weights, tolerance", [("bf16", 0.1), ("int8", 0.25)])
def test_fast_copy_decodes_close_to_fp32(weights, tolerance):
    """The opt-in lossy copies: logits within a fraction of their spread, codes valid, the original untouched."""
    torch.manual_seed(0)
    model = dummies.dummy_ar_generator().eval()
    fast = model.fast_copy(weights)
    assert fast is not model and next(model.parameters()).dtype == torch.float32
    codes = torch.randint(0, V, (2, K, 9), generator=torch.Generator().manual_seed(0))
    _, inputs = teacher_inputs(model, codes)
    with torch.no_grad():
        ref, got = model(inputs, make_conditions()), fast(inputs, make_conditions()).float()
    assert float((got - ref).abs().max()) <= tolerance * float(ref.std())
    out = fast.generate(make_conditions(batch=1), 6, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, K, 6) and int(out.min()) >= 0 and int(out.max()) < V


def test_fast_copy_rejects_unknown_formats():
    with pytest.raises(ConfigError, match="fp8"):
        dummies.dummy_ar_generator().fast_copy("fp8")


# ------------------------------------------------------------------------------------ the decoding step
@pytest.mark.parametrize("column_major", [True, False], ids=["fused-qkv", "separate-qkv"])
@pytest.mark.parametrize("masks", [False, True], ids=["no-masks", "masks"])
def test_decode_step_equals_the_cached_layer_forward(column_major, masks):
    """ARDecoderLayer.decode_step (generation's one-position step) against the layer's cached forward:
    same output and the same cache, with q/k/v fused (column-major weights) or apart, and with a padded
    prefix (self-attention key mask) and an item whose whole cross context is masked out."""
    from vmas_diffusion.models.generators.ar_token_lm import cross_attention_mask
    from vmas_diffusion.modules.transformer import KVCache, column_major_linears

    torch.manual_seed(0)
    model = dummies.dummy_ar_generator().eval()
    layer, rows, past, h = model.layers[0], 3, 5, 32
    x, context = torch.randn(rows, past + 1, h), torch.randn(rows, 7, h)
    cross_kv = layer.cross_attn.project_kv(context)
    cross_mask = key_mask = None
    if masks:
        valid = torch.ones(rows, 7, dtype=torch.bool)
        valid[0, 3:], valid[1] = False, False  # item 1: a dropped condition
        cross_mask = cross_attention_mask(valid)
        key_mask = torch.ones(rows, past + 1, dtype=torch.bool)
        key_mask[2, :2] = False  # padded prefix tokens
    caches = [KVCache(rows, 4, 8, past + 1) for _ in range(2)]
    with torch.no_grad(), column_major_linears(layer, max_bytes=2**30 if column_major else 0):
        for cache in caches:
            layer(x[:, :past], cross_kv, cross_mask, key_mask, cache)
        ref = layer(x[:, past:], cross_kv, cross_mask, key_mask, caches[0])[:, 0]
        weights = layer.step_weights()
        assert len(weights[3]) == (1 if column_major else 3)  # the q/k/v weights: one fused matrix or three
        got = layer.decode_step(x[:, past], weights, cross_kv, cross_mask, key_mask, caches[1])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert caches[1].length == caches[0].length == past + 1
    torch.testing.assert_close(caches[1].buffer, caches[0].buffer, rtol=1e-5, atol=1e-6)
    if masks:
        assert not torch.isnan(got).any()


def test_kv_cache_step_append_equals_append():
    from vmas_diffusion.modules.transformer import KVCache

    a, b = KVCache(2, 4, 8, 3), KVCache(2, 4, 8, 3)
    for _ in range(3):
        kv = torch.randn(2, 2 * 4 * 8)
        k, v = kv.view(2, 2, 4, 1, 8).unbind(1)  # keys then values, heads-major
        torch.testing.assert_close(a.append(k, v), b.append_step(kv), rtol=0, atol=0)
    with pytest.raises(ValueError, match="overflow"):
        b.append_step(kv)


def test_generation_steps_equal_the_layers_forward(monkeypatch):
    """generate's decode_step path gives the codes of the layers' own forward: CFG, a padded prefix,
    one item's video dropped, greedy and sampled."""
    from vmas_diffusion.models.generators.ar_token_lm import ARDecoderLayer

    model = dummies.dummy_ar_generator(video_fuse="prepend")
    conds = make_conditions(batch=3)
    conds["video"].mask[0, 4:] = False
    conds["video"].mask[1] = False

    def run():
        return [model.generate(conds, 14, guidance_scale=2.5, temperature=t, top_k=20,
                               generator=[torch.Generator().manual_seed(i) for i in range(3)]) for t in (0.0, 1.0)]

    fast = run()
    monkeypatch.setattr(ARDecoderLayer, "step_weights", lambda self: None)  # every step through forward()
    for got, ref in zip(fast, run()):
        assert torch.equal(got, ref)


def test_decode_step_is_off_in_training_mode_and_for_int8_layers():
    model = dummies.dummy_ar_generator()
    assert model.layers[0].step_weights() is not None
    assert model.fast_copy("int8").layers[0].step_weights() is None  # quantized linears: the modules' path
    assert model.train().layers[0].step_weights() is None  # dropout belongs to forward()


def test_decode_step_skips_trailing_rows_without_context():
    """CFG's unconditional rows have no cross context: _step_cross hands decode_step the leading rows
    only, and the result equals the cached forward over every row with the masked ones."""
    from vmas_diffusion.models.generators.ar_token_lm import cross_attention_mask
    from vmas_diffusion.modules.transformer import KVCache

    torch.manual_seed(0)
    model = dummies.dummy_ar_generator().eval()
    layer, rows, h = model.layers[0], 4, 32
    x, context = torch.randn(rows, 3, h), torch.randn(rows, 7, h)
    valid = torch.ones(rows, 7, dtype=torch.bool)
    valid[1, 5:], valid[2:] = False, False  # rows 2 and 3: dropped conditions
    cross_kv, cross_mask = [layer.cross_attn.project_kv(context)], cross_attention_mask(valid)
    step_kv, step_mask = ARTokenLM._step_cross(cross_kv, cross_mask)
    assert step_kv[0][0].shape[0] == 2 and step_mask[0].shape[0] == 2
    caches = [KVCache(rows, 4, 8, 3) for _ in range(2)]
    with torch.no_grad():
        for cache in caches:
            layer(x[:, :2], cross_kv[0], cross_mask, None, cache)
        ref = layer(x[:, 2:], cross_kv[0], cross_mask, None, caches[0])[:, 0]
        got = layer.decode_step(x[:, 2], layer.step_weights(), step_kv[0], step_mask, None, caches[1])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # all rows with a context: nothing is cut; a masked row before a live one: every row stays
    assert ARTokenLM._step_cross(cross_kv, cross_attention_mask(torch.ones(rows, 7, dtype=torch.bool)))[0][0][0].shape[0] == 4
    valid[0] = False
    assert ARTokenLM._step_cross(cross_kv, cross_attention_mask(valid))[0] is cross_kv
    assert ARTokenLM._step_cross(cross_kv, cross_attention_mask(torch.zeros(rows, 7, dtype=torch.bool))) == ([None], None)
