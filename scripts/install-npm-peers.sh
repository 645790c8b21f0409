#!/usr/bin/env bash
# Pre-installs the npm packages that tests run as real peers, into the npx cache, so
# that tests start them offline-fast. Safe to run repeatedly.
set -euo pipefail
packages=(
  "@modelcontextprotocol/server-everything"
  "@modelcontextprotocol/server-filesystem"
)
for pkg in "${packages[@]}"; do
  npm exec --yes --package="$pkg" -- true >/dev/null 2>&1 || echo "warning: could not pre-install $pkg" >&2
done
