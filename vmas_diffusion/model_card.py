"""Model cards: the ``README.md`` that ``VideoToMusicPipeline.save_pretrained`` writes next to the weights.

A card is YAML front matter in the Hugging Face layout (``library_name``, ``license``,
``pipeline_tag``, ``tags``; ``datasets`` and ``base_model`` when given) and a Markdown body: what the
model is (backend, sizes, rates, read from the components), what it was trained on, its measured
alignment, its limitations and its licence. The caller's facts come as a dict, which the front
matter also keeps under ``model_card`` so that :func:`read_model_card` gives it back unchanged and a
reloaded pipeline saves the same card again.

The dict's keys, all optional: ``name``, ``summary``, ``training_data``, ``alignment``,
``limitations``, ``license`` (an SPDX id or a Hub licence name; ``"unknown"`` when absent),
``license_note`` (the licences of the training data, say), ``tags``, ``datasets``, ``base_model``,
``pipeline_tag``. Text values are Markdown.
"""

from pathlib import Path
from typing import Optional, Union

import yaml

from .errors import CheckpointError, InputError

CARD_NAME = "README.md"
#: the Hub has no video-to-music task; any-to-any is the nearest (the tags say what it is)
DEFAULT_PIPELINE_TAG = "any-to-any"
TEXT_KEYS = ("name", "summary", "training_data", "alignment", "limitations", "license", "license_note", "base_model", "pipeline_tag")
LIST_KEYS = ("tags", "datasets")
SECTIONS = (("training_data", "Training data"), ("alignment", "Measured alignment"), ("limitations", "Limitations"))


class _CardDumper(yaml.SafeDumper):
    """YAML with multi-line text as literal blocks (``|``), so the front matter reads as the body does."""


def _text(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_CardDumper.add_representer(str, _text)


def check_model_card(card) -> dict:
    """``card`` as a plain dict of known keys (a copy); anything else raises InputError."""
    if card is None:
        return {}
    if not isinstance(card, dict):
        raise InputError(f"model_card must be a dict, got {type(card).__name__}")
    unknown = sorted(set(card) - set(TEXT_KEYS) - set(LIST_KEYS))
    if unknown:
        raise InputError(f"model_card has unknown keys {unknown}; known: {sorted(TEXT_KEYS + LIST_KEYS)}")
    for key, value in card.items():
        if key in TEXT_KEYS and not isinstance(value, str):
            raise InputError(f"model_card[{key!r}] must be text, got {type(value).__name__}")
        if key in LIST_KEYS and not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
            raise InputError(f"model_card[{key!r}] must be a list of strings, got {value!r}")
    # trailing blanks would force YAML's quoted style; the text means the same without them
    return {key: list(value) if key in LIST_KEYS else "\n".join(line.rstrip() for line in value.strip().splitlines())
            for key, value in card.items()}


def _parameters(module) -> str:
    count = sum(p.numel() for p in module.parameters())
    return f"{count / 1e6:.2f} M parameters" if count >= 1e5 else f"{count} parameters"


def _components(pipe) -> list:
    """One line per component, from the components themselves (so the card cannot drift from them)."""
    gen, codec, enc = pipe.generator, pipe.codec, pipe.video_encoder
    lines = [
        f"- generator: `{type(gen).__name__}` (`{pipe.backend}` backend, {_parameters(gen)}, "
        f"{gen.config.hidden_size} wide)",
        f"- codec: `{type(codec).__name__}` ({int(codec.sample_rate)} Hz, {int(codec.channels)} channel(s), "
        f"{float(codec.frame_rate):g} frames/s)",
        f"- video encoder: `{type(enc).__name__}` ({float(enc.config.fps):g} fps, {int(enc.config.frame_size)} px frames, "
        f"{_parameters(enc)})",
    ]
    if pipe.scheduler is not None:
        lines.append(f"- scheduler: `{type(pipe.scheduler).__name__}`, {gen.default_inference_steps} steps by default")
    if pipe.contrastive_head is not None:
        lines.append(f"- contrastive head: `{type(pipe.contrastive_head).__name__}` (video-music retrieval embeddings)")
    return lines


def render_model_card(pipe, card: Optional[dict] = None) -> str:
    """The README.md text for ``pipe`` with the facts of ``card``."""
    card = check_model_card(card)
    tags = ["vmas-diffusion", "video-to-music", "music-generation", "diffusers", f"backend-{pipe.backend}"]
    tags += [tag for tag in card.get("tags", []) if tag not in tags]
    meta = {
        "library_name": "vmas-diffusion",
        "license": card.get("license", "unknown"),
        "pipeline_tag": card.get("pipeline_tag", DEFAULT_PIPELINE_TAG),
        "tags": tags,
    }
    for key in ("datasets", "base_model"):
        if key in card:
            meta[key] = card[key]
    meta["model_card"] = card
    name = card.get("name", f"VideoToMusicPipeline ({pipe.backend})")
    body = [f"# {name}", ""]
    if card.get("summary"):
        body += [card["summary"].strip(), ""]
    body += ["## Use", "", "```python", "import torch", "from vmas_diffusion import VideoToMusicPipeline", "",
             'pipe = VideoToMusicPipeline.from_pretrained("path/to/this/folder")',
             'out = pipe("video.mp4", generator=torch.Generator().manual_seed(0))',
             "music, sample_rate = out.audios[0], out.sample_rate", "```", "",
             "## Model", ""] + _components(pipe) + [""]
    for key, title in SECTIONS:
        body += [f"## {title}", "", card[key].strip() if card.get(key) else "Not stated.", ""]
    body += ["## Licence", "", f"Weights: `{meta['license']}`."]
    if card.get("license_note"):
        body += ["", card["license_note"].strip()]
    front = yaml.dump(meta, Dumper=_CardDumper, sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{front}---\n\n" + "\n".join(body).rstrip() + "\n"


def write_model_card(folder: Union[str, Path], pipe, card: Optional[dict] = None) -> Path:
    """Write ``folder/README.md`` for ``pipe`` (see :func:`render_model_card`)."""
    path = Path(folder) / CARD_NAME
    path.write_text(render_model_card(pipe, card), encoding="utf-8")
    return path


def read_model_card(folder: Union[str, Path]) -> Optional[dict]:
    """The facts dict a saved card was written from (None when the folder has no README.md, or a
    README.md that is not a vmas-diffusion card)."""
    path = Path(folder) / CARD_NAME
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        return None
    try:
        meta = yaml.safe_load(text[4 : text.index("\n---\n", 4)])
    except yaml.YAMLError as err:
        raise CheckpointError(f"{path}: the model card's front matter is not YAML: {err}") from err
    if not isinstance(meta, dict) or meta.get("library_name") != "vmas-diffusion":
        return None
    try:
        return check_model_card(meta.get("model_card") or {})
    except InputError as err:
        raise CheckpointError(f"{path}: {err}") from err
