# Inputs of the image template. OS variants set the first group in vars/<os>.pkrvars.hcl; `invoke build-image`
# sets the per-build ones (name, paths, accelerator, keys). Conditions use only functions known to both
# Packer 1.6.6 and current Packer (`regex_replace`, `contains`, `length`).

# --- The operating system (vars/<os>.pkrvars.hcl) ---------------------------------------------------------

variable "os_name" {
  type        = string
  description = "Short OS id, also the var file name and the image name prefix, e.g. debian-12."
  validation {
    condition     = regex_replace(var.os_name, "^[a-z]+-[0-9][0-9.]*$", "") == ""
    error_message = "The os_name must look like debian-12 or ubuntu-22.04."
  }
}

variable "os_family" {
  type        = string
  description = "Which scripts/<family>/ directory holds the OS-specific provisioning."
  validation {
    condition     = contains(["debian", "ubuntu"], var.os_family)
    error_message = "The os_family must be debian or ubuntu."
  }
}

variable "os_distro" {
  type        = string
  description = "Glance os_distro property (OpenStack's list of values: debian, ubuntu, ...)."
}

variable "os_version" {
  type        = string
  description = "Glance os_version property, e.g. 12 or 22.04."
}

variable "guest_python_version" {
  type        = string
  description = "Full version of the guest's python3: the wheelhouse is downloaded for it."
  validation {
    condition     = regex_replace(var.guest_python_version, "^3\\.[0-9]+\\.[0-9]+$", "") == ""
    error_message = "The guest_python_version must be a full version such as 3.11.2."
  }
}

variable "guest_glibc_version" {
  type        = string
  description = "glibc version of the guest: the newest manylinux wheels the wheelhouse may take."
  validation {
    condition     = regex_replace(var.guest_glibc_version, "^2\\.[0-9]+$", "") == ""
    error_message = "The guest_glibc_version must look like 2.36."
  }
}

variable "base_image_url" {
  type        = string
  description = "Base disk image (the official cloud image, or file:// the local base from `invoke build-base`)."
  validation {
    condition     = regex_replace(var.base_image_url, "^(https?|file)://.+$", "") == ""
    error_message = "The base_image_url must be an http(s):// or file:// URL."
  }
}

variable "base_image_checksum" {
  type        = string
  description = "Pinned checksum of the base image: sha256:<hex>, sha512:<hex> or file:<url of a checksum list>."
  validation {
    condition     = regex_replace(var.base_image_checksum, "^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}|file:.+)$", "") == ""
    error_message = "The base_image_checksum must be sha256:<64 hex>, sha512:<128 hex> or file:<url>."
  }
}

variable "cloud_user" {
  type        = string
  description = "The base image's default cloud-init user (the openstack builder logs in as it)."
  default     = "debian"
}

# --- The image --------------------------------------------------------------------------------------------

variable "image_name" {
  type        = string
  description = "Name of the artifact: <os>-jupyter-<yyyymmdd>-<short commit>, set by `invoke build-image`."
  validation {
    condition     = regex_replace(var.image_name, "^[a-z0-9][a-z0-9._-]{2,99}$", "") == ""
    error_message = "The image_name must be 3-100 characters of a-z, 0-9, '.', '_' and '-'."
  }
}

variable "disk_size_gb" {
  type        = number
  description = "Virtual disk size in GiB; also the published min_disk."
  default     = 8
  validation {
    condition     = var.disk_size_gb >= 4 && var.disk_size_gb <= 64
    error_message = "The disk_size_gb must be between 4 and 64."
  }
}

variable "min_ram_mb" {
  type        = number
  description = "Published min_ram: the smallest flavor RAM that runs JupyterLab comfortably."
  default     = 1024
  validation {
    condition     = var.min_ram_mb >= 512
    error_message = "The min_ram_mb must be at least 512."
  }
}

variable "git_commit" {
  type        = string
  description = "Commit of this repository the image was built from (full sha, or unknown)."
  default     = "unknown"
}

variable "build_date" {
  type        = string
  description = "ISO-8601 UTC build date, recorded in the image properties."
  default     = "unknown"
}

