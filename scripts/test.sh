#!/usr/bin/env bash
# Runs every test of the workspace: unit tests and end-to-end tests on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo test --workspace "$@"
