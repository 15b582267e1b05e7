import pytest
import torch

from vmas_diffusion.errors import ConfigError, InputError
from vmas_diffusion.modules.codebook_patterns import (
    DelayPattern,
    FlattenPattern,
    ParallelPattern,
    build_pattern,
)

SPECIAL = 99


@pytest.mark.parametrize("name", ["delay", "parallel", "flatten"])
@pytest.mark.parametrize("k,t", [(1, 1), (1, 5), (4, 1), (4, 7), (3, 10)])
def test_round_trip(name, k, t):
    pattern = build_pattern(name, k)
    codes = torch.randint(0, 50, (2, k, t), generator=torch.Generator().manual_seed(k * 100 + t))
    steps = pattern.interleave(codes, SPECIAL)
    assert steps.shape == (2, k, pattern.num_steps(t))
    assert torch.equal(pattern.deinterleave(steps, t), codes)
    # every code sits in exactly one slot; every other slot is the special token
    assert int((steps != SPECIAL).sum()) == codes.numel()
    assert torch.equal(steps != SPECIAL, pattern.valid_mask(t).expand_as(steps))


def test_delay_known_answer():
    codes = torch.tensor([[[1, 2, 3], [4, 5, 6], [7, 8, 9]]])  # [1, K=3, T=3]
    s = SPECIAL
    expected = torch.tensor([[[1, 2, 3, s, s], [s, 4, 5, 6, s], [s, s, 7, 8, 9]]])
    pattern = DelayPattern(3)
    assert torch.equal(pattern.interleave(codes, s), expected)
    assert pattern.first_step_of_frame(3).tolist() == [0, 1, 2]
    assert pattern.lead_frame(5).tolist() == [0, 1, 2, 3, 4]
    assert pattern.step_of(3).tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]


def test_delay_matches_transformers_musicgen():
    """Our delay layout, with the start token in front, equals MusicGen's delay pattern mask."""
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    k, t, pad = 4, 6, 64
    config = MusicgenDecoderConfig(
        vocab_size=pad, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, ffn_dim=16,
        num_codebooks=k, pad_token_id=pad, bos_token_id=pad, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    model = MusicgenForCausalLM(config)
    codes = torch.randint(0, pad, (1, k, t))
    # MusicGen's prompt is [BOS, codes...] per codebook; the mask holds the prompt shifted by the delay
    prompt = torch.cat([torch.full((1, k, 1), pad), codes], 2).reshape(k, t + 1)
    _, mask = model.build_delay_pattern_mask(prompt, pad_token_id=pad, max_length=t + k)
    ours = DelayPattern(k).interleave(codes, pad)
    ours = torch.cat([torch.full((1, k, 1), pad), ours], 2).reshape(k, t + k)
    assert torch.equal(mask, ours)


def test_parallel_and_flatten_known_answers():
    codes = torch.tensor([[[1, 2], [3, 4]]])  # [1, K=2, T=2]
    s = SPECIAL
    assert torch.equal(ParallelPattern(2).interleave(codes, s), codes)
    flat = FlattenPattern(2)
    assert torch.equal(flat.interleave(codes, s), torch.tensor([[[1, s, 2, s], [s, 3, s, 4]]]))
    assert flat.first_step_of_frame(2).tolist() == [0, 2]
    assert flat.lead_frame(4).tolist() == [0, 0, 1, 1]
    # exactly one real code per step
    assert flat.valid_mask(5).sum(0).tolist() == [1] * 10


def test_custom_delays_round_trip():
    pattern = DelayPattern(3, delays=[0, 2, 5])
    codes = torch.arange(12).view(1, 3, 4)
    steps = pattern.interleave(codes, SPECIAL)
    assert steps.shape[2] == 4 + 5
    assert steps[0, 2, :5].tolist() == [SPECIAL] * 5 and steps[0, 2, 5].item() == 8
    assert torch.equal(pattern.deinterleave(steps, 4), codes)


def test_bad_input_raises_project_errors():
    with pytest.raises(ConfigError, match="unknown codebook pattern 'zigzag'.*delay"):
        build_pattern("zigzag", 4)
    with pytest.raises(ConfigError, match="delays"):
        DelayPattern(3, delays=[0, 1])
    pattern = DelayPattern(4)
    with pytest.raises(InputError, match="K=4"):
        pattern.interleave(torch.zeros(1, 3, 5, dtype=torch.long), SPECIAL)
    with pytest.raises(InputError, match="need 8 steps"):
        pattern.deinterleave(torch.zeros(1, 4, 7, dtype=torch.long), 5)
