#!/usr/bin/env bash
# Installs the system packages Keel needs to build and test on a fresh Debian 12 machine.
# Idempotent: skips apt when everything is already present.
set -euo pipefail
need=()
for pkg in build-essential pkg-config libclang-dev clang kcat python3-pip python3-venv curl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
