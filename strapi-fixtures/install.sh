#!/usr/bin/env bash
# Install the Strapi fixture's node_modules with `npm ci`, only when they are missing or
# package-lock.json changed since the last install. Quiet when there is nothing to do.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

stamp=node_modules/.fixture-install-stamp
want="$(sha256sum package-lock.json | cut -d' ' -f1)"

if [[ -d node_modules && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

command -v node >/dev/null || { echo "install.sh: node is not on PATH (Strapi 5 needs Node 20+)" >&2; exit 1; }
command -v npm >/dev/null || { echo "install.sh: npm is not on PATH" >&2; exit 1; }

echo "strapi-fixtures: npm ci (this takes a few minutes on a fresh clone)..." >&2
start=$SECONDS
npm ci --no-audit --no-fund --loglevel=error
# better-sqlite3 is a native module: fail here, not at Strapi's first start, if it did not build.
node -e "new (require('better-sqlite3'))(':memory:').close()"
echo "$want" > "$stamp"
echo "strapi-fixtures: installed in $((SECONDS - start)) s" >&2
