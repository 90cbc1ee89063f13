"""Image pipeline: build the base, bake the Jupyter image with Packer, test it, publish it.

    invoke build-base --os debian-12          base qcow2 from Debian packages (mmdebstrap), when no cloud
                                              image can be downloaded
    invoke build-image --os debian-12         Packer build, artifact checks, image tests, manifest entry
    invoke test-image [--image PATH]          tests/images/: offline on the file, then booted with QEMU
    invoke publish-image --cloud devcloud     upload to Glance with properties, record the image id
    invoke validate                           packer validate + fmt for every OS, shellcheck

Artifacts go to images/output/ (gitignored); images/manifest.json records every build.

Modules: ``common`` (paths, OS data, host helpers), ``manifest`` (images/manifest.json, on the spawner's
schema), ``disk`` (the one loop-mount), ``packer``, ``accelerator``, ``base``, ``wheelhouse``, ``prebake``,
``imagetests``, ``build`` (build-image's steps), ``publish`` (Glance and the openstack pre-flight), ``tasks``.
"""

from __future__ import annotations

from .tasks import TASKS

__all__ = ["TASKS"]
