"""Who needs an API key (the declared host and the address a request came in on), which
Host headers a loopback app trusts, and the Serve config's bound host (no Ray)."""

from __future__ import annotations

import pytest

from medray.config import ConfigError
from medray.serving.deploy import load_serve_config
from medray.serving.settings import AuthSettings, is_loopback, loopback_host_header, parse_args

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "host,loopback",
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("LocalHost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.7", False),
        ("testserver", False),  # a name may resolve anywhere
        ("", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    "value", ["localhost", "localhost:8000", "127.0.0.1", "127.0.0.1:80", "[::1]", "[::1]:8000"]
)
def test_loopback_host_headers_are_trusted(value):
    assert loopback_host_header(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "evil.example",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "127.0.0.2",  # loopback too, but no browser page names it by accident: refused
        "::1",  # an IPv6 Host needs brackets
        "[::1",
        "[::1]x",
        "[::1]:",
        "localhost:",
        "localhost:80x",
        "localhost:80@evil.example",
        "0.0.0.0:8000",
    ],
)
def test_other_host_headers_are_not(value):
    assert not loopback_host_header(value)


@pytest.mark.parametrize(
    "auth,local,required",
    [
        (AuthSettings(), "127.0.0.1", False),
        (AuthSettings(), "::1", False),
        (AuthSettings(), "192.0.2.7", True),  # declared loopback, bound wider
        (AuthSettings(), None, True),  # unknown address: a key
        (AuthSettings(), "testserver", True),
        (AuthSettings(listen_host="0.0.0.0"), "127.0.0.1", True),
        (AuthSettings(require="always"), "127.0.0.1", True),
        (AuthSettings(listen_host="0.0.0.0", require="never"), "192.0.2.7", False),
    ],
)
def test_keys_are_required_by_the_address_a_request_came_in_on(auth, local, required):
    assert auth.required_for(local) is required


def _listen_host(config) -> str:
    return parse_args(config["applications"][0]["args"]).auth.listen_host


def test_listen_host_follows_the_host_serve_binds(tmp_path):
    local = "serve_apps/configs/local.yaml"
    assert _listen_host(load_serve_config(local)) == "127.0.0.1"
    assert _listen_host(load_serve_config(local, host="0.0.0.0")) == "0.0.0.0"
    assert parse_args(
        load_serve_config(local, host="0.0.0.0")["applications"][0]["args"]
    ).auth.required()
    with pytest.raises(ConfigError, match="http_options.host='127.0.0.1'"):
        load_serve_config(local, ["auth.listen_host=0.0.0.0"])
    # No http_options: Serve binds 127.0.0.1.
    bare = tmp_path / "bare.yaml"
    bare.write_text(
        "applications:\n- name: medray\n  import_path: serve_apps.app:app_builder\n"
        "  args: {auth: {listen_host: 0.0.0.0}}\n"
    )
    with pytest.raises(ConfigError, match="Serve binds"):
        load_serve_config(bare)
