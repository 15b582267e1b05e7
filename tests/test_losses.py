"""Alignment losses: known answers for InfoNCE, two-process gather equivalence, beat-loss behaviour."""

import math
import os

import pytest
import torch
import torch.multiprocessing as mp

from vmas_diffusion.errors import InputError
from vmas_diffusion.models.contrastive_head import ContrastiveHead
from vmas_diffusion.losses import (
    BeatAlignmentLoss,
    ContrastiveLoss,
    InfoNCELoss,
    gather_with_grad,
    resample_envelope,
    retrieval_recall,
    smooth_envelope,
)


def objective(head: ContrastiveHead, video: torch.Tensor, music: torch.Tensor) -> dict:
    """The training objective: the head's joint embeddings scored by the parameter-free InfoNCE."""
    return InfoNCELoss()(*head(video, music))


def identity_loss(width: int, temperature: float = 1.0) -> ContrastiveHead:
    """A ContrastiveHead whose projections are the identity, so the logits are hand-computable."""
    loss = ContrastiveHead(width, width, embed_dim=width, init_temperature=temperature)
    with torch.no_grad():
        for head in (loss.video_proj, loss.music_proj):
            head.weight.copy_(torch.eye(width))
            head.bias.zero_()
    return loss


# ---------------------------------------------------------------- contrastive: known answers


def test_contrastive_hand_computed_orthogonal_pairs_and_swapped():
    loss = identity_loss(2)
    eye = torch.eye(2)
    matched = objective(loss, eye, eye)
    # logits = I at scale 1: each row is -log(e / (e + 1)) in both directions.
    assert matched["contrastive"].item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    swapped = objective(loss, eye, eye.flip(0))
    assert swapped["contrastive"].item() == pytest.approx(math.log(1 + math.e), abs=1e-6)
    assert matched["logit_scale"].item() == pytest.approx(1.0)
    assert not matched["logit_scale"].requires_grad
    assert matched["contrastive_accuracy"].item() == 1.0 and swapped["contrastive_accuracy"].item() == 0.0


def test_contrastive_hand_computed_asymmetric_case():
    loss = identity_loss(2)
    video = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # unit rows
    music = torch.eye(2)
    # video->music logits [[1, 0], [0.6, 0.8]]; music->video logits [[1, 0.6], [0, 0.8]]
    v2m = [-1 + math.log(math.e + 1), -0.8 + math.log(math.exp(0.6) + math.exp(0.8))]
    m2v = [-1 + math.log(math.e + math.exp(0.6)), -0.8 + math.log(1 + math.exp(0.8))]
    expected = 0.5 * (sum(v2m) / 2 + sum(m2v) / 2)
    assert objective(loss, video, music)["contrastive"].item() == pytest.approx(expected, abs=1e-6)


def test_contrastive_identical_pairs_beat_shuffled_pairs():
    torch.manual_seed(0)
    loss = identity_loss(16, temperature=0.07)
    emb = torch.randn(8, 16)
    identical = objective(loss, emb, emb)["contrastive"].item()
    shuffled = objective(loss, emb, emb[torch.randperm(8)])["contrastive"].item()
    chance = math.log(8)
    assert identical < 0.1 < chance < shuffled


def test_contrastive_temperature_learnable_or_fixed_and_clamped():
    torch.manual_seed(0)
    video, music = torch.randn(4, 6), torch.randn(4, 5)
    learned = ContrastiveHead(6, 5, embed_dim=8)
    objective(learned, video, music)["contrastive"].backward()
    assert learned.log_logit_scale.grad is not None and learned.log_logit_scale.grad.abs() > 0
    fixed = ContrastiveHead(6, 5, embed_dim=8, learn_temperature=False)
    assert not fixed.log_logit_scale.requires_grad
    with torch.no_grad():
        learned.log_logit_scale.fill_(10.0)
    assert objective(learned, video, music)["logit_scale"].item() == pytest.approx(100.0)


def test_contrastive_embeddings_are_normalised_and_bad_shapes_raise():
    torch.manual_seed(0)
    loss = ContrastiveHead(6, 5, embed_dim=8)
    assert torch.allclose(loss.embed_video(torch.randn(3, 6)).norm(dim=-1), torch.ones(3))
    assert loss.embed_music(torch.randn(3, 5)).shape == (3, 8)
    with pytest.raises(InputError, match="music_embedding"):
        objective(loss, torch.randn(3, 6), torch.randn(3, 6))
    with pytest.raises(InputError, match="pairs"):
        objective(loss, torch.randn(3, 6), torch.randn(2, 5))


