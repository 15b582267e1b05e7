"""Recipe validation: misspelt keys and contradictions are errors that name them."""

import pytest

from vmas_diffusion.errors import ConfigError
from vmas_diffusion.models.registry import build, check_config_keys
from vmas_diffusion.recipes import derive_shared, load_recipe

BASE = {
    "codec": {"type": "encodec_hf", "config": {}},
    "video_encoder": {"type": "temporal", "config": {}},
    "generator": {"type": "ar", "config": {}},
}


def test_valid_recipe_gets_schema_defaults():
    cfg = load_recipe(BASE)
    assert cfg.scheduler.type == "dpmsolver++"
    assert cfg.contrastive.embed_dim == 128
    assert cfg.generator.type == "ar"


def test_misspelt_top_level_key_is_named():
    with pytest.raises(ConfigError, match="genrator"):
        load_recipe({**BASE, "genrator": {"type": "ar"}})


def test_misspelt_nested_key_is_named():
    with pytest.raises(ConfigError, match="embed_dimm"):
        load_recipe({**BASE, "contrastive": {"embed_dimm": 3}})


def test_missing_component_is_an_error():
    recipe = dict(BASE)
    del recipe["codec"]
    with pytest.raises(ConfigError, match="codec"):
        load_recipe(recipe)


def test_override_with_wrong_key_is_named():
    with pytest.raises(ConfigError, match="typo"):
        load_recipe(BASE, ["scheduler.typo=ddim"])


def test_overrides_apply():
    assert load_recipe(BASE, ["scheduler.type=ddim"]).scheduler.type == "ddim"


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_yaml_syntax_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("codec: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_recipe(path)


class _Component:
    def __init__(self, width: int = 4, depth: int = 1):
        self.width, self.depth = width, depth


def test_registry_names_valid_choices_and_keys():
    registry = {"comp": f"{__name__}:_Component"}
    assert build("thing", registry, {"type": "comp", "config": {"width": 8}}).width == 8
    with pytest.raises(ConfigError, match="valid choices: comp"):
        build("thing", registry, {"type": "other"})
    with pytest.raises(ConfigError, match="widht.*valid keys: depth, width"):
        check_config_keys(_Component, {"widht": 3}, "thing")


def test_derive_shared_fills_and_rejects_contradictions():
    assert derive_shared({"a": 1}, {"b": 2}, "gen") == {"a": 1, "b": 2}
    assert derive_shared({"b": 2}, {"b": 2}, "gen") == {"b": 2}
    with pytest.raises(ConfigError, match="b=3 contradicts"):
        derive_shared({"b": 3}, {"b": 2}, "gen")


def test_base_recipe_chain(tmp_path):
    (tmp_path / "parent.yaml").write_text(
        "codec: {type: encodec_hf, config: {num_filters: 8}}\n"
        "video_encoder: {type: temporal}\ngenerator: {type: ar, config: {hidden_size: 32, num_layers: 2}}\n"
    )
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nname: child\ngenerator: {config: {num_layers: 1}}\n")
    cfg = load_recipe(tmp_path / "child.yaml")
    assert cfg.name == "child" and cfg.codec.config.num_filters == 8
    assert dict(cfg.generator.config) == {"hidden_size": 32, "num_layers": 1}  # deep merge over the base
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_recipe(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml does not exist"):
        load_recipe(tmp_path / "orphan.yaml")
