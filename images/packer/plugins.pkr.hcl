# Plugins for current Packer (>= 1.7). Debian's Packer 1.6.6 has the builders built in and does not know
# this block: `invoke build-image` / `invoke validate` leave this file out when they run Packer 1.6.6.
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    qemu = {
      source  = "github.com/hashicorp/qemu"
      version = ">= 1.1.0, < 2.0.0"
    }
    openstack = {
      source  = "github.com/hashicorp/openstack"
      version = ">= 1.1.0, < 2.0.0"
    }
  }
}
