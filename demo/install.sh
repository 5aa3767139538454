#!/usr/bin/env bash
# Install the demo page's browser bundle (socket.io-client) with `npm ci`, only when
# node_modules is missing or package-lock.json changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

stamp=node_modules/.demo-install-stamp
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
bundle=node_modules/socket.io-client/dist/socket.io.min.js

if [[ -f "$stamp" && -f "$bundle" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

command -v npm >/dev/null || { echo "demo/install.sh: npm is not on PATH (needs Node 20+)" >&2; exit 1; }
echo "demo: npm ci (socket.io-client browser bundle)..." >&2
npm ci --no-audit --no-fund --loglevel=error
test -f "$bundle" || { echo "demo/install.sh: $bundle is missing after npm ci" >&2; exit 1; }
echo "$want" > "$stamp"
