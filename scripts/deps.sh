#!/usr/bin/env bash
# Installs the Debian 12 packages Weir builds and tests with, when any is missing.
set -euo pipefail
packages=(
  g++ cmake ninja-build pkg-config ccache
  libcaf-dev capnproto libcapnp-dev liblmdb-dev lmdb-utils libspdlog-dev catch2
  libtomlplusplus-dev libcli11-dev libsimdjson-dev libfast-float-dev libxxhash-dev
  librapidcheck-dev libcpp-httplib-dev libhiredis-dev libssl-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# With --tests: the servers and clients the tests start on loopback (prometheus: promtool and a
# real scrape of weir serve; redis-server: the Redis Streams source; chromium: the status page
# in a headless browser; openssl: the certificate commands of docs/cluster.md); their
# recommended extras are not needed.
servers=()
if [ "${1:-}" = "--tests" ]; then servers=(prometheus redis-server chromium openssl); fi
missing_servers=()
for p in ${servers[@]+"${servers[@]}"}; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing_servers+=("$p")
done
if ((${#missing[@]} + ${#missing_servers[@]})); then
  echo "installing: ${missing[*]} ${missing_servers[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ((${#missing_servers[@]})); then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      "${missing_servers[@]}" >/dev/null
  fi
fi
