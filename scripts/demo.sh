#!/usr/bin/env bash
# Starts the demo stack from the shipped conf/: the gateway on :8080 (HTTP) and :8443 (TLS, h2),
# admin on 127.0.0.1:9090, two echo upstreams on 127.0.0.1:9001/9002, the token issuer on
# 127.0.0.1:9400 and the policy service on 127.0.0.1:9500, all in the same process.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release -- --config conf/gatehouse.yaml demo "$@"
