"""A short fault campaign on every CI run: every scenario of benchmarks/fault_campaign.py, in turn.

The full randomized campaign (200+ runs) is `python -m benchmarks.fault_campaign`; its figures are in
docs/reliability.md. Here each scenario runs once, with random parameters (fixed seed).
"""

from __future__ import annotations

import json

import pytest

from benchmarks.fault_campaign import SCENARIOS, run_campaign

pytestmark = pytest.mark.hub


def test_fault_campaign_leaks_nothing_and_stops_nothing(tmp_path):
    summary, results = run_campaign(len(SCENARIOS), seed=20261125, workdir=tmp_path, round_robin=True)
    detail = json.dumps(summary, indent=1)
    assert summary["runs"] == len(SCENARIOS)
    assert summary["faults_fired"] > 0, detail  # the faults really happened
    assert summary["vms_leaked"] == 0, [r for r in results if r.leaked]
    assert summary["servers_wrongly_stopped"] == 0, detail
    assert summary["unclear_messages"] == 0, [r.message for r in results if not r.message_clear]
    assert summary["hub_unanswered_api_calls"] == 0, detail
    # transient faults that the retry budget covers must not fail a spawn
    for r in results:
        if r.scenario in {"5xx", "connection_reset", "lost_create", "rate_limit", "unauthorized", "token_expired",
                          "delete_404", "delete_fails", "instance_dies_running"}:  # fmt: skip
            assert r.outcome == "ready", (r.scenario, r.faults, r.message)
        if r.scenario in {"instance_error", "quota"}:
            assert r.outcome == "failed", (r.scenario, r.faults)
