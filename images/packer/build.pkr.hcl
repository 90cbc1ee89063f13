# The provisioning, identical for both sources. Every script is POSIX sh, run as root with `set -eu`.

build {
  sources = ["source.qemu.image", "source.openstack.image"]

  # Build inputs go to a private directory: the wheelhouse (offline install), the lock, the start-up helper,
  # the patch set of the dependencies and the step that applies it, the optional CA.
  provisioner "shell" {
    inline = ["mkdir -p /tmp/lcs-build/wheelhouse /tmp/lcs-build/patches"]
  }

  provisioner "file" {
    source      = "${var.wheelhouse_directory}/"
    destination = "/tmp/lcs-build/wheelhouse"
  }

  provisioner "file" {
    source      = var.requirements_lock
    destination = "/tmp/lcs-build/requirements.lock"
  }

  provisioner "file" {
    source      = var.build_tools_lock
    destination = "/tmp/lcs-build/build-tools.lock"
  }

  provisioner "file" {
    source      = var.startup_helper
    destination = "/tmp/lcs-build/lcs_startup.py"
  }

  provisioner "file" {
    source      = var.patches_step
    destination = "/tmp/lcs-build/lcs_patches.py"
  }

  provisioner "file" {
    source      = "${var.patches_directory}/"
    destination = "/tmp/lcs-build/patches"
  }

  provisioner "file" {
    source      = var.extra_ca_bundle
    destination = "/tmp/lcs-build/extra-ca.pem"
  }

  provisioner "shell" {
    execute_command = "sudo -n env {{ .Vars }} sh -eu '{{ .Path }}'"
    environment_vars = [
      "LCS_BUILD_DIR=/tmp/lcs-build",
      "LCS_BUILD_USER=${var.build_user}",
      "LCS_CLOUD_USER=${var.cloud_user}",
      "LCS_IMAGE_NAME=${var.image_name}",
    ]
    scripts = [
      "scripts/common/00-build-ca.sh",
      "scripts/common/10-packages.sh",
      "scripts/common/15-security-upgrades.sh",
      "scripts/${var.os_family}/20-os.sh",
      "scripts/common/30-jupyter.sh",
      "scripts/common/40-serial-console.sh",
      "scripts/common/90-cleanup.sh",
    ]
  }

  # The openstack builder has no shutdown command: finalize (remove the build login) as the last step.
  # The qemu builder runs the same script as its shutdown_command, which then powers the VM off.
  provisioner "shell" {
    only            = ["openstack.image"]
    execute_command = "sudo -n env {{ .Vars }} sh -eu '{{ .Path }}'"
    inline          = ["LCS_NO_POWEROFF=1 sh /var/tmp/lcs-finalize.sh"]
  }
}
