#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for Gatehouse.
#   scripts/setup.sh          build and test needs (cmake, a C compiler, redis-server: the shared
#                             rate-limit tests start their own on loopback)
#   scripts/setup.sh bench    plus the benchmark peers (wrk, nginx-light, haproxy) and openssl
#                             (benches/auth.sh derives HAProxy's public key file with it)
set -euo pipefail

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null || need+=(gcc)
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || need+=(redis-server)
if [ "${1:-}" = "bench" ]; then
  command -v wrk >/dev/null || need+=(wrk)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
  command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
  command -v openssl >/dev/null || need+=(openssl)
fi
[ ${#need[@]} -eq 0 ] && exit 0

echo "setup: installing ${need[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
