# Ubuntu 22.04 LTS (jammy). Official cloud image, pinned by release date and checksum.
os_name              = "ubuntu-22.04"
os_family            = "ubuntu"
os_distro            = "ubuntu"
os_version           = "22.04"
guest_python_version = "3.10.12"
cloud_user           = "ubuntu"
base_image_url       = "https://cloud-images.ubuntu.com/releases/22.04/release-20240207/ubuntu-22.04-server-cloudimg-amd64.img"
base_image_checksum  = "sha256:7eb9f1480956af75359130cd41ba24419d6fd88d3af990ea9abe97c2f9459fda"
