#!/bin/sh
# GRUB on the serial console. A VM without a video device (Nova without VNC/SPICE) hangs in GRUB's gfxterm
# and never boots; Debian's official cloud images use exactly these settings.
set -eu

mkdir -p /etc/default/grub.d
cat > /etc/default/grub.d/99-lcs-serial-console.cfg <<'GRUB'
GRUB_TIMEOUT=1
GRUB_TIMEOUT_STYLE=menu
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_CMDLINE_LINUX_DEFAULT="console=tty0 console=ttyS0,115200"
GRUB
update-grub 2>&1 | grep -v '^Found' || true
grep -q '^terminal_output.*serial' /boot/grub/grub.cfg