def test_contrastive_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    loss = ContrastiveHead(6, 5, embed_dim=8, init_temperature=0.1)
    loss.save_pretrained(tmp_path)
    again = ContrastiveLoss.from_pretrained(tmp_path)  # the pre-split name, as old pipeline folders spell it
    assert type(again) is ContrastiveHead
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    video, music = torch.randn(4, 6), torch.randn(4, 5)
    assert torch.equal(objective(loss, video, music)["contrastive"], objective(again, video, music)["contrastive"])


def test_gather_is_identity_without_distributed():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x


# ---------------------------------------------------------------- contrastive: two processes


def _two_process_worker(rank: int, world: int, rendezvous: str, out_dir: str, video, music):
    torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        loss = ContrastiveHead(video.shape[1], music.shape[1], embed_dim=8)  # same weights on both ranks
        per_rank = video.shape[0] // world
        rows = slice(rank * per_rank, (rank + 1) * per_rank)
        local_video = video[rows].clone().requires_grad_(True)
        local_music = music[rows].clone().requires_grad_(True)
        value = objective(loss, local_video, local_music)["contrastive"]
        value.backward()
        # What DDP / Accelerate do: average parameter gradients and (for logging) losses over ranks.
        grads = {name: p.grad.clone() for name, p in loss.named_parameters()}
        for grad in grads.values():
            torch.distributed.all_reduce(grad)
            grad /= world
        mean_loss = value.detach().clone()
        torch.distributed.all_reduce(mean_loss)
        mean_loss /= world
        # Uneven local batches: rank r contributes r + 1 rows; result is their rank-ordered concatenation.
        uneven = torch.full((rank + 1, 2), float(rank), requires_grad=True)
        gathered = gather_with_grad(uneven)
        (gathered * torch.arange(gathered.shape[0], dtype=torch.float32).unsqueeze(1)).sum().backward()
        torch.save(
            {
                "local_loss": value.detach(),
                "mean_loss": mean_loss,
                "grads": grads,
                "video_grad": local_video.grad,
                "music_grad": local_music.grad,
                "uneven": gathered.detach(),
                "uneven_grad": uneven.grad,
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_gather_matches_full_batch(tmp_path):
    torch.manual_seed(1)
    world, batch = 2, 8
    video, music = torch.randn(batch, 6), torch.randn(batch, 5)
    mp.spawn(
        _two_process_worker,
        args=(world, str(tmp_path / "rendezvous"), str(tmp_path), video, music),
        nprocs=world,
        join=True,
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]

    torch.manual_seed(0)
    single = ContrastiveHead(6, 5, embed_dim=8)
    full_video, full_music = video.clone().requires_grad_(True), music.clone().requires_grad_(True)
    full = objective(single, full_video, full_music)["contrastive"]
    full.backward()

    assert ranks[0]["mean_loss"].item() == pytest.approx(full.item(), abs=1e-6)
    assert ranks[0]["local_loss"].item() != pytest.approx(ranks[1]["local_loss"].item(), abs=1e-4)
    for name, param in single.named_parameters():
        for r in range(world):
            torch.testing.assert_close(ranks[r]["grads"][name], param.grad, atol=1e-6, rtol=1e-5)
    # Input gradients: each rank's (un-averaged) gradient is world x the full-batch gradient of its rows.
    half = batch // world
    for r in range(world):
        rows = slice(r * half, (r + 1) * half)
        torch.testing.assert_close(ranks[r]["video_grad"] / world, full_video.grad[rows], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(ranks[r]["music_grad"] / world, full_music.grad[rows], atol=1e-6, rtol=1e-5)
    # Uneven gather: [rank0 row, rank1 row, rank1 row]; d/d(slot i) of sum(i * x_i), summed over 2 ranks.
    expected = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    assert torch.equal(ranks[0]["uneven"], expected) and torch.equal(ranks[1]["uneven"], expected)
    assert torch.equal(ranks[0]["uneven_grad"], torch.zeros(1, 2))
    assert torch.equal(ranks[1]["uneven_grad"], torch.tensor([[2.0, 2.0], [4.0, 4.0]]))


# ---------------------------------------------------------------- retrieval


def test_retrieval_recall_known_answers():
    torch.manual_seed(0)
    emb = torch.randn(10, 4)
    perfect = retrieval_recall(emb, emb * 3.0)  # scale does not matter: cosine similarity
    assert perfect == {"R@1": 1.0, "R@5": 1.0, "chance@1": 0.1, "chance@5": 0.5}
    # Music of video i placed at row i+1: the true match sits at rank >= 1 for most queries.
    rolled = retrieval_recall(torch.eye(4), torch.eye(4).roll(1, dims=0), ks=(1, 2))
    assert rolled["R@1"] == 0.0 and rolled["chance@2"] == 0.5
    constant = retrieval_recall(torch.ones(5, 3), torch.ones(5, 3), ks=(1, 5))
    assert constant["R@1"] == 0.0 and constant["R@5"] == 1.0  # ties count against the match
    with pytest.raises(InputError):
        retrieval_recall(torch.randn(3, 4), torch.randn(4, 4))


def test_retrieval_recall_hand_ranked_case():
    video = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    music = torch.tensor([[1.0, 0.2], [1.0, 0.0], [0.0, 1.0]])
    # video 0: music 1 (cos 1.0) beats its own music 0 (0.98): rank 1.
    # video 1: music 2 (1.0) and music 0 (0.20) beat its own music 1 (0.0): rank 2.
    # video 2: its own music 2 (0.995) is the best: rank 0.
    out = retrieval_recall(video, music, ks=(1, 2))
    assert out["R@1"] == pytest.approx(1 / 3) and out["R@2"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------- beat alignment


def impulse_train(length: int, period: int, phase: int) -> torch.Tensor:
    env = torch.zeros(1, length)
    env[0, phase::period] = 1.0
    return env


def test_beat_onset_term_is_masked_bce():
    loss = BeatAlignmentLoss(onset_weight=2.0, visual_weight=0.0)
    logits = torch.zeros(2, 4)
    target = torch.tensor([[1.0, 0.0, 0.5, 1.0], [0.0, 0.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    logits_bad = logits.clone()
    logits_bad[~mask] = 30.0  # masked frames must not count
    terms = loss(logits_bad, target, torch.zeros(2, 4), torch.tensor([True, True]), mask)
    assert set(terms) == {"beat_onset"}  # zero weight: term absent
    assert terms["beat_onset"].item() == pytest.approx(2.0 * math.log(2.0), abs=1e-6)


def test_beat_visual_minimal_when_envelopes_coincide_and_monotone_in_shift():
    tol = 2
    loss = BeatAlignmentLoss(onset_weight=0.0, visual_weight=1.0, tolerance_frames=tol)
    visual = impulse_train(96, 12, 6)
    aligned = torch.tensor([True])
    target = torch.zeros(1, 96)

    def visual_term(onsets: torch.Tensor) -> float:
        logits = torch.logit(onsets.clamp(1e-6, 1 - 1e-6))
        return loss(logits, target, visual, aligned)["beat_visual"].item()

    # Onset envelope proportional to the tolerance-smoothed visual envelope: perfect correlation.
    assert visual_term(0.5 * smooth_envelope(visual, tol)) < 1e-4
    values = [visual_term(visual.roll(shift, dims=1)) for shift in range(0, tol + 2)]
    assert all(a < b for a, b in zip(values, values[1:])), values  # strictly grows up to tol + 1
    far = [visual_term(visual.roll(shift, dims=1)) for shift in range(tol + 1, 7)]
    assert min(far) >= values[-1] - 1e-6 and min(values) == values[0]
    # Known value at shift 0: c = <v, v~> / (|v| |v~|) with kernel [1/3, 2/3, 1, 2/3, 1/3].
    expected = 1.0 - 1.0 / math.sqrt(1 + 2 * (2 / 3) ** 2 + 2 * (1 / 3) ** 2)
    assert values[0] == pytest.approx(expected, abs=1e-4)


def test_beat_visual_uses_only_aligned_items_and_valid_frames():
    torch.manual_seed(0)
    loss = BeatAlignmentLoss(onset_weight=1.0, visual_weight=0.5)
    logits = torch.randn(3, 40, requires_grad=True)
    target = torch.rand(3, 40)
    visual = torch.rand(3, 40)
    aligned = torch.tensor([True, False, True])
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[2, 30:] = False
    base = loss(logits, target, visual, aligned, mask)
    changed_visual = visual.clone()
    changed_visual[1] = torch.rand(40)  # misaligned item
    changed_visual[2, 30:] = 5.0  # padding frames
    changed_logits = logits.detach().clone()
    changed_logits[2, 30:] = -7.0
    other = loss(changed_logits, target, changed_visual, aligned, mask)
    assert other["beat_visual"].item() == pytest.approx(base["beat_visual"].item(), abs=1e-6)
    assert other["beat_onset"].item() == pytest.approx(base["beat_onset"].item(), abs=1e-6)
    # No aligned item: an exact zero that still reaches the logits (gradient zero, not None).
    none = loss(logits, target, visual, torch.zeros(3, dtype=torch.bool), mask)
    none["beat_visual"].backward()
    assert none["beat_visual"].item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_beat_visual_gradient_moves_onsets_toward_visual_beats():
    loss = BeatAlignmentLoss(onset_weight=0.0, visual_weight=1.0, tolerance_frames=1)
    visual = impulse_train(48, 8, 3)
    logits = torch.zeros(1, 48, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=5.0)
    start = None
    for _ in range(20):
        value = loss(logits, torch.zeros(1, 48), visual, torch.tensor([True]))["beat_visual"]
        start = value.item() if start is None else start
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    prob = torch.sigmoid(logits.detach())[0]
    assert value.item() < 0.5 * start
    # The optimum is p proportional to the smoothed envelope: beat > its neighbours > elsewhere.
    smoothed = smooth_envelope(visual, 1)[0]
    on_beat = prob[visual[0] > 0]
    near_beat = prob[(smoothed > 0) & (visual[0] == 0)]
    off_beat = prob[smoothed == 0]
    assert on_beat.min() > near_beat.max() + 0.1 and near_beat.min() > off_beat.max() + 0.1


def test_beat_loss_rejects_bad_input():
    loss = BeatAlignmentLoss()
    x = torch.zeros(2, 5)
    with pytest.raises(InputError, match="aligned"):
        loss(x, x, x, torch.ones(3, dtype=torch.bool))
    with pytest.raises(InputError, match="visual_envelope"):
        loss(x, x, torch.zeros(2, 4), torch.ones(2, dtype=torch.bool))
    with pytest.raises(InputError, match="onset_target"):
        loss(x, x + 2.0, x, torch.ones(2, dtype=torch.bool))
    with pytest.raises(InputError, match="visual_weight"):
        BeatAlignmentLoss(visual_weight=-1.0)


# ---------------------------------------------------------------- envelopes


def test_resample_envelope_keeps_peaks_down_and_interpolates_up():
    src = torch.zeros(2, 200)
    src[0, [7, 51, 133]] = 1.0  # peaks at odd positions that a strided pick would miss
    src[1, 100] = 0.25
    down = resample_envelope(src, src_rate=100.0, dst_rate=30.0)
    assert down.shape == (2, 60)
    assert down[0].sum().item() == 3.0 and down[0].max().item() == 1.0
    assert sorted(torch.nonzero(down[0]).flatten().tolist()) == [int(7 * 0.3), int(51 * 0.3), int(133 * 0.3)]
    assert down[1, 30].item() == 0.25
    up = resample_envelope(torch.tensor([0.0, 1.0, 0.0, 0.5]), src_rate=25.0, dst_rate=50.0, num_frames=10)
    torch.testing.assert_close(up, torch.tensor([0.0, 0.5, 1.0, 0.5, 0.0, 0.25, 0.5, 0.0, 0.0, 0.0]))


# ---------------------------------------------------------------- with a real generator


def test_alignment_losses_train_the_generator_and_heads():
    """GeneratorTrainOutput -> both losses -> gradients reach the generator, its beat head and the heads."""
    import dummies

    from vmas_diffusion.conditions import Condition

    generator = dummies.dummy_ar_generator().train()
    heads = dummies.dummy_contrastive_head(video_dim=16, music_dim=generator.config.hidden_size)
    g = torch.Generator().manual_seed(0)
    video = Condition(torch.randn(3, 6, 16, generator=g), torch.ones(3, 6, dtype=torch.bool), 10.0)
    beat = Condition(torch.rand(3, 6, 1, generator=g), torch.ones(3, 6, dtype=torch.bool), 10.0)
    codes = torch.randint(0, 64, (3, 4, 30), generator=g)
    out = generator.forward_train({"codes": codes, "conditions": {"video": video, "beat": beat}})
    pooled_video = video.tensor.mean(dim=1).requires_grad_(True)  # stands in for the video encoder's pooled output
    terms = objective(heads, pooled_video, out.music_embedding)
    onset = torch.rand(3, 30, generator=g)
    visual = resample_envelope(beat.tensor[..., 0], 10.0, 50.0, 30)
    terms.update(BeatAlignmentLoss()(out.onset_logits, onset, visual, torch.tensor([True, False, True])))
    assert set(terms) == {"contrastive", "logit_scale", "contrastive_accuracy", "beat_onset", "beat_visual"}
    terms["contrastive"].backward(retain_graph=True)
    assert generator.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0  # the music embedding shapes the LM
    assert heads.video_proj.weight.grad.abs().sum() > 0 and heads.music_proj.weight.grad.abs().sum() > 0
    assert pooled_video.grad.abs().sum() > 0
    assert generator.beat_head.weight.grad is None  # the beat head is not on the contrastive path
    (terms["beat_onset"] + terms["beat_visual"]).backward()
    assert generator.beat_head.weight.grad.abs().sum() > 0
