#!/usr/bin/env bash
# Configures and builds Weir into build/ (ccache is used when present): everything, or the
# targets given as arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" ${1:+--target "$@"}
