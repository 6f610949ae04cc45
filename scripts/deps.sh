#!/usr/bin/env bash
# Installs the Debian 12 packages Weir builds and tests with, when any is missing.
set -euo pipefail
packages=(
  g++ cmake ninja-build pkg-config ccache
  libcaf-dev capnproto libcapnp-dev liblmdb-dev lmdb-utils libspdlog-dev catch2
  libtomlplusplus-dev libcli11-dev libsimdjson-dev libfast-float-dev libxxhash-dev
  librapidcheck-dev libcpp-httplib-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
