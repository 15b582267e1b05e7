"""Per-frame image backbones for the temporal video encoder.

A backbone maps a batch of images ``[N, 3, H, W]`` (float, values in ``[0, 1]``) to one
feature vector per image ``[N, F]``; it normalises its own input. Three kinds:

- ``"cnn"``: :class:`SmallFrameCNN`, a small convolutional net trained from scratch (works offline).
- ``"clip"``: transformers ``CLIPVisionModel``; the feature is ``pooler_output`` (the
  post-layernorm CLS token, ``[N, hidden_size]``).
- ``"hiera"``: transformers ``HieraModel``; the feature is ``pooler_output`` (mean of the last
  stage, layer-normed, ``[N, num_features]``).

The transformers backbones load from a local folder (``save_pretrained`` output; a full
``CLIPModel`` checkpoint also works, only its vision tower is kept) or, where the network is
allowed, a Hub id. ``pretrained=False`` builds the architecture from the folder's
``config.json`` alone (random weights): the temporal encoder uses it on reload, since its own
checkpoint holds the backbone's weights.
"""

import json
import os
import re
from pathlib import Path
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError

BACKBONES = ("cnn", "clip", "hiera")

# Normalisation constants the checkpoints were trained with (used when the folder has no
# preprocessor_config.json saying otherwise).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class FrameBackbone(nn.Module):
    """Interface: ``forward(images [N, 3, H, W] in [0, 1]) -> features [N, out_dim]``."""

    out_dim: int


class SmallFrameCNN(FrameBackbone):
    """A small CNN trained from scratch: ``num_stages`` stride-2 stages, then global average pooling.

    Stage ``i`` has ``channels * 2**i`` channels (two 3x3 convs, GroupNorm, GELU); a linear
    layer maps the pooled vector to ``out_dim``. Input ``[N, 3, H, W]`` in ``[0, 1]``, any size.
    """

    def __init__(self, out_dim: int = 128, channels: int = 32, num_stages: int = 4):
        super().__init__()
        if out_dim < 1 or channels < 1 or num_stages < 1:
            raise ConfigError(
                f"SmallFrameCNN: out_dim, channels and num_stages must be >= 1, got {out_dim}, {channels}, {num_stages}"
            )
        self.out_dim = out_dim
        layers = []
        c_in = 3
        for i in range(num_stages):
            c_out = channels * 2**i
            groups = _num_groups(c_out)
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                nn.GroupNorm(groups, c_out),
                nn.GELU(),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.GroupNorm(groups, c_out),
                nn.GELU(),
            ]
            c_in = c_out
        self.stages = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, out_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stages(images.to(self.proj.weight.dtype) * 2.0 - 1.0)  # [0, 1] -> [-1, 1]
        return self.proj(x.mean(dim=(2, 3)))


def _num_groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class TransformersFrameBackbone(FrameBackbone):
    """A transformers vision model (``CLIPVisionModel`` or ``HieraModel``) as a frame backbone.

    Args:
        kind: ``"clip"`` or ``"hiera"``.
        path: a local folder or a Hub id.
        image_size: the frame size the encoder will feed (square).
        pretrained: load weights from ``path`` (True) or build from its config only (False).
    """

    def __init__(self, kind: str, path: str, image_size: int, pretrained: bool = True):
        super().__init__()
        model_cls, config_cls = _transformers_classes(kind)
        self.kind = kind
        local = _resolve_path(path, kind)
        source = str(local) if local is not None else path
        try:
            if pretrained:
                self.model = model_cls.from_pretrained(source, local_files_only=local is not None)
            else:
                self.model = model_cls(config_cls.from_pretrained(source, local_files_only=local is not None))
        except (OSError, ValueError, KeyError) as err:
            where = f"local folder {local}" if local is not None else f"Hub id {path!r} (is the network or cache available?)"
            raise CheckpointError(f"cannot load the {kind} frame backbone from {where}: {err}") from err
        config = self.model.config
        native = _as_size(config.image_size)
        if kind == "hiera" and native != (image_size, image_size):
            # Hiera's unroll/mask-unit schedule is fixed by the configured image size.
            raise ConfigError(
                f"frame_size {image_size} does not match the Hiera backbone's image_size {config.image_size} ({source})"
            )
        # CLIP interpolates its position embeddings for other sizes.
        self.interpolate = native != (image_size, image_size)
        self.out_dim = int(config.hidden_size if kind == "clip" else self.model.num_features)
        mean, std = _normalisation(local, kind)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (images - self.mean) / self.std
        pixels = pixels.to(next(self.model.parameters()).dtype)
        out = self.model(pixel_values=pixels, interpolate_pos_encoding=self.interpolate)
        return out.pooler_output

    def save_config(self, folder: os.PathLike) -> None:
        """Write the backbone's ``config.json`` (and normalisation) so it can be rebuilt without ``path``."""
        folder = Path(folder)
        self.model.config.save_pretrained(folder)
        stats = {"image_mean": self.mean.flatten().tolist(), "image_std": self.std.flatten().tolist()}
        (folder / "preprocessor_config.json").write_text(json.dumps(stats, indent=2))


