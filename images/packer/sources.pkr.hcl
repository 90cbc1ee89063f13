# Two ways to bake the same image; build.pkr.hcl runs the same provisioning in both.

locals {
  # Image properties, identical for the openstack builder and for `invoke publish-image`.
  image_properties = merge(
    {
      os_distro           = var.os_distro
      os_version          = var.os_version
      os_type             = "linux"
      hw_qemu_guest_agent = "yes"
      lcs_git_commit      = var.git_commit
      lcs_build_date      = var.build_date
    },
    { for k, v in var.jupyter_versions : "lcs_${k}_version" => v },
  )
}

# Local build: boots the base image under QEMU, provisions it over SSH, saves a compressed qcow2.
source "qemu" "image" {
  iso_url      = var.base_image_url
  iso_checksum = var.base_image_checksum
  disk_image   = true
  format       = "qcow2"
  disk_size    = "${var.disk_size_gb}G"

  accelerator      = var.accelerator
  cpus             = var.cpus
  memory           = var.memory_mb
  headless         = true
  disk_interface   = "virtio"
  net_device       = "virtio-net"
  disk_discard     = "unmap"
  disk_compression = true

  # The build user comes from a NoCloud seed served by Packer's HTTP server (cloud-init reads the URL
  # from the SMBIOS serial). SSH is forwarded on 127.0.0.1 only (Packer's default listens everywhere).
  # No video device, like a Nova VM without VNC/SPICE: GRUB must work on the serial console.
  http_directory = var.seed_directory
  qemuargs = [
    ["-cpu", var.accelerator == "kvm" ? "host" : "max"],
    ["-smbios", "type=1,serial=ds=nocloud-net;s=http://{{ .HTTPIP }}:{{ .HTTPPort }}/"],
    ["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"],
    ["-serial", "file:${var.serial_log}"],
    ["-vga", "none"],
  ]

  communicator         = "ssh"
  ssh_username         = var.build_user
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "15m"
  # Runs as root via sudo while the build user still exists, then powers off.
  shutdown_command = "sudo -n sh /var/tmp/lcs-finalize.sh"
  shutdown_timeout = "5m"

  output_directory = var.output_directory
  vm_name          = "${var.image_name}.qcow2"
}

# Cloud build: boots the base image in an OpenStack project and registers the result in Glance.
source "openstack" "image" {
  cloud    = var.openstack_cloud
  password = var.openstack_password != "" ? var.openstack_password : null

  # ids, as `invoke build-image` resolves them (a network must be an id: Packer sends it to Nova as is)
  source_image   = var.openstack_source_image
  flavor         = var.openstack_flavor
  networks       = var.openstack_networks
  ssh_ip_version = var.openstack_ssh_ip_version
  communicator   = "ssh"
  ssh_username   = var.cloud_user
  ssh_timeout    = "20m"

  image_name       = var.image_name
  image_visibility = "private"
  image_min_disk   = var.disk_size_gb
  metadata         = local.image_properties
}
