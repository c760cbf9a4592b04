#!/usr/bin/env bash
# Builds the Terraform provider (the rcloud executable, multi-call) and installs it where
# Terraform finds it without a registry: an unpacked filesystem mirror for the source
# address kdevops/rcloud. Prints the CLI configuration for the mirror and for dev_overrides.
#
#   scripts/install-provider.sh [--dev] [--mirror DIR]
#
#   --dev         install a wrapper that execs `bun src/main.ts terraform-provider` (no build;
#                 picks up source changes at once). Default: `bun build --compile` to dist/rcloud.
#   --mirror DIR  mirror root (default: $RCLOUD_TF_MIRROR, else ~/.terraform.d/plugins, which
#                 Terraform searches by itself when the CLI config has no provider_installation).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV=0
MIRROR="${RCLOUD_TF_MIRROR:-$HOME/.terraform.d/plugins}"
while (($#)); do
  case "$1" in
    --dev) DEV=1 ;;
    --mirror) MIRROR="${2:?--mirror needs a directory}"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install-provider: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$MIRROR"
MIRROR="$(cd "$MIRROR" && pwd)"

VERSION="$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$REPO/package.json" | head -1)"
OS="$(uname -s | tr '[:upper:]' '[:lower:]')"
case "$(uname -m)" in
  x86_64|amd64) ARCH=amd64 ;;
  aarch64|arm64) ARCH=arm64 ;;
  *) echo "install-provider: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac
BUN="${BUN:-$REPO/node_modules/.bin/bun}"
[[ -x $BUN ]] || BUN="$(command -v bun || true)"
[[ -n $BUN ]] || { echo "install-provider: bun not found (npm install, or set BUN=)" >&2; exit 1; }
BUN="$(readlink -f "$BUN")"

PKG="$MIRROR/registry.terraform.io/kdevops/rcloud/$VERSION/${OS}_${ARCH}"
EXE="$PKG/terraform-provider-rcloud_v$VERSION"
mkdir -p "$PKG"
# Terraform runs the first terraform-provider-rcloud* in the directory: leave only ours.
rm -f "$PKG"/terraform-provider-rcloud*

if ((DEV)); then
  # exec, so Terraform's signals and SIGKILL reach the provider itself, and no child keeps
  # Terraform's stdout/stderr pipes open after it is gone.
  cat >"$EXE" <<WRAPPER
#!/bin/sh
exec "$BUN" "$REPO/src/main.ts" terraform-provider "\$@"
WRAPPER
  chmod 0755 "$EXE"
else
  (cd "$REPO" && "$BUN" build --compile src/main.ts --outfile dist/rcloud >&2)
  cp "$REPO/dist/rcloud" "$EXE"
  chmod 0755 "$EXE"
fi

cat <<INFO
Installed $( ((DEV)) && echo "development wrapper" || echo "compiled provider") kdevops/rcloud $VERSION:
  $EXE

Use it with terraform init (offline) through this CLI configuration (TF_CLI_CONFIG_FILE=FILE);
if the package changed since the last init, run terraform init -upgrade:

provider_installation {
  filesystem_mirror {
    path    = "$MIRROR"
    include = ["registry.terraform.io/kdevops/rcloud"]
  }
  direct {
    exclude = ["registry.terraform.io/kdevops/rcloud"]
  }
}

Or, for development, skip terraform init altogether with dev_overrides:

provider_installation {
  dev_overrides {
    "kdevops/rcloud" = "$PKG"
  }
  direct {}
}
INFO
