#!/usr/bin/env bash
# Install the benchmark's Node packages (socket.io, socket.io-client, ws, jsonwebtoken) with `npm ci`,
# only when they are missing or package-lock.json changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
stamp=node_modules/.bench-install-stamp
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ -d node_modules && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
command -v node >/dev/null || { echo "bench/install.sh: node is not on PATH" >&2; exit 1; }
command -v npm >/dev/null || { echo "bench/install.sh: npm is not on PATH" >&2; exit 1; }
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