def _transformers_classes(kind: str):
    from transformers import CLIPVisionConfig, CLIPVisionModel, HieraConfig, HieraModel

    return {"clip": (CLIPVisionModel, CLIPVisionConfig), "hiera": (HieraModel, HieraConfig)}[kind]


def _resolve_path(path: str, kind: str) -> Optional[Path]:
    """A local folder as a Path, None for a Hub id; a path that is neither raises CheckpointError."""
    local = Path(path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise CheckpointError(f"{kind} backbone folder {local} has no config.json")
        return local
    if _HUB_ID.match(path) and not path.startswith(".") and not local.exists():
        return None
    raise CheckpointError(f"{kind} backbone_path {path!r} is not a model folder (nor a Hub id)")


def _as_size(size) -> Tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def _normalisation(folder: Optional[Path], kind: str):
    """Mean and std from the folder's ``preprocessor_config.json`` if present, else the backbone's defaults."""
    default = (CLIP_MEAN, CLIP_STD) if kind == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    if folder is None or not (folder / "preprocessor_config.json").is_file():
        return default
    try:
        stats = json.loads((folder / "preprocessor_config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"unreadable {folder / 'preprocessor_config.json'}: {err}") from err
    mean, std = stats.get("image_mean", default[0]), stats.get("image_std", default[1])
    if len(mean) != 3 or len(std) != 3:
        raise CheckpointError(f"{folder / 'preprocessor_config.json'}: image_mean/image_std must have 3 values")
    return tuple(mean), tuple(std)


def build_frame_backbone(
    kind: str,
    image_size: int,
    path: Optional[str] = None,
    pretrained: bool = True,
    feature_dim: Optional[int] = None,
    cnn_channels: int = 32,
    cnn_stages: int = 4,
) -> FrameBackbone:
    """The backbone named ``kind`` (one of :data:`BACKBONES`).

    ``feature_dim`` sets the CNN's output width (default 128); for a transformers backbone it is
    fixed by the checkpoint, so a different value raises ConfigError.
    """
    if kind not in BACKBONES:
        raise ConfigError(f"unknown backbone {kind!r}; valid choices: {', '.join(BACKBONES)}")
    if kind == "cnn":
        if path is not None:
            raise ConfigError("backbone 'cnn' is trained from scratch and takes no backbone_path")
        return SmallFrameCNN(out_dim=feature_dim or 128, channels=cnn_channels, num_stages=cnn_stages)
    if not path:
        raise ConfigError(f"backbone {kind!r} needs backbone_path (a local model folder or a Hub id)")
    backbone = TransformersFrameBackbone(kind, path, image_size, pretrained=pretrained)
    if feature_dim is not None and feature_dim != backbone.out_dim:
        raise ConfigError(f"feature_dim {feature_dim} does not match the {kind} backbone's output width {backbone.out_dim}")
    return backbone


def resize_frames(images: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, 3, H, W]`` -> ``[N, 3, size, size]`` (bilinear, antialiased when shrinking); no-op at the right size."""
    if images.shape[-2:] == (size, size):
        return images
    shrink = images.shape[-2] > size or images.shape[-1] > size
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
