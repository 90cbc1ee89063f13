"""kvm or tcg for QEMU: KVM only where a stock kernel really boots under it (probed once per host kernel)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from invoke import Exit

from .common import OUTPUT_DIR


def kvm_boots(c, probe_image: Path, deadline_s: float = 60) -> tuple[bool, str]:
    """Boot ``probe_image`` (snapshot) under KVM and watch its serial console for the kernel's banner."""
    with tempfile.TemporaryDirectory(prefix="lcs-kvm-probe-") as tmp:
        log = Path(tmp) / "console.log"
        proc = subprocess.Popen(
            ["qemu-system-x86_64", "-nodefaults", "-machine", "pc,accel=kvm", "-cpu", "host", "-m", "512",
             "-display", "none", "-serial", f"file:{log}", "-snapshot",
             "-drive", f"file={probe_image},format=qcow2,if=virtio"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        start = time.monotonic()
        try:
            while time.monotonic() - start < deadline_s:
                if proc.poll() is not None:
                    out = proc.stdout.read().decode(errors="replace").strip().splitlines()
                    return False, f"QEMU exited under KVM: {out[-1] if out else proc.returncode}"
                text = log.read_text(errors="replace") if log.exists() else ""
                if "Linux version" in text:
                    return True, f"a kernel booted under KVM in {time.monotonic() - start:.0f} s"
                time.sleep(1)
            return False, f"no kernel output under KVM within {deadline_s:.0f} s (stuck in the boot loader)"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def resolve_accelerator(c, requested: str, os_name: str = "debian-12") -> str:
    """kvm or tcg. ``auto``: KVM only if a real smoke boot of a stock kernel works (cached per kernel)."""
    if requested in ("kvm", "tcg"):
        return requested
    if requested != "auto":
        raise Exit(f"--accelerator must be auto, kvm or tcg, not {requested!r}")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("accelerator: tcg (no usable /dev/kvm)")
        return "tcg"
    probe = OUTPUT_DIR / "base" / f"{os_name}.qcow2"
    if not probe.exists():
        probe = next(iter(sorted((OUTPUT_DIR / "base").glob("*.qcow2"))), None) if OUTPUT_DIR.exists() else None
    if probe is None:
        print("accelerator: tcg (no local image to smoke-boot KVM with; pass --accelerator kvm to force it)")
        return "tcg"
    cache = OUTPUT_DIR / ".accelerator-probe.json"
    key = f"{os.uname().release} {c.run('qemu-system-x86_64 --version', hide=True).stdout.splitlines()[0]}"
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            print(f"accelerator: {cached['accelerator']} ({cached['reason']}; cached, delete {cache} to re-probe)")
            return cached["accelerator"]
    print("accelerator: probing whether KVM boots a stock kernel here (up to 60 s)...", flush=True)
    ok, reason = kvm_boots(c, probe)
    accel = "kvm" if ok else "tcg"
    cache.write_text(json.dumps({"key": key, "accelerator": accel, "reason": reason}))
    print(f"accelerator: {accel} ({reason})")
    return accel
