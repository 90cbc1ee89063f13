"""The hub's own files: where they live, and the hub id generated once, kept, and read by the tools."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from jupyterhub import orm

from libcloudspawner import hubstate
from libcloudspawner.settings import load_hub_config
from libcloudspawner.spawner import LibcloudSpawner

GENERATED = re.compile(r"^hub-[0-9a-f]{12}$")


@pytest.mark.parametrize(
    ("db_url", "expected"),
    [
        (None, "/hub"),
        ("sqlite:///jupyterhub.sqlite", "/hub"),
        ("sqlite:///data/jupyterhub.sqlite", "/hub/data"),
        ("sqlite:////srv/jupyterhub/jupyterhub.sqlite", "/srv/jupyterhub"),
        ("sqlite://", "/hub"),
        ("sqlite:///:memory:", "/hub"),
        ("postgresql://hub:secret@db.example/jupyterhub", "/hub"),
    ],
)
def test_the_hubs_files_go_beside_its_sqlite_database_else_its_working_directory(db_url, expected):
    assert hubstate.state_directory(db_url, cwd="/hub") == Path(expected)


def hub_db(directory: Path):
    """The hub's database session (SQLite in ``directory``). Its migration tool resets the root log level."""
    return orm.new_session_factory(f"sqlite:///{directory}/jupyterhub.sqlite")()


def a_hub_spawner(directory: Path, db=None) -> LibcloudSpawner:
    """A spawner as JupyterHub builds it, with its database session."""
    return LibcloudSpawner(db=db or hub_db(directory), user=SimpleNamespace(name="alice"))


@pytest.fixture(autouse=True)
def new_process(monkeypatch):
    monkeypatch.setattr(hubstate, "_HUB_IDS", {})


@pytest.fixture
def db(tmp_path):
    """Made before the test runs: the hub's migration tool replaces the root log handlers (and caplog's)."""
    return hub_db(tmp_path)


def test_the_default_hub_id_is_generated_once_kept_beside_the_database_and_logged(tmp_path, db, caplog):
    with caplog.at_level(logging.INFO):
        first = a_hub_spawner(tmp_path, db).hub_id  # read at construction: logged at hub start
    assert GENERATED.match(first)
    assert (tmp_path / hubstate.HUB_ID_FILE).read_text().strip() == first
    assert first in caplog.text
    assert a_hub_spawner(tmp_path, db).hub_id == first


def test_a_restarted_hub_keeps_its_id_and_another_hub_has_its_own(tmp_path, monkeypatch):
    first = a_hub_spawner(tmp_path).hub_id
    monkeypatch.setattr(hubstate, "_HUB_IDS", {})  # a new hub process
    assert a_hub_spawner(tmp_path).hub_id == first
    (tmp_path / "other").mkdir()
    assert a_hub_spawner(tmp_path / "other").hub_id != first


def test_an_explicit_hub_id_writes_no_file(tmp_path):
    assert LibcloudSpawner(db=hub_db(tmp_path), user=SimpleNamespace(name="a"), hub_id="hub-a").hub_id == "hub-a"
    assert not (tmp_path / hubstate.HUB_ID_FILE).exists()


def write_config(path: Path, lines: str) -> str:
    path.write_text("c = get_config()  # noqa\n" + lines)
    return str(path)


def test_the_tools_read_the_id_the_hub_keeps(tmp_path):
    kept = a_hub_spawner(tmp_path).hub_id
    config = write_config(
        tmp_path / "jupyterhub_config.py", f"c.JupyterHub.db_url = 'sqlite:///{tmp_path}/jupyterhub.sqlite'\n"
    )
    assert load_hub_config(config).hub_id == kept


def test_the_tools_refuse_a_hub_id_they_cannot_confirm(tmp_path):
    config = write_config(
        tmp_path / "jupyterhub_config.py", f"c.JupyterHub.db_url = 'sqlite:///{tmp_path}/jupyterhub.sqlite'\n"
    )
    with pytest.raises(ValueError, match="hub_id is not set"):
        load_hub_config(config)
