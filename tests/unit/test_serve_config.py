"""Serve app arguments, config loading and request-image decoding (no Ray, no models)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from medray.config import ConfigError, from_dict
from medray.serving.deploy import endpoint_urls, load_serve_config
from medray.serving.images import ImageError, decode_base64, open_image
from serve_apps.app import app_builder, parse_args
from serve_apps.settings import AppArgs, AuthSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("path", ["serve_apps/configs/local.yaml", "serve_apps/configs/gpu.yaml"])
def test_serve_config_args_validate(path):
    config = load_serve_config(path)
    args = parse_args(config["applications"][0]["args"])
    assert isinstance(args, AppArgs)
    names = {d["name"] for d in config["applications"][0]["deployments"]}
    expected = {"Gateway", "Guard", "Reasoner", "Summariser", "Embedder", "Retriever", "Agent"}
    # The local profile sizes the MedQA replica too (2 cores); gpu.yaml is the RayService's
    # verbatim copy (cluster/kuberay), where MedQA takes Serve's defaults until it is added.
    assert names - {"MedQA"} == expected
    if "local" in path:
        assert "MedQA" in names


@pytest.mark.parametrize(
    "path",
    [
        "serve_apps/configs/local.yaml",
        "serve_apps/configs/gpu.yaml",
        "cluster/kuberay/rayservice.yaml",
    ],
)
def test_a_replica_that_autoscaling_stops_may_finish_its_longest_request(path):
    """Serve force-kills a stopping replica after ``graceful_shutdown_timeout_s`` (default
    20 s). The serve benchmark saw the Gateway scaled 2 -> 1 in a c=32 soak with 23 streams
    in flight: 16 analyze streams (40-80 s each) were cut (RemoteProtocolError). Every
    autoscaled deployment waits longer than the app's longest request deadline."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    config = data["spec"]["serveConfigV2"] if "spec" in data else data
    if isinstance(config, str):
        config = yaml.safe_load(config)
    app = config["applications"][0]
    longest = max(v for k, v in app["args"]["timeouts"].items() if k.endswith("_s"))
    autoscaled = [d for d in app["deployments"] if "autoscaling_config" in d]
    assert autoscaled
    for d in autoscaled:
        assert d.get("graceful_shutdown_timeout_s", 20) > longest, d["name"]


@pytest.mark.parametrize("path", ["serve_apps/configs/local.yaml", "serve_apps/configs/gpu.yaml"])
def test_the_web_ui_is_an_app_of_its_own_with_one_replica(path, tmp_path):
    """Gradio keeps a session's queue in one process: the UI must not ride on the
    autoscaled Gateway. Its app is renamed with the API's, listed, and checked."""
    from ray.serve import Application

    from serve_apps.ui.deployment import ui_builder

    cfg = load_serve_config(path, app_name="mine", port=9124)
    api, ui = cfg["applications"]
    assert (api["name"], ui["name"]) == ("mine", "mine-ui") and ui["route_prefix"] == "/ui"
    assert [(d["name"], d["num_replicas"]) for d in ui["deployments"]] == [("WebUI", 1)]
    assert isinstance(ui_builder(ui["args"]), Application)
    assert endpoint_urls(cfg)["web UI"] == "http://127.0.0.1:9124/ui/"
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(path).read_text().replace('api_url: ""', "api_url: ftp://x"))
    with pytest.raises(ConfigError, match="web UI app args: .*http"):
        load_serve_config(bad)


def test_gpu_profile_asks_for_gpus():
    # The local profile's fit: tests/unit/test_cluster_demands.py.
    gpu = load_serve_config("serve_apps/configs/gpu.yaml")["applications"][0]
    assert gpu["args"]["models"]["reasoner"] == "qwen2-vl-2b"
    reasoner = next(d for d in gpu["deployments"] if d["name"] == "Reasoner")
    assert reasoner["ray_actor_options"]["num_gpus"] == 1
    assert (
        reasoner["autoscaling_config"]["max_replicas"]
        > reasoner["autoscaling_config"]["min_replicas"]
    )
    assert parse_args(gpu["args"]).auth.required()  # 0.0.0.0 -> keys required


def test_overrides_are_validated_and_host_sets_auth():
    cfg = load_serve_config(
        "serve_apps/configs/local.yaml",
        ["generation.max_new_tokens=7", "adapters={a: /tmp/a}"],
        host="0.0.0.0",
        port=9123,
    )
    args = parse_args(cfg["applications"][0]["args"])
    assert args.generation.max_new_tokens == 7 and args.adapters == {"a": "/tmp/a"}
    assert cfg["http_options"] == {"host": "0.0.0.0", "port": 9123}
    assert args.auth.listen_host == "0.0.0.0" and args.auth.required()
    assert endpoint_urls(cfg)["analyze (SSE)"] == "http://127.0.0.1:9123/v1/analyze"
    with pytest.raises(ConfigError, match="generation.max_new_tokn"):
        load_serve_config("serve_apps/configs/local.yaml", ["generation.max_new_tokn=7"])
    with pytest.raises(ConfigError, match="max_new_tokens must lie"):
        load_serve_config("serve_apps/configs/local.yaml", ["generation.max_new_tokens=100000"])


