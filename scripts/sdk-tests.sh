#!/usr/bin/env bash
# Runs the official OpenAI SDKs (Python and Node) against a real Tollgate.
#
# Builds the gateway and the `with-gateway` harness, prepares a Python venv
# (target/sdk-venv) and the Node packages (tests/sdk/node/node_modules, from the
# lockfile), then runs each suite against its own freshly started gateway.
# Needs only cargo, python3 (with venv and pip), node and npm. Runnable from any cwd.
#
# Exit status: 0 when both suites pass; 1 if either fails (both always run).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in
  /*) ;;
  *) target="$root/$target" ;;
esac
venv="$target/sdk-venv"
harness="$target/debug/with-gateway"
tollgate="$target/debug/tollgate"

step() { printf '\n==> %s\n' "$*" >&2; }

step "building tollgate and with-gateway"
cargo build -p tollgate -p tollgate-testkit --bins

step "preparing the Python venv at ${venv#"$root"/}"
scripts/python-venv.sh >/dev/null

step "installing the Node packages (npm ci)"
(cd tests/sdk/node && npm ci --no-audit --no-fund)

failed=()

step "Python SDK suite"
if "$harness" --tollgate "$tollgate" -- \
  "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/sdk/python; then :; else
  failed+=("python")
fi

step "Node SDK suite"
if "$harness" --tollgate "$tollgate" -- node --test --test-reporter=spec tests/sdk/node/; then :; else
  failed+=("node")
fi

if ((${#failed[@]})); then
  step "FAILED: ${failed[*]}"
  exit 1
fi
step "SDK suites passed"
