"""The README documents what exists: every configuration key is in its table, and the test command it
shows is the one CI runs."""

from __future__ import annotations

from pathlib import Path

import chz

from continualcode.config import Config

REPO = Path(__file__).resolve().parents[1]


def test_every_config_key_is_in_the_readme_table():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| key | default | meaning |"):]
    table = table[: table.index("\n\n")]
    keys = [f.logical_name for f in chz.chz_fields(Config()).values()]
    assert len(keys) > 40
    assert [k for k in keys if f"`{k}`" not in table] == []


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    command = ".ci/install-bubblewrap && pip install -e '.[dev]' && python -m pytest -q"
    assert command in readme and command in ci
