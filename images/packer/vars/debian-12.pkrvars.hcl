# Debian 12 (bookworm). Official genericcloud image, pinned by release date and checksum. Where it cannot
# be downloaded (the development machine), `invoke build-image` overrides base_image_url/base_image_checksum
# with the local base from `invoke build-base --os debian-12`.
os_name              = "debian-12"
os_family            = "debian"
os_distro            = "debian"
os_version           = "12"
guest_python_version = "3.11.2"
guest_glibc_version  = "2.36"
cloud_user           = "debian"
base_image_url       = "https://cloud.debian.org/images/cloud/bookworm/20230802-1460/debian-12-genericcloud-amd64-20230802-1460.qcow2"
base_image_checksum  = "sha512:5baa9145e87b21b4523d07a02b1374e30ab9cef301b6e92f519d6411a9ce996d7817b746005854343cdcb17cc2488b9f07727b8a64d17e440bd7cd18eac7f4ef"
