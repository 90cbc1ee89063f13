"""OpenStack API double for the hub tests, benchmarks and fault campaigns (see docs/osdouble.md).

- ``python -m testkit.osdouble --port 0 --portfile FILE [--latency 1.0] [--no-run]``: the server.
- ``testkit.osdouble.fixture.running_double(tmp_path, **opts)``: start it as a subprocess for a test.
- ``testkit.osdouble.client.DoubleClient``: the control API (faults, catalogue, servers, calls).
"""

from .client import DoubleClient, DoubleError
from .fixture import DoubleHandle, running_double

__all__ = ["DoubleClient", "DoubleError", "DoubleHandle", "running_double"]
