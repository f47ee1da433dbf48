#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for Gatehouse.
#   scripts/setup.sh          build and test needs (cmake, a C compiler, redis-server: the shared
#                             rate-limit tests start their own on loopback; postgresql: the
#                             issuer's storage tests initdb and start their own server, from
#                             /usr/lib/postgresql/<version>/bin, so the package's own cluster and
#                             service, if apt starts them, are never used)
#   scripts/setup.sh bench    plus the benchmark peers (wrk, nginx-light, haproxy), h2load
#                             (nghttp2-client: benches/run.sh's fixed-rate latency, TLS handshake
#                             and HTTP/2 runs), openssl (benches/auth.sh derives HAProxy's
#                             public key file with it; benches/run.sh makes its certificates)
#                             and valgrind (benches/instructions.sh counts instructions)
set -euo pipefail

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null || need+=(gcc)
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || need+=(redis-server)
command -v initdb >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null ||
  need+=(postgresql)
if [ "${1:-}" = "bench" ]; then
  command -v wrk >/dev/null || need+=(wrk)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
  command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
  command -v openssl >/dev/null || need+=(openssl)
  command -v h2load >/dev/null || need+=(nghttp2-client)
  command -v valgrind >/dev/null || need+=(valgrind)
fi
[ ${#need[@]} -eq 0 ] && exit 0

echo "setup: installing ${need[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
