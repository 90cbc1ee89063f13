#!/bin/sh
# Trust an extra CA bundle during the build only (an intercepting proxy); 90-cleanup.sh removes it.
set -eu

bundle=${LCS_BUILD_DIR:?}/extra-ca.pem
if [ -s "$bundle" ]; then
    install -m 0644 "$bundle" /usr/local/share/ca-certificates/lcs-build-extra-ca.crt
    update-ca-certificates >/dev/null
    echo "build CA: trusted for the build"
else
    echo "build CA: none given"
fi
