"""``medray serve``: clear errors before anything is deployed."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from medray.cli.main import cli

pytestmark = pytest.mark.unit


def test_serve_up_without_a_cluster_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDRAY_HOME", str(tmp_path))
    res = CliRunner().invoke(cli, ["serve", "up"])
    assert res.exit_code == 1
    assert "medray cluster up" in res.output


def test_serve_up_rejects_a_bad_override_before_deploying(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDRAY_HOME", str(tmp_path))
    res = CliRunner().invoke(cli, ["serve", "up", "generation.max_new_tokns=3"])
    assert res.exit_code == 2
    assert "unknown key 'generation.max_new_tokns'" in res.output
    assert "max_new_tokens" in res.output  # the suggestion


def test_serve_up_rejects_a_missing_config_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDRAY_HOME", str(tmp_path))
    res = CliRunner().invoke(cli, ["serve", "up", "--config", "nope.yaml"])
    assert res.exit_code == 2 and "config file not found" in res.output


def test_serve_down_without_a_cluster_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDRAY_HOME", str(tmp_path))
    res = CliRunner().invoke(cli, ["serve", "down"])
    assert res.exit_code == 1 and "medray cluster up" in res.output
