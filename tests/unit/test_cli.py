"""The medray command: every command group and subcommand has working --help."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from medray.cli.main import cli

pytestmark = pytest.mark.unit


def _walk(cmd: click.Command, path: tuple[str, ...] = ()):
    yield path
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _walk(sub, (*path, name))


def test_every_subcommand_has_help():
    paths = list(_walk(cli))
    assert (
        ("cluster", "up") in paths
        and ("cluster", "status") in paths
        and ("cluster", "down") in paths
    )
    runner = CliRunner()
    for path in paths:
        res = runner.invoke(cli, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage:" in res.output
        # Every command documents itself (a first help line, not just the usage).
        assert len(res.output.strip().splitlines()) > 2, path


def test_unknown_preset_is_a_clear_cli_error():
    res = CliRunner().invoke(cli, ["models", "info", "tiny-unicorn"])
    assert res.exit_code == 1
    assert "unknown model preset 'tiny-unicorn'" in res.output and "tiny-qwen2-vl" in res.output


def test_nodes_zero_is_refused_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDRAY_HOME", str(tmp_path))
    res = CliRunner().invoke(cli, ["cluster", "up", "--nodes", "0"])
    assert res.exit_code == 2
    assert "nodes must be at least 1" in res.output
    assert not (tmp_path / "cluster" / "state.json").exists()


def test_job_submit_without_cluster_explains_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDRAY_HOME", str(tmp_path))
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    res = CliRunner().invoke(cli, ["job", "submit", "--", "python", "-m", "jobs.pipeline"])
    assert res.exit_code == 1
    assert "medray cluster up" in res.output


def _ctx(cmd):
    return click.Context(cmd)


def test_group_options_are_accepted_after_the_subcommand():
    from medray.cli.options import hoist
    from medray.cli.search import search

    args = ["text", "effusion", "--json", "-k", "3", "--milvus-uri", "http://m:1", "--db=x"]
    assert hoist(search, _ctx(search), args) == [
        "--json", "--milvus-uri", "http://m:1", "--db=x", "text", "effusion", "-k", "3",
    ]  # fmt: skip
    # -v anywhere reaches the top-level group; nothing after `--` moves
    assert hoist(cli, _ctx(cli), ["search", "text", "q", "-v"]) == ["-v", "search", "text", "q"]
    submit = ["job", "submit", "--", "python", "-m", "jobs.x", "-v"]
    assert hoist(cli, _ctx(cli), submit) == submit
    # options the top level does not have stay where they are
    assert hoist(cli, _ctx(cli), ["cluster", "status", "--json"]) == ["cluster", "status", "--json"]


def test_json_after_the_subcommand_reaches_the_search_group(monkeypatch):
    import medray.cli.search as s

    seen = {}
    monkeypatch.setattr(s, "_run", lambda ctx, fn, *a, **k: seen.update(ctx.obj))
    res = CliRunner().invoke(cli, ["search", "text", "effusion", "--json", "--cases", "c2"])
    assert res.exit_code == 0, res.output
    assert seen["json"] is True and seen["cases"] == "c2"


def test_cluster_flags_are_blamed_by_name_and_the_yaml_by_path(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDRAY_HOME", str(tmp_path))
    res = CliRunner().invoke(cli, ["cluster", "up", "--ray-port", "25000"])
    assert res.exit_code == 2 and "Invalid value for --ray-port" in res.output
    bad = tmp_path / "c.yaml"
    bad.write_text("nodes: 0\n")
    res = CliRunner().invoke(cli, ["cluster", "up", "--config", str(bad)])
    assert res.exit_code == 2 and f"{bad}: nodes must be at least 1" in res.output
    assert "--nodes" not in res.output.split("Error:")[1]


def test_models_list_has_a_header_and_marks_random_weights():
    res = CliRunner().invoke(cli, ["models", "list"])
    lines = res.output.splitlines()
    assert lines[0].split()[:4] == ["name", "kind", "source", "weights"]
    assert set(lines[1]) <= {"-", " "}
    assert any("RANDOM" in line for line in lines[2:])


def test_ray_data_false_hang_warning_is_explained_not_shouted():
    import logging

    from medray.runtime import HANG_WARNING, explain_false_hang_warnings

    explain_false_hang_warnings()
    explain_false_hang_warnings()  # idempotent
    logger = logging.getLogger("ray.data.dataset")
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger.addHandler(handler)
    try:
        logger.warning("Warning: ... The Dataset job %s. A common reason ...", HANG_WARNING)
        logger.warning("another warning")
    finally:
        logger.removeHandler(handler)
    assert [r.levelname for r in seen] == ["INFO", "WARNING"]
    assert "will hang" not in seen[0].getMessage() and "--stuck-timeout" in seen[0].getMessage()
    assert sum(type(f).__name__ == "HangWarningFilter" for f in logger.filters) == 1


def test_job_config_errors_fail_before_anything_is_submitted(tmp_path, monkeypatch):
    import os

    from medray.paths import repo_root

    monkeypatch.setenv("MEDRAY_HOME", str(tmp_path))  # no local cluster recorded
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:1")  # nothing listens
    res = CliRunner().invoke(
        cli, ["job", "submit", "--", "python", "-m", "jobs.index", "cases.inptu=/x"]
    )
    assert res.exit_code == 1, res.output
    assert "nothing was submitted" in res.output and "did you mean 'input'" in res.output
    # blamed on the command line, not on the job's default YAML file
    assert "command-line override 'cases.inptu=/x'" in res.output
    assert "index_tiny.yaml" not in res.output
    from medray.cli.job import preflight

    preflight(["python", "-m", "jobs.index", "cases.input=/x"], repo_root(), dict(os.environ))
    preflight(["python", "-c", "print(1)"], repo_root(), {})  # not a MedRay job: not checked


def test_serve_up_drops_settings_of_deployments_the_graph_does_not_build():
    from medray.cli.serve import drop_unbuilt
    from medray.serving.deploy import load_serve_config

    def names(overrides):
        cfg = drop_unbuilt(load_serve_config("serve_apps/configs/local.yaml", overrides))
        return {d["name"] for d in cfg["applications"][0]["deployments"]}

    assert {"Retriever", "Agent"} <= names([])
    assert "Retriever" not in names(["retrieval.enabled=false"])
    assert not {"Retriever", "Agent"} & names(["retrieval.enabled=false", "agent.enabled=false"])


def test_serve_up_blames_the_override_that_is_wrong():
    res = CliRunner().invoke(
        cli, ["serve", "up", "generation.temperature=0.5", "generation.max_new_tokn=7"]
    )
    assert res.exit_code == 2
    assert "command-line override 'generation.max_new_tokn=7': " in res.output
    assert "did you mean 'max_new_tokens'" in res.output


def test_library_info_logs_are_off_unless_verbose(monkeypatch):
    import logging

    from medray.cli import main, options

    names = ("ray.data", "pymilvus", "sentence_transformers", "httpx", "medray")
    saved = {n: logging.getLogger(n).level for n in (*names, "ray", "")}
    monkeypatch.setattr(options, "VERBOSITY", 0)
    try:
        for n in ("", "ray"):  # Ray sets its logger to INFO on import; root as loud
            logging.getLogger(n).setLevel(logging.INFO)
        main.setup_logging(0)
        assert all(logging.getLogger(n).getEffectiveLevel() == logging.WARNING for n in names)
        res = CliRunner().invoke(cli, ["models", "list", "-v"])  # -v after the subcommand
        assert res.exit_code == 0 and options.VERBOSITY == 1
        assert all(logging.getLogger(n).getEffectiveLevel() == logging.INFO for n in names)
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)