variable "jupyter_versions" {
  type        = map(string)
  description = "Versions of Python and the Jupyter stack (from the var file and the lock), recorded in the image properties."
  default     = {}
}

# --- Build inputs made by `invoke build-image` ---------------------------------------------------------

variable "wheelhouse_directory" {
  type        = string
  description = "Host directory of the pinned wheels (pip download against the lock); uploaded to the guest."
}

variable "requirements_lock" {
  type        = string
  description = "The hashed lock file the wheelhouse was downloaded from (files/requirements-<os>.lock)."
}

variable "build_tools_lock" {
  type        = string
  description = "Hashed lock of the build-only tools in the wheelhouse (uv)."
  default     = "files/build-tools.lock"
}

variable "startup_helper" {
  type        = string
  description = "The image's start-up helper for jupyterhub-singleuser (cyclic GC paused until the server serves)."
  default     = "files/lcs_startup.py"
}

variable "patches_step" {
  type        = string
  description = "Build step that applies the patch set to the installed dependencies, checks its effect and keeps their RECORD files true."
  default     = "files/lcs_patches.py"
}

variable "patches_directory" {
  type        = string
  description = "The patch set: <distribution>-<version>/NNNN-topic.patch (JupyterHub's hub-only imports, aiohttp's import-time TLS contexts)."
  default     = "patches"
}

variable "extra_ca_bundle" {
  type        = string
  description = "Optional PEM bundle trusted during the build only (intercepting proxy); an empty file means none."
  default     = "files/no-extra-ca.pem"
}

variable "build_user" {
  type        = string
  description = "Temporary user the qemu builder logs in as; removed before the image is saved."
  default     = "lcs-build"
  validation {
    condition     = regex_replace(var.build_user, "^[a-z][a-z0-9-]{0,30}$", "") == ""
    error_message = "The build_user must be a valid user name."
  }
}

# --- qemu builder ---------------------------------------------------------------------------------------

variable "accelerator" {
  type        = string
  description = "QEMU accelerator: kvm where it really boots a guest, tcg (software emulation) otherwise."
  default     = "tcg"
  validation {
    condition     = contains(["kvm", "tcg"], var.accelerator)
    error_message = "The accelerator must be kvm or tcg."
  }
}

variable "cpus" {
  type        = number
  description = "vCPUs of the build VM."
  default     = 2
}

variable "memory_mb" {
  type        = number
  description = "RAM of the build VM in MiB."
  default     = 2048
}

variable "output_directory" {
  type        = string
  description = "Where the qemu builder writes <image_name>.qcow2 (must not exist yet)."
  default     = "output"
}

variable "seed_directory" {
  type        = string
  description = "NoCloud seed (user-data, meta-data) served by Packer's HTTP server to create the build user."
  default     = "seed"
}

variable "ssh_private_key_file" {
  type        = string
  description = "Private key of the build user (generated per build by `invoke build-image`)."
  default     = ""
  sensitive   = true
}

variable "serial_log" {
  type        = string
  description = "File that receives the build VM's serial console."
  default     = "serial.log"
}

# --- openstack builder -------------------------------------------------------------------------------------

variable "openstack_cloud" {
  type        = string
  description = "clouds.yaml entry the openstack builder uses (e.g. devcloud)."
  default     = "devcloud"
}

variable "openstack_password" {
  type        = string
  description = "Optional password overriding the clouds.yaml entry (prefer clouds.yaml or application credentials)."
  default     = ""
  sensitive   = true
}

variable "openstack_source_image" {
  type        = string
  description = "Id of the base image in Glance (the official cloud image, or the local base uploaded); `invoke build-image` resolves a name to it."
  default     = "debian-12-base"
}

variable "openstack_flavor" {
  type        = string
  description = "Flavor of the build instance."
  default     = "m1.small"
}

variable "openstack_networks" {
  type        = list(string)
  description = "Network ids of the build instance (the wheelhouse makes the build work without a route out)."
  default     = []
}

variable "openstack_ssh_ip_version" {
  type        = string
  description = "IP version Packer uses to reach the build instance."
  default     = "4"
}
