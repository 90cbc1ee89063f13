"""Options and fixtures of the image tests (run by `invoke test-image` and `invoke build-image`).

Two phases, two files:
- ``test_offline.py`` checks the image file before its first boot: `invoke test-image` mounts a raw
  conversion read-only and passes ``--hosts=local:// --image-root=MOUNT``.
- ``test_booted.py`` checks the image booted like a spawned server: ``--hosts=ssh://lcs-test@127.0.0.1:PORT``
  plus ``--image``, ``--ssh-port`` and ``--singleuser-port`` (the same ports), ``--ssh-identity-file``.
  The session-scoped ``booted`` fixture boots it with the spawner's own user-data and always stops it.

The hub user is ``debian``, the name of the image's default account, which the user-data also creates (as
when a key pair is configured) with its passwordless sudo: the server must run as a fresh re-mapped account.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.vm import (
    SINGLEUSER_PORT,
    VM,
    StubHub,
    http_ok,
    hub_env,
    login_boothook,
    make_seed,
    multipart_userdata,
    ssh_banner,
)
from testkit.wait import wait_until

#: the hub user: the image's default account's name (its Linux account is re-mapped by the spawner's naming)
TEST_HUB_USER = "debian"
#: generous for software emulation on a busy 2-core machine; the waits end as soon as the VM is ready
BOOT_DEADLINE_S = 600


def pytest_addoption(parser):
    g = parser.getgroup("images", "jupyter-libcloudspawner image tests")
    g.addoption("--image-root", help="offline: where the image's root filesystem is mounted (read-only)")
    g.addoption("--image", help="booted: the qcow2 image to boot")
    g.addoption("--ssh-port", type=int, help="booted: host port forwarded to the guest's SSH (same as --hosts)")
    g.addoption("--singleuser-port", type=int, help="booted: host port forwarded to the guest's port 8000")
    g.addoption("--accelerator", default="tcg", choices=["kvm", "tcg"], help="booted: QEMU accelerator")
    g.addoption("--vm-workdir", help="booted: keep the VM's files (console log, seed) in this directory")


@pytest.fixture(scope="session")
def image_root(request) -> Path:
    root = request.config.getoption("image_root")
    if not root:
        pytest.fail("--image-root is required for the offline image tests (invoke test-image sets it)")
    path = Path(root)
    if not (path / "etc" / "os-release").is_file():
        pytest.fail(f"--image-root {path} is not a mounted root filesystem")
    return path


@dataclass
class Booted:
    vm: VM
    hub: StubHub
    username: str  # the Linux account running the server
    hub_user: str
    singleuser_port: int
    seconds_to_ssh: float
    seconds_to_ready: float

    @property
    def singleuser_url(self) -> str:
        return f"http://127.0.0.1:{self.singleuser_port}/user/{self.hub_user}/"

    @property
    def url(self) -> str:
        """The server's origin with ``token``: what ``testkit.e2e.run_in_kernel`` takes as its hub."""
        return f"http://127.0.0.1:{self.singleuser_port}"

    @property
    def token(self) -> str:
        return self.hub.user_token


@pytest.fixture(scope="session")
def booted(request):
    """The image booted with the spawner's slim cloud-config for TEST_HUB_USER; always torn down."""
    from jupyterhub import __version__ as hub_version

    from libcloudspawner.naming import linux_username
    from libcloudspawner.userdata import render_userdata

    opt = request.config.getoption
    image, ssh_port, su_port = opt("image"), opt("ssh_port"), opt("singleuser_port")
    identity = opt("ssh_identity_file")
    if not (image and ssh_port and su_port and identity):
        pytest.fail("booted image tests need --image, --ssh-port, --singleuser-port, --ssh-identity-file")
    keep = opt("vm_workdir")
    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="lcs-image-test-"))
    workdir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    hub = StubHub(version=hub_version, token=token, username=TEST_HUB_USER, user_token=secrets.token_hex(16)).start()
    account = linux_username(TEST_HUB_USER)
    # as the spawner renders it for this hub user when a key pair is configured (the default account kept)
    userdata = render_userdata(
        username=account, env=hub_env(TEST_HUB_USER, hub.port, token), cmd=["jupyterhub-singleuser"], default_user=True
    )
    pubkey = Path(identity + ".pub").read_text()
    seed = make_seed(
        workdir,
        multipart_userdata(userdata, login_boothook(pubkey)),
        instance_id="i-" + secrets.token_hex(6),
        hostname="lcs-image-test",
    )
    vm = VM(
        image=Path(image),
        workdir=workdir,
        seed=seed,
        accelerator=opt("accelerator"),
        forwards={ssh_port: 22, su_port: SINGLEUSER_PORT},
    )
    try:
        vm.start()
        try:
            wait_until(lambda: vm.alive() and ssh_banner(ssh_port), timeout_s=BOOT_DEADLINE_S, interval_s=2, what="SSH")
            to_ssh = vm.elapsed()
            url = f"http://127.0.0.1:{su_port}/user/{TEST_HUB_USER}/api"
            wait_until(
                lambda: vm.alive() and http_ok(url),
                timeout_s=BOOT_DEADLINE_S,
                interval_s=1,
                what="jupyterhub-singleuser answering",
            )
            to_ready = vm.elapsed()
        except TimeoutError as e:
            pytest.fail(f"{e} (QEMU alive: {vm.alive()}); console log tail:\n{vm.console_tail()}")
        print(f"\nbooted {image}: SSH after {to_ssh:.0f} s, single-user server after {to_ready:.0f} s")
        yield Booted(vm, hub, account, TEST_HUB_USER, su_port, to_ssh, to_ready)
    finally:
        vm.stop()
        hub.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
