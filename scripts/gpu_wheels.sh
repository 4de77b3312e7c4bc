#!/usr/bin/env bash
# Download, on a machine with a package registry, the wheels the GPU machine lacks for extract -> train -> generate
# (bench/gpu_kit.py KIT, pinned to this environment's versions) for its Python 3.12 on x86-64 Linux, into .whl/
# (git-ignored), and print the total. bench/gpu.sh installs them there from the folder, without a registry.
#   scripts/gpu_wheels.sh            # uses .venv/bin/python for the versions, pip for the download
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=${WHEELS:-.whl}
LIMIT_MIB=64  # what one run on the GPU machine may carry, the repository included
rm -rf "$DEST.partial"
mkdir -p "$DEST.partial"
"$PY" -m bench.gpu_kit > "$DEST.partial/requirements.txt"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    -r "$DEST.partial/requirements.txt" -d "$DEST.partial"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"  # whole or not at all
ls -l "$DEST"/*.whl | awk '{printf "%10d  %s\n", $5, $9}'
total=$(du -cb "$DEST"/*.whl | tail -n 1 | cut -f 1)
repo=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f 1)
awk -v t="$total" -v r="$repo" -v lim="$LIMIT_MIB" 'BEGIN {
    printf "wheels: %.1f MiB; with the tracked repository (%.1f MiB): %.1f MiB of the %d MiB a run may carry\n",
        t / 1048576, r / 1048576, (t + r) / 1048576, lim
    exit (t + r > lim * 1048576) }'
