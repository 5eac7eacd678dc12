#!/usr/bin/env bash
# Regenerates the Python modules of the wire contract next to the .proto files.
# The generator is pinned exactly (see the `dev` extra): CI re-runs this and fails on drift.
set -euo pipefail
cd "$(dirname "$0")"
python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. lmdock/v1/*.proto
