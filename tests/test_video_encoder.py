"""Temporal video encoder: shapes, masks, chunking, a dense reference, save/load, backbones, bad input."""

import math
import shutil

import numpy as np
import pytest
import torch
from dummies import dummy_video_encoder

from vmas_diffusion.conditions import Condition
from vmas_diffusion.errors import CheckpointError, ConfigError, InputError
from vmas_diffusion.models.registry import check_config_keys
from vmas_diffusion.models.video_encoder import (
    TIME_UNITS_PER_SECOND,
    TemporalVideoEncoder,
    VideoEncoderOutput,
)
from vmas_diffusion.modules.transformer import sinusoidal_embedding


def features(b, t, f=16, seed=0):
    return torch.randn(b, t, f, generator=torch.Generator().manual_seed(seed))


def video(b, t, h=32, w=32, seed=0):
    return torch.randint(0, 256, (b, t, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- shapes and masks
@pytest.mark.parametrize("t", [1, 7, 13, 8, 65])
def test_shapes_for_odd_lengths(t):
    enc = dummy_video_encoder()
    with torch.no_grad():
        out = enc.encode_features(features(2, t))
    assert isinstance(out, VideoEncoderOutput)
    assert out.hidden.shape == (2, t, 16) and out.mask.shape == (2, t) and out.pooled.shape == (2, 16)
    assert out.mask.dtype == torch.bool and out.mask.all()
    assert out.frame_rate == 8.0 == enc.config.fps
    cond = out.condition()
    assert isinstance(cond, Condition) and cond.frame_rate == 8.0 and cond.tensor is out.hidden
    assert torch.isfinite(out.hidden).all() and torch.isfinite(out.pooled).all()


@pytest.mark.parametrize("grad", [False, True])
def test_padded_batch_matches_unpadded_singles(grad):
    enc = dummy_video_encoder()
    lengths = [5, 17, 30]
    batch = features(3, 30) * 1e3  # garbage in the padding must not leak into valid outputs
    mask = torch.arange(30)[None] < torch.tensor(lengths)[:, None]
    singles = [features(1, n, seed=i + 1) for i, n in enumerate(lengths)]
    for i, n in enumerate(lengths):
        batch[i, :n] = singles[i][0]
    with torch.set_grad_enabled(grad):
        out = enc.encode_features(batch, mask)
        for i, n in enumerate(lengths):
            one = enc.encode_features(singles[i])
            torch.testing.assert_close(out.hidden[i, :n], one.hidden[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.pooled[i], one.pooled[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(out.mask, mask)
    assert (out.hidden[~mask] == 0).all()  # padded frames come out as zeros


def test_masked_frames_anywhere_are_ignored():
    enc = dummy_video_encoder()
    x = features(1, 40)
    mask = torch.ones(1, 40, dtype=torch.bool)
    mask[0, 10:14] = False
    mask[0, 25] = False
    y = x.clone()
    y[~mask] = torch.randn(int((~mask).sum()), 16) * 50
    y[0, 11] = float("nan")  # masked frames may hold anything
    with torch.no_grad():
        a, b = enc.encode_features(x, mask), enc.encode_features(y, mask)
        full = enc.encode_features(x)
    torch.testing.assert_close(a.hidden, b.hidden, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-6, rtol=0)
    assert not torch.allclose(a.hidden[mask], full.hidden[mask], atol=1e-4)  # the mask does act


def test_batch_of_frames_matches_singles():
    enc = dummy_video_encoder()
    frames = video(2, 11)
    with torch.no_grad():
        both = enc(frames)
        for i in range(2):
            one = enc(frames[i : i + 1])
            torch.testing.assert_close(both.hidden[i], one.hidden[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(both.pooled[i], one.pooled[0], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- chunking
def test_chunked_inference_matches_autograd_path_and_chunk_size():
    x = features(2, 77)
    mask = torch.ones(2, 77, dtype=torch.bool)
    mask[1, 50:] = False
    reference = dummy_video_encoder(inference_chunk_frames=4096).encode_features(x, mask)  # autograd path, one chunk
    assert reference.hidden.requires_grad
    with torch.no_grad():  # same chunks, in place: bit for bit the autograd path
        same = dummy_video_encoder(inference_chunk_frames=4096).encode_features(x, mask)
    assert torch.equal(same.hidden, reference.hidden) and torch.equal(same.pooled, reference.pooled)
    for chunk in (1, 8, 24, 64):  # 1 rounds up to one window
        with torch.no_grad():
            out = dummy_video_encoder(inference_chunk_frames=chunk).encode_features(x, mask)
        torch.testing.assert_close(out.hidden, reference.hidden.detach(), atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(out.pooled, reference.pooled.detach(), atol=2e-5, rtol=1e-5)


def test_frame_chunks_do_not_change_features_and_forward_composes():
    frames = video(2, 9, h=40, w=56)  # not frame_size: resized inside
    a = dummy_video_encoder(frame_chunk_size=4)
    b = dummy_video_encoder(frame_chunk_size=64)
    with torch.no_grad():
        fa, fb = a.encode_frames(frames), b.encode_frames(frames)
        out = a(frames)
        composed = a.encode_features(fa)
    assert fa.shape == (2, 9, 16)
    torch.testing.assert_close(fa, fb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.hidden, composed.hidden)
    # float input in [0, 1] and numpy input give the same as uint8
    with torch.no_grad():
        ff = a.encode_frames(frames.float() / 255.0)
        fn = a.encode_frames(frames.numpy())
    torch.testing.assert_close(ff, fa, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fn, fa)


def test_long_input_runs():
    """10 minutes of 8 fps features (4800 frames) in one call, no grad."""
    enc = dummy_video_encoder()
    t = 10 * 60 * 8
    with torch.no_grad():
        out = enc.encode_features(features(1, t))
    assert out.hidden.shape == (1, t, 16) and torch.isfinite(out.hidden).all()
    assert out.hidden.std(dim=1).min() > 0  # frames are not collapsed onto one vector


# ----------------------------------------------------------------------------- known answers
def dense_reference(enc: TemporalVideoEncoder, x: torch.Tensor, mask: torch.Tensor):
    """The same model written with full [T, T] attention matrices (no blocks, no chunks, no online softmax)."""
    cfg = enc.config
    b, t, _ = x.shape
    w, heads = cfg.window, cfg.num_heads
    block = torch.arange(t) // w
    pos = torch.arange(t)
    seconds = pos.float() / cfg.fps
    h = enc.in_proj(enc.in_norm(x)) + enc.time_proj(sinusoidal_embedding(seconds * TIME_UNITS_PER_SECOND, cfg.hidden_dim))
    h = h * mask[..., None]
    mem = enc.memory[None].expand(b, -1, -1)
    allowed = (block[:, None] - block[None, :]).abs() <= 1  # [T, T]
    offset = pos[None, :] - pos[:, None]  # key - query

    def mha(attn, xq, xk, bias):  # bias [B or 1, H, Tq, Tk], -inf = blocked
        q, k, v = attn.split_heads(attn.q_proj(xq)), attn.split_heads(attn.k_proj(xk)), attn.split_heads(attn.v_proj(xk))
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias, dim=-1)
        o = p @ v
        return attn.out_proj(o.transpose(1, 2).reshape(xq.shape[0], xq.shape[1], -1))

    for layer in enc.layers:
        m = mem.shape[1]
        hn = layer.norm1(h)
        mn = layer.mem_norm1(mem)
        keys_valid = torch.cat([torch.ones(b, m, dtype=torch.bool), mask], 1)
        mem_bias = torch.zeros(b, 1, m, m + t).masked_fill(~keys_valid[:, None, None], -math.inf)
        mem = mem + mha(layer.mem_attn, mn, torch.cat([mn, hn], 1), mem_bias)
        mem = mem + layer.mem_ff(layer.mem_norm2(mem))
        rel = layer.rel_bias[:, (offset + 2 * w - 1).clamp(0, 4 * w - 2)]  # [H, T, T]
        frame_bias = rel.masked_fill(~allowed, -math.inf)[None].expand(b, heads, t, t)
        frame_bias = frame_bias.masked_fill(~mask[:, None, None, :], -math.inf)
        bias = torch.cat([frame_bias, torch.zeros(b, heads, t, m)], dim=-1)
        h = h + mha(layer.attn, hn, torch.cat([hn, layer.norm1(mem)], 1), bias)
        h = h + layer.ff(layer.norm2(h))
        h = h * mask[..., None]
    h = enc.out_norm(h) * mask[..., None]
    pooled = enc.pool_proj(h.sum(1) / mask.sum(1, keepdim=True))
    return h, pooled


def test_matches_dense_reference():
    enc = dummy_video_encoder(window=4, inference_chunk_frames=8)
    with torch.no_grad():
        for layer in enc.layers:  # the bias starts at zero; make it count
            layer.rel_bias.normal_(0, 1.0)
        x = features(2, 23)
        mask = torch.ones(2, 23, dtype=torch.bool)
        mask[0, 3:6] = False
        mask[1, 15:] = False
        out = enc.encode_features(x, mask)
        h, pooled = dense_reference(enc, x, mask)
    torch.testing.assert_close(out.hidden, h, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooled, pooled, atol=2e-5, rtol=1e-5)


def test_attention_is_local_without_memory_and_global_with_it():
    x = features(1, 48)
    y = x.clone()
    y[0, 21] = torch.randn(16)  # block 5 of 12 (window 4)
    local = dummy_video_encoder(window=4, num_layers=1, num_memory_tokens=0)
    with torch.no_grad():
        changed = (local.encode_features(x).hidden - local.encode_features(y).hidden).abs().amax(-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == list(range(16, 28))  # blocks 4, 5, 6 only
    glob = dummy_video_encoder(window=4, num_layers=1, num_memory_tokens=2)
    with torch.no_grad():
        changed = (glob.encode_features(x).hidden - glob.encode_features(y).hidden).abs().amax(-1)[0] > 1e-6
    assert changed.all()  # the memory tokens carry it everywhere


# ----------------------------------------------------------------------------- training
def test_gradients_reach_backbone_and_temporal_layers():
    enc = dummy_video_encoder().train()
    out = enc(video(2, 12))
    (out.hidden.pow(2).mean() + out.pooled.pow(2).mean()).backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # rel_bias starts at zero but still gets a gradient
    assert missing == [], missing


# ----------------------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path):
    enc = dummy_video_encoder()
    x, frames = features(2, 19), video(1, 10)
    enc.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = TemporalVideoEncoder.from_pretrained(tmp_path)
    public = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(enc.config)
    with torch.no_grad():
        a, b = enc.encode_features(x), loaded.encode_features(x)
        fa, fb = enc(frames), loaded(frames)
    assert torch.equal(a.hidden, b.hidden) and torch.equal(a.pooled, b.pooled)
    assert torch.equal(fa.hidden, fb.hidden)


def test_registry_rejects_unknown_keys():
    check_config_keys(TemporalVideoEncoder, {"fps": 8.0, "window": 8, "num_memory_tokens": 2}, "video encoder")
    with pytest.raises(ConfigError, match="windw"):
        check_config_keys(TemporalVideoEncoder, {"windw": 8}, "video encoder")


# ----------------------------------------------------------------------------- transformers backbones
def save_tiny_clip(folder, full_model=False):
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    if full_model:
        text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
                    bos_token_id=0, eos_token_id=1, pad_token_id=1)  # fmt: skip
        model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=8))
    else:
        model = CLIPVisionModel(CLIPVisionConfig(**vision))
    model.save_pretrained(folder)
    return model


def save_tiny_hiera(folder):
    from transformers import HieraConfig, HieraModel

    torch.manual_seed(0)
    config = HieraConfig(
        embed_dim=8, image_size=[32, 32], patch_size=[3, 3], patch_stride=[2, 2], patch_padding=[1, 1],
        depths=[1, 1], num_heads=[1, 2], masked_unit_size=[4, 4], query_stride=[2, 2], num_query_pool=1,
        masked_unit_attention=[True, False], stage_names=["stem", "stage1", "stage2"],
    )  # fmt: skip
    model = HieraModel(config)
    model.save_pretrained(folder)
    return model


CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.mark.parametrize("kind", ["clip", "hiera"])
def test_transformers_backbone_from_local_folder(tmp_path, kind):
    folder = tmp_path / kind
    model = save_tiny_clip(folder) if kind == "clip" else save_tiny_hiera(folder)
    mean, std = (CLIP_MEAN, CLIP_STD) if kind == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    enc = TemporalVideoEncoder(
        frame_size=32, backbone=kind, backbone_path=str(folder), hidden_dim=16, num_layers=1, num_heads=2, window=4,
        num_memory_tokens=1, frame_chunk_size=5,
    )  # fmt: skip
    assert enc.frame_feature_dim == 16
    assert not any(p.requires_grad for p in enc.frame_backbone.parameters())  # frozen by default
    frames = video(2, 6)
    with torch.no_grad():
        feats = enc.encode_frames(frames)
        pixels = (frames.reshape(12, 32, 32, 3).permute(0, 3, 1, 2).float() / 255 - mean) / std
        expected = model.eval()(pixel_values=pixels).pooler_output.reshape(2, 6, 16)
        out = enc(frames)
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=1e-5)  # the loaded weights, normalised input
    assert out.hidden.shape == (2, 6, 16)

    # the saved encoder reloads without the original backbone folder
    enc.save_pretrained(tmp_path / "encoder")
    shutil.rmtree(folder)
    loaded = TemporalVideoEncoder.from_pretrained(tmp_path / "encoder")
    with torch.no_grad():
        again = loaded(frames)
    assert torch.equal(again.hidden, out.hidden) and torch.equal(again.pooled, out.pooled)


def test_clip_from_full_checkpoint_and_other_frame_size(tmp_path):
    save_tiny_clip(tmp_path / "clip", full_model=True)
    enc = TemporalVideoEncoder(
        frame_size=48, backbone="clip", backbone_path=str(tmp_path / "clip"), hidden_dim=16, num_layers=1, num_heads=2,
    )  # fmt: skip
    with torch.no_grad():
        out = enc(video(1, 3, h=64, w=64))  # resized to 48, position embeddings interpolated from 32
    assert out.hidden.shape == (1, 3, 16) and torch.isfinite(out.hidden).all()


def test_backbone_config_errors(tmp_path):
    save_tiny_hiera(tmp_path / "hiera")
    with pytest.raises(ConfigError, match="image_size"):
        TemporalVideoEncoder(frame_size=48, backbone="hiera", backbone_path=str(tmp_path / "hiera"))
    with pytest.raises(ConfigError, match="feature_dim"):
        TemporalVideoEncoder(frame_size=32, backbone="hiera", backbone_path=str(tmp_path / "hiera"), feature_dim=99)
    with pytest.raises(ConfigError, match="backbone_path"):
        TemporalVideoEncoder(backbone="clip")
    with pytest.raises(ConfigError, match="cnn"):
        TemporalVideoEncoder(backbone="cnn", backbone_path=str(tmp_path))
    with pytest.raises(ConfigError, match="valid choices"):
        TemporalVideoEncoder(backbone="resnet")
    with pytest.raises(CheckpointError, match="config.json"):
        TemporalVideoEncoder(backbone="clip", backbone_path=str(tmp_path))  # a folder without a model
    with pytest.raises(CheckpointError):
        TemporalVideoEncoder(backbone="clip", backbone_path=str(tmp_path / "missing" / "dir"))
    # a Hub id goes to from_pretrained, which fails offline (HF_HUB_OFFLINE=1) with our error
    with pytest.raises(CheckpointError, match="Hub id"):
        TemporalVideoEncoder(backbone="clip", backbone_path="nobody-here/no-such-clip-model")
    with pytest.raises(ConfigError, match="divisible"):
        TemporalVideoEncoder(hidden_dim=30, num_heads=4)
    with pytest.raises(ConfigError, match="fps"):
        TemporalVideoEncoder(fps=0.0)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "frames, match",
    [
        (torch.zeros(4, 32, 32, 3, dtype=torch.uint8), "rank 4"),
        (torch.zeros(1, 4, 32, 32, 4, dtype=torch.uint8), "3 \\(RGB\\) channels"),
        (torch.zeros(1, 0, 32, 32, 3, dtype=torch.uint8), "empty"),
        (torch.full((1, 2, 32, 32, 3), 200.0), "\\[0, 1\\]"),
        (torch.zeros(1, 2, 32, 32, 3, dtype=torch.int32), "dtype"),
        ([[1, 2, 3]], "tensor or array"),
    ],
)
def test_bad_frames_raise_input_error(frames, match):
    enc = dummy_video_encoder()
    with pytest.raises(InputError, match=match):
        enc(frames)


@pytest.mark.parametrize(
    "feats, mask, match",
    [
        (torch.zeros(5, 16), None, "rank 2"),
        (torch.zeros(1, 5, 12), None, "F=12"),
        (torch.zeros(1, 0, 16), None, "empty"),
        (torch.zeros(1, 5, 16, dtype=torch.long), None, "floating"),
        (torch.zeros(2, 5, 16), torch.ones(2, 4, dtype=torch.bool), "mask must be"),
        (torch.zeros(2, 5, 16), torch.tensor([[True] * 5, [False] * 5]), "rows \\[1\\]"),
        (torch.full((1, 5, 16), float("nan")), None, "NaN or inf at batch item 0, frame 0"),
    ],
)
def test_bad_features_raise_input_error(feats, mask, match):
    enc = dummy_video_encoder()
    with pytest.raises(InputError, match=match):
        enc.encode_features(feats, mask)


def test_dummy_is_tiny_and_deterministic():
    a, b = dummy_video_encoder(), dummy_video_encoder()
    assert (a.config.fps, a.config.frame_size, a.config.hidden_dim, a.config.num_layers) == (8.0, 32, 16, 2)
    assert sum(p.numel() for p in a.parameters()) < 20_000
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_real_video_at_encoder_fps(media):
    """bikes.mp4 (640x272, 25 fps, 10 s) sampled at the encoder's 8 fps: 80 frames, a condition spanning 10 s."""
    import decord

    reader = decord.VideoReader(str(media("bikes.mp4")))
    enc = dummy_video_encoder()
    step = reader.get_avg_fps() / enc.config.fps
    index = np.arange(0, len(reader), step).astype(int).tolist()
    frames = torch.from_numpy(reader.get_batch(index).asnumpy())[None]  # [1, 80, 272, 640, 3], resized inside
    with torch.no_grad():
        out = enc(frames)
    assert out.hidden.shape == (1, 80, 16) and torch.isfinite(out.hidden).all()
    music = out.condition().resample(500, 50.0)  # onto a 50 Hz codec frame rate
    assert music.mask[0].sum().item() == int(79 / 8 * 50) + 1  # valid up to the last frame at 9.875 s
