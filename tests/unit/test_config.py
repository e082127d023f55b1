"""Typed configs: YAML + overrides, strict keys and types, clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from medray.config import ConfigError, load_config, parse_args, parse_overrides, replace, to_dict

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    steps: int = 10
    schedule: Literal["linear", "cosine"] = "linear"


@dataclass(frozen=True)
class Job:
    name: str = "job"
    optim: Optim = field(default_factory=Optim)
    modules: tuple[str, ...] = ("q_proj",)
    limit: int | None = None
    use_gpu: bool = False


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_yaml_and_overrides_build_the_frozen_dataclass(tmp_path):
    path = write(tmp_path, "name: a\noptim:\n  lr: 5e-6\n  steps: 3\nmodules: [q, v]\n")
    cfg = load_config(Job, path, ["optim.steps=7", "use_gpu=true", "limit=4"])
    assert cfg == Job(
        name="a", optim=Optim(lr=5e-6, steps=7), modules=("q", "v"), limit=4, use_gpu=True
    )
    with pytest.raises(AttributeError):
        cfg.name = "b"  # frozen


def test_unknown_key_names_the_key_and_the_valid_keys(tmp_path):
    path = write(tmp_path, "optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(Job, path)
    msg = str(e.value)
    assert "optim.lrr" in msg and "did you mean 'lr'" in msg
    assert "lr, schedule, steps" in msg


def test_unknown_override_is_an_error_too():
    with pytest.raises(
        ConfigError, match="unknown key 'epochs'.*valid keys: limit, modules, name, optim, use_gpu"
    ):
        load_config(Job, None, ["epochs=2"])


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optim.steps=many", "optim.steps: expected an integer, got 'many'"),
        ("optim.schedule=step", "optim.schedule: must be one of ['linear', 'cosine']"),
        ("use_gpu=maybe", "use_gpu: expected true or false"),
        ("name=3", "name: expected a string, got 3"),
        ("modules=q_proj", "modules: expected a list"),
        ("optim=3", "optim: expected a mapping"),
    ],
)
def test_wrong_types_are_reported_with_key_and_value(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(Job, None, [override])
    assert needle in str(e.value)


def test_missing_file_and_non_mapping_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Job, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Job, write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Job, write(tmp_path, "a: [1, 2\n"))


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="must look like key=value"):
        parse_overrides(["optim.steps"])
    assert parse_overrides(["a.b=1", "a.c=[1, 2]", "d="]) == {"a": {"b": 1, "c": [1, 2]}, "d": ""}


def test_round_trip_and_replace():
    cfg = Job(optim=Optim(steps=3))
    assert to_dict(cfg)["modules"] == ["q_proj"]
    assert replace(cfg, ["optim.lr=0.5"]).optim == Optim(lr=0.5, steps=3)


def test_parse_args_exits_2_with_a_message(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(Job, ["bogus=1"], prog="job")
    assert e.value.code == 2
    assert "unknown key 'bogus'" in capsys.readouterr().err


def test_errors_blame_the_file_or_the_command_line_override(tmp_path):
    good = write(tmp_path, "optim:\n  steps: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(Job, good, ["name=x", "optim.stpes=4"])
    assert str(e.value).startswith("command-line override 'optim.stpes=4': unknown key")
    assert "did you mean 'steps'" in str(e.value) and str(good) not in str(e.value)
    bad = write(tmp_path, "optim:\n  stpes: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(Job, bad, ["name=x"])
    assert str(e.value).startswith(f"{bad}: unknown key 'optim.stpes'")
    assert "command-line" not in str(e.value)
