"""The image pipeline's invoke tasks, thin wrappers over the package's modules (docs/images.md)."""

from __future__ import annotations

from pathlib import Path

from invoke import Exit, task

from . import base, build, packer, publish
from .accelerator import resolve_accelerator
from .common import BASE_RECIPES, OSES, need, q
from .imagetests import run_image_tests
from .manifest import default_image


@task(
    help={
        "os": f"which OS base to build ({', '.join(BASE_RECIPES)})",
        "force": "rebuild even if a valid base exists",
    }
)
def build_base(c, os="debian-12", force=False):
    """Build the local base image from OS packages (mmdebstrap); used where no cloud image downloads."""
    return base.build_base(c, os, force)


@task(
    help={
        "os": f"which OS to build ({', '.join(OSES)})",
        "builder": "qemu (local qcow2) or openstack (bakes inside a cloud, registers in Glance)",
        "accelerator": "qemu builder: auto (a smoke boot decides whether KVM boots a guest), kvm or tcg",
        "extra_ca": "PEM bundle trusted during the build only (intercepting proxy); removed from the image",
        "skip_tests": "do not run tests/images/ (the artifact is still checked; no manifest entry is written)",
        "base": "qemu builder: auto (the official cloud image if a HEAD request reaches it, else the local base),"
        " official (no probe) or local (build-base from Debian packages, never contacts the image host);"
        " default: $LCS_IMAGE_BASE, else auto",
        "cloud": "openstack builder: clouds.yaml entry",
        "source_image": "openstack builder: the base image in Glance, by name or id",
        "flavor": "openstack builder: flavor of the build instance, by name or id",
        "network": "openstack builder: network of the build instance, by name or id (default: Nova chooses)",
        "prebake": "qemu builder: auto (when emulated), yes or no: run the heavy provisioning in a chroot of the"
        " base at host speed first; Packer then runs every script again (idempotent) in the booted guest",
    }
)
def build_image(
    c, os="debian-12", builder="qemu", accelerator="auto", extra_ca="", skip_tests=False,
    cloud="devcloud", source_image="debian-12-base", flavor="m1.small", network="", prebake="auto", base="",
):  # fmt: skip
    """Bake a Jupyter image with Packer, verify and test it, record it in images/manifest.json."""
    return build.build_image(
        c,
        build.BuildRequest(
            os_name=os, builder=builder, accelerator=accelerator, extra_ca=extra_ca, skip_tests=skip_tests,
            cloud=cloud, source_image=source_image, flavor=flavor, network=network, prebake=prebake, base=base,
        ),
    )  # fmt: skip


@task(
    help={
        "image": "qcow2 to test (default: the newest image in images/manifest.json)",
        "accelerator": "auto (probe whether KVM boots a guest), kvm or tcg",
        "phase": "all, offline (the file before first boot) or booted (QEMU + the spawner's user-data)",
        "keep_vm_dir": "keep the test VM's console log and seed in this directory",
    }
)
def test_image(c, image="", accelerator="auto", phase="all", keep_vm_dir=""):
    """Run the image tests (tests/images/): offline on the file, then booted with QEMU."""
    if phase not in ("all", "offline", "booted"):
        raise Exit("--phase must be all, offline or booted")
    path = Path(image).resolve() if image else default_image()
    if not path.exists():
        raise Exit(f"{path} does not exist")
    need("qemu-img")
    c.run(f"qemu-img check -q {q(path)}", hide=True)
    accel = resolve_accelerator(c, accelerator) if phase != "offline" else "tcg"
    run_image_tests(c, path, accel, phase, keep_vm_dir)
    print(f"test-image: {path.name} passed ({phase})")


@task(
    help={
        "cloud": "clouds.yaml entry to publish to (e.g. devcloud)",
        "image": "qcow2 to upload (default: the newest image in images/manifest.json)",
        "name": "Glance image name (default: the manifest name)",
        "visibility": "Glance visibility: private, shared, community or public",
        "timeout": "seconds to wait for the image to become active",
        "force": "upload again even if the manifest records an active image in this cloud",
    }
)
def publish_image(c, cloud, image="", name="", visibility="private", timeout=1800, force=False):
    """Upload a built qcow2 to Glance with its properties; record the image id in the manifest."""
    return publish.publish(c, cloud, image, name, visibility, timeout, force)


@task(help={"os": "validate only this OS (default: every OS var file)"})
def validate(c, os=""):
    """Validate the Packer templates (every OS, every Packer installed) and shellcheck the scripts."""
    packer.validate_templates(c, [os] if os else list(OSES))


TASKS = [build_base, build_image, test_image, publish_image, validate]
