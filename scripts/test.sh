#!/usr/bin/env bash
# The project's test command (the README's second command; .ci/run calls it).
# Runs: the architecture check, every Rust test (SQLite and PostgreSQL), and the
# official OpenAI SDK suites (Python and Node) against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> architecture: the data plane must not depend on a SQL driver"
if cargo tree -p tollgate-proxy -e normal --prefix none | grep -qE '^sqlx'; then
  echo "tollgate-proxy depends on sqlx: the hot path must never reach SQL" >&2
  exit 1
fi

echo "==> Python venv (aiosmtpd for the email tests, the OpenAI SDK suite)"
# Set, it makes the email tests fail rather than skip when aiosmtpd is missing.
TOLLGATE_TEST_PYTHON="$(scripts/python-venv.sh)"
export TOLLGATE_TEST_PYTHON

echo "==> headless Chromium for the dashboard's browser tests"
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium chromium-driver
fi
# Set, it makes the browser tests fail rather than skip when Chromium is missing.
export TOLLGATE_BROWSER_TESTS=required
# Set, it makes the real-model tests (llama.cpp + SmolLM2 from the venv) fail rather than skip.
export TOLLGATE_REAL_MODEL_TESTS=required

echo "==> Rust tests (SQLite; PostgreSQL at \${TOLLGATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres})"
cargo nextest run --workspace --no-fail-fast

echo "==> official SDK suites"
scripts/sdk-tests.sh
