"""Fault rules: which requests they hit and what they do.

A rule (JSON, ``POST /_double/faults``)::

    {"method": "POST", "path": "^/v2.1/servers$",      # regexes (re.search), default: any
     "service": "compute",                              # optional: identity|compute|volume|image|network
     "nth": 2,                                          # only the 2nd matching request, or
     "after": 1, "times": 3,                            # skip 1 match, then fire 3 times (default: forever)
     "probability": 0.3, "seed": 42,                    # fire with this probability (own seeded RNG)
     "delay_s": 0.5,                                    # wait before the effect
     "effect": {"type": "status", "status": 500}}

Effects (``effect.type``):

- ``status``: answer ``status`` with that service's real error body (``message`` optional;
  ``retry_after`` adds ``Retry-After``). 500 -> Nova ``computeFault``, 503 ``serviceUnavailable``,
  409 ``conflictingRequest``, 404 ``itemNotFound``...
- ``rate_limit``: 413 (or ``status`` 429) ``overLimit`` with ``Retry-After`` (``retry_after``, default 1).
- ``unauthorized``: 401 as keystonemiddleware sends it, and the token used is revoked (re-auth needed).
- ``quota``: 403 ``forbidden`` "Quota exceeded for <resource>..." computed from the project's usage.
- ``delay``: hold the request ``seconds`` then answer normally (a client timeout shorter than that fires).
- ``reset``: close the connection with a TCP RST, no response; ``drop``: close it cleanly, no response.
- ``lost_response``: do the work (e.g. create the server) then reset the connection: the client
  never learns the id.
- ``build_error``: only for ``POST /v2.1/servers``: 202 as usual, then the instance goes to ``ERROR``
  with ``fault`` ``novalidhost`` (default, after scheduling), ``disk`` (after spawning) or a custom
  ``{"code", "message"}``; ``phase`` may override when it happens.
- ``volume``: the request is answered as usual, and the volume's status change it starts goes
  differently: ``status`` is where it ends (``POST .../volumes``: ``error`` = the backend failed;
  ``POST .../os-volume_attachments``: ``available`` = the attach failed on the compute host, ``error``;
  ``DELETE .../os-volume_attachments/{id}``: ``in-use`` = the detach failed; ``DELETE .../volumes/{id}``:
  ``error_deleting``), ``seconds`` how long it takes (a slow detach: ``{"type": "volume", "seconds": 60}``).
- ``api_down``: the whole API stops listening (connection refused) for ``seconds`` (default 5); this
  request is reset.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field, fields
from typing import Any

EFFECTS = {
    "status",
    "rate_limit",
    "unauthorized",
    "quota",
    "delay",
    "reset",
    "drop",
    "lost_response",
    "build_error",
    "api_down",
    "volume",
}


class RuleError(ValueError):
    pass


@dataclass
class Rule:
    id: int
    effect: dict[str, Any]
    method: str | None = None
    path: str | None = None
    service: str | None = None
    nth: int | None = None
    after: int = 0
    times: int | None = None
    probability: float = 1.0
    seed: int | None = None
    delay_s: float = 0.0
    matches: int = 0
    hits: int = 0
    _method_re: re.Pattern[str] | None = field(default=None, repr=False)
    _path_re: re.Pattern[str] | None = field(default=None, repr=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    @classmethod
    def from_json(cls, rule_id: int, data: dict[str, Any]) -> Rule:
        known = {"method", "path", "service", "nth", "after", "times", "probability", "seed", "delay_s", "effect"}
        unknown = set(data) - known
        if unknown:
            raise RuleError(f"unknown rule keys: {sorted(unknown)}")
        effect = data.get("effect")
        if isinstance(effect, str):
            effect = {"type": effect}
        if not isinstance(effect, dict) or effect.get("type") not in EFFECTS:
            raise RuleError(f"effect.type must be one of {sorted(EFFECTS)}")
        if effect["type"] == "status" and not isinstance(effect.get("status"), int):
            raise RuleError("effect status needs an integer 'status'")
        rule = cls(
            id=rule_id,
            effect=effect,
            method=data.get("method"),
            path=data.get("path"),
            service=data.get("service"),
            nth=data.get("nth"),
            after=int(data.get("after", 0)),
            times=data.get("times"),
            probability=float(data.get("probability", 1.0)),
            seed=data.get("seed"),
            delay_s=float(data.get("delay_s", 0.0)),
        )
        try:
            rule._method_re = re.compile(rule.method, re.IGNORECASE) if rule.method else None
            rule._path_re = re.compile(rule.path) if rule.path else None
        except re.error as exc:
            raise RuleError(f"bad regex: {exc}") from exc
        rule._rng = random.Random(rule.seed)
        return rule

    def to_json(self) -> dict[str, Any]:
        """Every public field (the compiled patterns and the random generator stay inside)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def matches_request(self, method: str, path: str, service: str) -> bool:
        if self._method_re is not None and not self._method_re.fullmatch(method):
            return False
        if self._path_re is not None and not self._path_re.search(path):
            return False
        return not (self.service is not None and self.service != service)

    def consider(self, method: str, path: str, service: str, may_fire: bool = True) -> bool:
        """Count a matching request and decide whether the rule fires for it (``may_fire=False``: an
        earlier rule already fired; the request still counts as a match for nth/after)."""
        if not self.matches_request(method, path, service):
            return False
        self.matches += 1
        if not may_fire:
            return False
        if self.nth is not None:
            fire = self.matches == self.nth
        else:
            fire = self.matches > self.after and (self.times is None or self.hits < self.times)
        if fire and self.probability < 1.0:
            fire = self._rng.random() < self.probability
        if fire:
            self.hits += 1
        return fire