def test_the_served_reasoner_generates_the_contracts_length_by_default():
    from medray.contracts import reasoner

    cfg = load_serve_config("serve_apps/configs/local.yaml")
    args = parse_args(cfg["applications"][0]["args"])
    assert args.generation.max_new_tokens == reasoner.MAX_NEW_TOKENS
    assert from_dict(AppArgs, {}).generation.max_new_tokens == reasoner.MAX_NEW_TOKENS


def test_adapter_name_cannot_shadow_the_base_model():
    with pytest.raises(ConfigError, match="clashes"):
        from_dict(AppArgs, {"adapters": {"medray-reasoner": "/x"}})


def test_a_request_without_a_model_gets_the_default_adapter():
    from serve_apps.http.deps import Context

    plain = from_dict(AppArgs, {"adapters": {"a": "/a", "b": "/b"}})
    chosen = from_dict(AppArgs, {"adapters": {"a": "/a", "b": "/b"}, "default_adapter": "b"})
    assert Context.pick_adapter(SimpleNamespace(args=plain), None) is None  # the base model
    ctx = SimpleNamespace(args=chosen)
    assert Context.pick_adapter(ctx, None) == "b"
    assert Context.pick_adapter(ctx, "medray-reasoner") is None  # the base, asked by name
    assert Context.pick_adapter(ctx, "a") == "a"
    with pytest.raises(ConfigError, match="default_adapter 'c' is not one of the adapters"):
        from_dict(AppArgs, {"adapters": {"a": "/a"}, "default_adapter": "c"})


@pytest.mark.parametrize(
    "auth,required",
    [
        (AuthSettings(), False),
        (AuthSettings(listen_host="localhost"), False),
        (AuthSettings(listen_host="::1"), False),
        (AuthSettings(listen_host="0.0.0.0"), True),
        (AuthSettings(listen_host="10.1.2.3"), True),
        (AuthSettings(listen_host="my-host"), True),
        (AuthSettings(require="always"), True),
        (AuthSettings(listen_host="0.0.0.0", require="never"), False),
    ],
)
def test_api_keys_are_required_beyond_loopback(auth, required):
    assert auth.required() is required


def test_keys_in_the_config_are_refused_naming_the_alternatives():
    # The Serve config and the deployments' args are shown by the Ray dashboard.
    with pytest.raises(ConfigError, match="Ray dashboard") as e:
        from_dict(AppArgs, {"auth": {"api_keys": ["k1"]}})
    assert "MEDRAY_API_KEYS" in str(e.value) and "auth.api_keys_file" in str(e.value)
    with pytest.raises(ConfigError, match="MY_KEYS"):
        parse_args({"auth": {"api_keys": ["k1"], "api_keys_env": "MY_KEYS"}})
    with pytest.raises(ConfigError, match="absolute path"):
        AuthSettings(api_keys_file="keys.txt")


def test_keys_come_from_the_environment_and_a_secret_file(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDRAY_API_KEYS", "k2, k3,,")
    assert AuthSettings().keys() == ("k2", "k3")
    keys = tmp_path / "keys"
    keys.write_text("# the hospital's clients\nk1\nk3, k4  # ward B\n\n")
    assert AuthSettings(api_keys_file=str(keys)).keys() == ("k2", "k3", "k1", "k4")
    monkeypatch.delenv("MEDRAY_API_KEYS")
    assert AuthSettings(api_keys_file=str(keys), api_keys_env="").keys() == ("k1", "k3", "k4")
    with pytest.raises(ConfigError, match="cannot be read.*every node"):
        AuthSettings(api_keys_file=str(tmp_path / "missing")).keys()


def test_app_builder_builds_the_graph_without_loading_anything():
    app = app_builder({"retrieval": {"enabled": False}})
    assert type(app).__name__ == "Application"
    with pytest.raises(ConfigError, match="unknown key 'modelz'"):
        app_builder({"modelz": {}})


# ------------------------------------------------------------------ request images


def _png(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "gray").save(buf, "PNG")
    return buf.getvalue()


def test_base64_and_data_urls_decode():
    data = _png()
    assert decode_base64(base64.b64encode(data).decode()) == data
    assert decode_base64("data:image/png;base64," + base64.b64encode(data).decode()) == data


@pytest.mark.parametrize(
    "value,message",
    [
        ("", "empty"),
        ("https://x.org/a.png", "not fetched"),
        ("data:image/png,rawtext", "only base64 data: URLs"),
        ("@@@", "not valid base64"),
    ],
)
def test_bad_transport_is_explained(value, message):
    with pytest.raises(ImageError, match=message):
        decode_base64(value)


def test_open_image_limits_and_downscales():
    img = open_image(_png((2000, 1000)), max_pixels=4_000_000, max_side=512)
    assert img.size == (512, 256) and img.mode == "RGB"
    with pytest.raises(ImageError, match="over the limit") as e:
        open_image(_png((2000, 1000)), max_pixels=1_000_000)
    assert e.value.code == "image_too_large"
    data = _png((64, 64))
    with pytest.raises(ImageError, match="truncated or corrupt") as e:
        open_image(data[: len(data) // 2], max_pixels=10**6)
    assert e.value.code == "invalid_image"
    with pytest.raises(ImageError, match="not an image"):
        open_image(b"plain text", max_pixels=10**6)
