#!/usr/bin/env bash
# Builds the rcloud executable (server, CLI and Terraform provider in one file) for Linux x86-64,
# with the git commit stamped in (`dist/rcloud version` prints `rcloud <version> (<sha>)`).
#
#   scripts/build.sh [--outfile PATH]
#
# The commit is `git rev-parse --short=12 HEAD`, with `-dirty` appended when the work tree has
# uncommitted changes; outside a git checkout, RCLOUD_GIT_COMMIT from the environment, else "dev".
# Prints the path of the executable on stdout.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$REPO/dist/rcloud"
while (($#)); do
  case "$1" in
    --outfile) OUT="${2:?--outfile needs a path}"; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "build: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

BUN="${BUN:-$REPO/node_modules/.bin/bun}"
[[ -x $BUN ]] || BUN="$(command -v bun || true)"
[[ -n $BUN ]] || { echo "build: bun not found (npm install, or set BUN=)" >&2; exit 1; }

if COMMIT="$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null)"; then
  # A binary built from uncommitted changes must not claim to be that commit.
  if [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    COMMIT="$COMMIT-dirty"
  fi
else
  COMMIT="${RCLOUD_GIT_COMMIT:-dev}"
fi
# The value goes into a JS string literal: keep it to characters that need no escaping.
[[ $COMMIT =~ ^[A-Za-z0-9._-]+$ ]] || { echo "build: bad commit id '$COMMIT'" >&2; exit 1; }

mkdir -p "$(dirname "$OUT")"
cd "$REPO"
# --define replaces the expression `process.env.RCLOUD_GIT_COMMIT` at build time (src/util/version.ts).
"$BUN" build --compile --target=bun-linux-x64 \
  --define "process.env.RCLOUD_GIT_COMMIT=\"$COMMIT\"" \
  src/main.ts --outfile "$OUT" >&2
echo "$OUT"
