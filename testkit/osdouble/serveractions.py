"""Nova's power and shelve actions on the double's servers, independent of HTTP (mixed into
:class:`~testkit.osdouble.state.Double`): which phase each is allowed from, the task state while it runs, the
guest stopped or booted again."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import ServerRecord

log = logging.getLogger("osdouble")

#: Nova's status and vm_state of each phase of a server
PHASE_STATUS = {
    "scheduling": "BUILD",
    "spawning": "BUILD",
    "active": "ACTIVE",
    "error": "ERROR",
    "shutoff": "SHUTOFF",
    "shelved_offloaded": "SHELVED_OFFLOADED",
}
PHASE_VM_STATE = {
    "scheduling": "building",
    "spawning": "building",
    "active": "active",
    "error": "error",
    "shutoff": "stopped",
    "shelved_offloaded": "shelved_offloaded",
}
#: server action -> (phases it is allowed from, task state while it runs, phase it ends in), as in Nova's
#: compute API (``check_instance_state``); an action from another state is a 409
SERVER_ACTIONS = {
    "os-stop": (("active", "error"), "powering-off", "shutoff"),
    "os-start": (("shutoff",), "powering-on", "active"),
    "shelve": (("active", "shutoff"), "shelving", "shelved_offloaded"),
    "unshelve": (("shelved_offloaded",), "unshelving", "active"),
}
#: Nova's names of the actions in its 409 message
ACTION_NAMES = {"os-stop": "stop", "os-start": "start", "shelve": "shelve", "unshelve": "unshelve"}


class ServerActions:
    """The action side of the double's state (``self.config``: timings; ``_boot_host``: the guest's start)."""

    config: Any

    def server_action(self, rec: ServerRecord, action: str) -> tuple[int, str] | None:
        """``POST /servers/{id}/action`` for the power and shelve actions: None once accepted (202), else
        Nova's refusal. The guest's processes stop when it powers off or is shelved, and its units start
        again when it powers on or is unshelved; its address (Neutron port) and volume attachments stay."""
        allowed, task_state, end = SERVER_ACTIONS[action]
        name = ACTION_NAMES[action]
        if rec.deleting:
            return 409, f"Cannot '{name}' instance {rec.id} while it is in task_state deleting"
        if rec.task_state is not None:
            return 409, f"Cannot '{name}' instance {rec.id} while it is in task_state {rec.task_state}"
        if rec.phase not in allowed:
            return 409, f"Cannot '{name}' instance {rec.id} while it is in vm_state {PHASE_VM_STATE[rec.phase]}"
        rec.task_state, rec.updated = task_state, time.time()
        rec.task = asyncio.get_running_loop().create_task(self._finish_action(rec, end))
        log.info("server %s: %s", rec.id, action)
        return None

    async def _finish_action(self, rec: ServerRecord, end: str) -> None:
        await asyncio.sleep(self.config.power_s)
        if end != "active":
            await self.power_off(rec)
        rec.phase, rec.task_state, rec.updated = end, None, time.time()
        log.info("server %s is %s", rec.id, PHASE_STATUS[end])
        if end == "active":
            await self._boot_host(rec)

    async def power_off(self, rec: ServerRecord) -> None:
        """The guest stops (a shutdown inside it, or a host reboot, leaves it SHUTOFF)."""
        if rec.host is not None:
            await rec.host.stop(self.config.kill_timeout_s)
            rec.host = None
            self._write_pidfile()
        if rec.phase == "active":
            rec.phase, rec.updated = "shutoff", time.time()
