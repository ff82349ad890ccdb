#!/usr/bin/env bash
# Prepares the Python venv the tests use (target/sdk-venv: the OpenAI SDK suite, pytest,
# and aiosmtpd for the email tests) and prints its interpreter's path.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in
  /*) ;;
  *) target="$root/$target" ;;
esac
venv="$target/sdk-venv"
# A venv whose interpreter has gone (python upgraded, directory moved) is rebuilt.
if [[ -d "$venv" ]] && ! "$venv/bin/python" -c 'pass' 2>/dev/null; then
  rm -rf "$venv"
fi
if [[ ! -d "$venv" ]]; then
  python3 -m venv "$venv" >&2 || {
    echo "python3 -m venv failed; on Debian/Ubuntu install python3-venv" >&2
    exit 1
  }
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/tests/sdk/python/requirements.txt" >&2
echo "$venv/bin/python"
