"""testkit.recording: the file names and the sanitized JSON of a recorded exchange."""

from __future__ import annotations

import datetime as dt
import json

import requests

from testkit.recording import Recorder, file_name

PROJECT = "97558db3dc31444896c6b24ad773efa1"
VOLUME = "9ec5c5d7-5eed-4e7f-a6df-5cbb265cdf24"


def test_file_names_hide_ids_and_name_the_project():
    assert file_name(1, "POST", f"/v3/{PROJECT}/volumes", 202) == "001-POST-v3_PROJECT_volumes-202.json"
    assert (
        file_name(8, "DELETE", f"/v2.1/servers/{VOLUME}/os-volume_attachments/{VOLUME}", 202)
        == "008-DELETE-v2_1_servers_ID_os_volume_attachments_ID-202.json"
    )


def _response(status: int, body: bytes) -> requests.Response:
    request = requests.Request(
        "POST",
        f"http://127.0.0.1:8776/v3/{PROJECT}/volumes?all_tenants=1",
        headers={"X-Auth-Token": "gAAAA-secret", "Content-Type": "application/json"},
        json={"volume": {"size": 1}},
    ).prepare()
    response = requests.Response()
    response.status_code, response.reason, response._content = status, "Accepted", body
    response.headers.update({"X-Subject-Token": "gAAAA-other", "OpenStack-API-Version": "volume 3.0"})
    response.request, response.elapsed = request, dt.timedelta(milliseconds=489)
    return response


def test_an_exchange_is_written_with_tokens_replaced(tmp_path):
    record = Recorder(tmp_path)
    answer = _response(202, json.dumps({"volume": {"id": VOLUME, "status": "creating"}}).encode())
    seen = []

    def post(path, **kwargs):
        seen.append((path, kwargs))
        return answer

    assert record("create_volume", "create", post, "/volumes", json={"volume": {"size": 1}}) is answer
    assert seen == [("/volumes", {"raise_exc": False, "json": {"volume": {"size": 1}}})]
    exchange = json.loads((tmp_path / "001-POST-v3_PROJECT_volumes-202.json").read_text())
    assert exchange["request"]["headers"]["X-Auth-Token"] == "<TOKEN>"
    assert exchange["request"]["query"] == {"all_tenants": ["1"]}
    assert exchange["request"]["body"] == {"json": {"volume": {"size": 1}}}
    assert exchange["response"]["headers"]["X-Subject-Token"] == "<TOKEN>"
    assert exchange["response"]["body"]["json"]["volume"]["status"] == "creating"
    assert exchange["response"]["elapsed_s"] == 0.489
    assert "gAAAA" not in (tmp_path / "001-POST-v3_PROJECT_volumes-202.json").read_text()
    index = json.loads((tmp_path / "calls.json").read_text())
    assert index == [
        {"call": "create_volume", "purpose": "create", "exchanges": ["001-POST-v3_PROJECT_volumes-202.json"]}
    ]


def test_nothing_is_written_without_a_directory(tmp_path):
    record = Recorder(None)
    answer = _response(204, b"")
    assert record("delete_volume", "delete", lambda path, **kw: answer, "/volumes/x") is answer
    assert record.calls == [] and list(tmp_path.iterdir()) == []
