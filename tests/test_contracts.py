"""Contract tests: what every generator and every codec promises, run over each registered one.

A backend gets these for free: subclass :class:`GeneratorContract` (or :class:`CodecContract`) with a
``make`` that builds a tiny instance, and the registry-coverage tests below fail until every
registered name has one.
"""

import importlib.util

import dummies
import pytest
import torch
from toy_generator import ToyFrameGenerator

from vmas_diffusion.conditions import BEAT, VIDEO, Condition
from vmas_diffusion.errors import InputError
from vmas_diffusion.models.codecs import CODECS, build_codec
from vmas_diffusion.models.generators import GENERATORS

NUM_FRAMES = 30  # 0.6 s at the dummies' 50 Hz


def conditions(batch: int, seed: int = 0, video_dim: int = 16) -> dict:
    """A video condition (1 s at 8 Hz) and a beat envelope, random but seeded."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 8, dtype=torch.bool)
    return {
        VIDEO: Condition(torch.randn(batch, 8, video_dim, generator=g), mask, 8.0),
        BEAT: Condition(torch.rand(batch, 8, 1, generator=g), mask, 8.0),
    }


def pick(conds: dict, index: int) -> dict:
    return {name: Condition(c.tensor[index : index + 1], c.mask[index : index + 1], c.frame_rate) for name, c in conds.items()}


class GeneratorContract:
    """What a :class:`~vmas_diffusion.models.generators.MusicGenerator` promises. ``make()``: a tiny
    eval-mode instance fitting :func:`dummies.dummy_codec` (50 Hz, 4 x 64 codes, 16-d latents, video width 16)."""

    name: str = ""

    def make(self):
        raise NotImplementedError

    def sample(self, gen, conds, generator, num_frames=NUM_FRAMES):
        fast = {"num_inference_steps": 2} if gen.needs_scheduler else {}
        return gen.generate(conds, num_frames, guidance_scale=2.0, generator=generator, **fast)

    def test_shapes_and_training_outputs(self):
        gen = self.make()
        target = self.sample(gen, conditions(2), torch.Generator().manual_seed(0))
        assert target.shape[0] == 2 and target.shape[-1] == NUM_FRAMES and gen.music_key in ("codes", "latents")
        out = gen.forward_train({gen.music_key: target, "conditions": conditions(2)})
        assert out.losses and all(v.dim() == 0 and torch.isfinite(v) for v in out.losses.values())
        assert out.music_embedding.shape[0] == 2 and out.onset_logits.shape == (2, NUM_FRAMES)
        assert gen.embed_music(target).shape == out.music_embedding.shape

    def test_frame_weights_scale_each_frames_loss(self):
        gen = self.make()
        target = self.sample(gen, conditions(2), torch.Generator().manual_seed(0))

        def loss(**extra):
            batch = {gen.music_key: target, "conditions": conditions(2), "generator": torch.Generator().manual_seed(5)}
            return sum(gen.forward_train({**batch, **extra}).losses.values())

        plain = loss()
        torch.testing.assert_close(loss(frame_weight=torch.full((2, NUM_FRAMES), 2.0)), 2 * plain)
        uneven = torch.ones(2, NUM_FRAMES)
        uneven[:, : NUM_FRAMES // 2] = 5.0
        assert not torch.allclose(loss(frame_weight=uneven), 3 * plain)  # not a plain rescaling: per frame
        with pytest.raises(InputError, match="frame_weight"):
            loss(frame_weight=torch.ones(2, NUM_FRAMES + 1))

    def test_seeded_determinism(self):
        gen = self.make()
        a = self.sample(gen, conditions(1), torch.Generator().manual_seed(3))
        b = self.sample(gen, conditions(1), torch.Generator().manual_seed(3))
        c = self.sample(gen, conditions(1), torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_batch_equals_singles(self):
        gen = self.make()
        conds = conditions(2, seed=1)
        batch = self.sample(gen, conds, [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)])
        for i in range(2):
            single = self.sample(gen, pick(conds, i), [torch.Generator().manual_seed(i)])
            torch.testing.assert_close(batch[i : i + 1], single, atol=1e-5, rtol=1e-5)

    def test_save_load_round_trip(self, tmp_path):
        gen = self.make()
        gen.save_pretrained(tmp_path)
        again = type(gen).from_pretrained(tmp_path).eval()
        public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
        assert public(again.config) == public(gen.config)
        assert all(torch.equal(v, again.state_dict()[k]) for k, v in gen.state_dict().items())
        seed = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        assert torch.equal(self.sample(gen, conditions(1), seed[0]), self.sample(again, conditions(1), seed[1]))

    def test_generate_audio_decodes_through_the_codec(self):
        gen, codec = self.make(), dummies.dummy_codec()
        fast = {"num_inference_steps": 2} if gen.needs_scheduler else {}
        wav = gen.generate_audio(codec, conditions(1), NUM_FRAMES, generator=torch.Generator().manual_seed(0), **fast)
        hop = codec.sample_rate // int(codec.frame_rate)
        assert wav.shape == (1, codec.channels, NUM_FRAMES * hop) and torch.isfinite(wav).all()
        assert gen.codec_config(codec)["frame_rate"] == codec.frame_rate

    def test_bad_inputs_raise_input_error(self):
        gen = self.make()
        with pytest.raises(InputError):
            self.sample(gen, conditions(1), None, num_frames=0)
        with pytest.raises(InputError, match="unknown condition"):
            self.sample(gen, {"vidoe": conditions(1)[VIDEO]}, None)
        with pytest.raises(InputError, match="width"):
            self.sample(gen, conditions(1, video_dim=5), None)
        with pytest.raises(InputError):
            gen.forward_train({"conditions": conditions(1)})  # no music


class TestARContract(GeneratorContract):
    name = "ar"

    def make(self):
        return dummies.dummy_ar_generator()


class TestLDMContract(GeneratorContract):
    name = "ldm"

    def make(self):
        return dummies.dummy_ldm_generator()


class TestToyContract(GeneratorContract):
    """The third backend of tests/toy_generator.py: a new generator gets the whole contract by subclassing."""

    name = "toy"

    @dummies.seeded
    def make(self):
        return ToyFrameGenerator(latent_dim=16, video_dim=16, frame_rate=50.0).eval()


def test_every_registered_generator_has_a_contract():
    covered = {cls.name for cls in GeneratorContract.__subclasses__()}
    assert set(GENERATORS) <= covered, f"no contract test for {sorted(set(GENERATORS) - covered)}"


# ---------------------------------------------------------------------------------------------- codecs


class CodecContract:
    """What a :class:`~vmas_diffusion.models.codecs.MusicCodec` promises. ``make()``: a tiny eval-mode instance."""

    name: str = ""

    def make(self):
        raise NotImplementedError

    def wav(self, codec, batch: int = 2, seconds: float = 0.4, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        num = int(seconds * codec.sample_rate)
        t = torch.arange(num) / codec.sample_rate
        tones = torch.stack([torch.sin(2 * torch.pi * (220 + 110 * i) * t) for i in range(batch)])
        noise = 0.05 * torch.randn(batch, codec.channels, num, generator=g)
        return (0.5 * tones[:, None] + noise).clamp(-1, 1)

    def forms(self, codec):
        """``[(encode, decode)]`` for each side the codec offers."""
        out = []
        if codec.is_discrete:
            out.append((codec.tokenize, codec.decode_tokens))
        if codec.is_continuous:
            out.append((codec.encode, codec.decode))
        assert out, "a codec offers tokens, latents or both"
        return out

    def test_shapes(self):
        codec = self.make()
        wav = self.wav(codec)
        frames = codec.num_frames(wav.shape[-1])
        hop = codec.sample_rate / codec.frame_rate
        if codec.is_discrete:
            codes = codec.tokenize(wav)
            assert codes.shape == (2, codec.num_codebooks, frames) and codes.dtype == torch.long
            assert 0 <= int(codes.min()) and int(codes.max()) < codec.cardinality
        if codec.is_continuous:
            assert codec.encode(wav).shape == (2, codec.latent_dim, frames)
        for encode, decode in self.forms(codec):
            audio = decode(encode(wav))
            assert audio.shape == (2, codec.channels, round(frames * hop)) and torch.isfinite(audio).all()

    def test_batch_equals_singles_and_determinism(self):
        codec = self.make()
        wav = self.wav(codec)
        for encode, decode in self.forms(codec):
            whole = encode(wav)
            assert torch.equal(whole, encode(wav))
            for i in range(2):
                torch.testing.assert_close(encode(wav[i : i + 1]), whole[i : i + 1], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(decode(whole[:1]), decode(whole)[:1], atol=1e-4, rtol=1e-4)

    def test_save_load_round_trip(self, tmp_path):
        codec = self.make()
        codec.save_pretrained(tmp_path)
        again = type(codec).from_pretrained(tmp_path).eval()
        wav = self.wav(codec, batch=1)
        for (encode, _), (encode_again, _) in zip(self.forms(codec), self.forms(again)):
            torch.testing.assert_close(encode(wav), encode_again(wav))

    def test_bad_inputs_raise_input_error(self):
        codec = self.make()
        wav = self.wav(codec, batch=1)
        for encode, _ in self.forms(codec):
            with pytest.raises(InputError):
                encode(wav[0])  # [C, S]: no batch axis
            with pytest.raises(InputError):
                encode(wav.repeat(1, codec.channels + 1, 1))  # wrong channel count
            with pytest.raises(InputError):
                encode(wav[..., :0])  # empty


class TestEncodecHFContract(CodecContract):
    name = "encodec_hf"

    def make(self):
        return dummies.dummy_codec()


class TestMelGriffinLimContract(CodecContract):
    name = "mel_griffinlim"

    def make(self):
        return dummies.dummy_mel_codec()


class TestEncodecPackageContract(CodecContract):
    name = "encodec"

    def make(self):
        if importlib.util.find_spec("encodec") is None:
            pytest.skip("the encodec package is not installed: pip install --no-deps encodec==0.1.1 einops")
        torch.manual_seed(0)
        return build_codec({"type": "encodec", "config": {"sample_rate": 24000, "bandwidth": 1.5}}).eval()


def test_every_registered_codec_has_a_contract():
    covered = {cls.name for cls in CodecContract.__subclasses__()}
    assert set(CODECS) <= covered, f"no contract test for {sorted(set(CODECS) - covered)}"
