"""Debian's real cloud-init schema validator, as a library in one long-lived helper process.

``cloud-init schema --config-file F`` per document costs about a second; property tests render thousands.
So one ``/usr/bin/python3`` process (the interpreter cloud-init is installed for) imports
``cloudinit.config.schema`` once and validates documents sent over stdin, one JSON line each, with
``validate_cloudconfig_schema(config, get_schema(), strict=True)`` (cloud-init 22.4 API). It answers with
the verdict and the document as cloud-init's own YAML loader parsed it, so the tests can also check the
round trip through the very parser the VM uses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
CLOUD_INIT = "/usr/bin/cloud-init"

_HELPER = r"""
import json, sys
from cloudinit import util
from cloudinit.config.schema import SchemaValidationError, get_schema, validate_cloudconfig_schema
schema = get_schema()
for line in sys.stdin:
    doc = json.loads(line)
    answer = {"ok": False, "error": "", "config": None}
    try:
        if not doc.startswith("#cloud-config\n"):
            raise ValueError("the document does not start with '#cloud-config'")
        config = util.load_yaml(doc, default=None)
        if not isinstance(config, dict):
            raise ValueError("the document is not a YAML mapping")
        validate_cloudconfig_schema(config, schema, strict=True, log_details=False)
        answer.update(ok=True, config=config)
    except SchemaValidationError as e:
        answer["error"] = "schema: " + str(e)
    except Exception as e:
        answer["error"] = type(e).__name__ + ": " + str(e)
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
"""


class CloudInitMissing(RuntimeError):
    pass


def require_cloud_init() -> None:
    """Fail (not skip) with a clear message when Debian's cloud-init is not installed."""
    if not Path(CLOUD_INIT).exists() or shutil.which(SYSTEM_PYTHON) is None:
        raise CloudInitMissing(
            "Debian's cloud-init is needed to validate user-data: apt-get install cloud-init (./bootstrap installs it)"
        )
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import cloudinit.config.schema"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        raise CloudInitMissing(f"cloud-init's Python package is not importable: {probe.stderr.strip()}")


class Validator:
    """A running helper; ``validate(doc)`` returns ``(ok, error, parsed_config)``."""

    def __init__(self) -> None:
        require_cloud_init()
        self._proc = subprocess.Popen(
            [SYSTEM_PYTHON, "-c", _HELPER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="surrogateescape",
        )

    def validate(self, document: str) -> tuple[bool, str, dict | None]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(document) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the cloud-init validator helper died (exit {self._proc.poll()})")
        answer = json.loads(line)
        return answer["ok"], answer["error"], answer["config"]

    def close(self) -> None:
        if self._proc.stdin:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)


def validate_with_cli(path: Path) -> subprocess.CompletedProcess:
    """The real command an administrator would run: ``cloud-init schema --config-file PATH``."""
    require_cloud_init()
    return subprocess.run(
        [CLOUD_INIT, "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
