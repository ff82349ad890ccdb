#!/usr/bin/env bash
# Tollgate throughput/latency benchmark. In one run on one box it measures
#   (a) the fake upstream directly, (b) a bare hyper forwarder in front of it, and
#   (c) Tollgate in front of it, and optionally (d) Tollgate translating to a fake Anthropic
#   and (e) Tollgate relaying /v1/messages to it natively,
# with wrk POSTing a small chat completion at several connection counts, then prints a
# Markdown table and writes it to bench/results/latest.md. See bench/README.md.
#
# Environment:
#   BENCH_DURATION     length of each measured run (default 10s)
#   BENCH_WARMUP       warm-up before each measured run (default 2s)
#   BENCH_CONNECTIONS  connection counts (default "1 32 128")
#   BENCH_TARGETS      which targets to run (default "fake forwarder tollgate"); add
#                      "anthropic" for (d): the same Tollgate and key, a model whose channel
#                      is a fake Anthropic (Messages API), measured right after (c); add
#                      "messages" for (e): the same model asked over POST /v1/messages
#                      (relayed natively, no translation), measured right after (d)
#   BENCH_SKIP_BUILD   set to 1 to use the binaries already in target/release
#   BENCH_KEEP         set to 1 to keep the temp dir (configs, server logs)
#   BENCH_SCOPED_KEY   set to 1 to give Tollgate's key every scope (IP allowlist, model
#                      list, endpoint, provider), so that every check runs on each request
#   BENCH_LIMITED_KEY  set to 1 to give the key a budget, a token quota, RPM and TPM (all
#                      far above what the run uses), so that every request reserves,
#                      checks both limiters and settles
set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${BENCH_DURATION:-10s}"
WARMUP="${BENCH_WARMUP:-2s}"
CONNECTIONS="${BENCH_CONNECTIONS:-1 32 128}"
TARGETS="${BENCH_TARGETS:-fake forwarder tollgate}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
RESULTS="$ROOT/bench/results/latest.md"
CHAT_PATH="/v1/chat/completions"
CHAT_BODY='{"model":"bench-model","messages":[{"role":"user","content":"hello there"}]}'
# (d): the same request for the model served through the Anthropic adapter.
ANTHROPIC_BODY='{"model":"bench-model-anthropic","messages":[{"role":"user","content":"hello there"}]}'
# (e): the same conversation for the same model in the Messages API's own shape, which
# requires max_tokens (64 is above the fake's 5-word reply, so the answer is the same as (d)'s).
MESSAGES_PATH="/v1/messages"
MESSAGES_BODY='{"model":"bench-model-anthropic","max_tokens":64,"messages":[{"role":"user","content":"hello there"}]}'
# Anthropic's SDKs send it on every request; Tollgate accepts it and sends its own upstream.
MESSAGES_VERSION="2023-06-01"
# The fake upstream accepts any non-empty bearer token.
FAKE_AUTH="Bearer sk-bench"

WORK="$(mktemp -d -t tollgate-bench.XXXXXX)"
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'bench: %s\n' "$*" >&2
  exit 1
}
wants() { [[ " $TARGETS " == *" $1 "* ]]; }
# (c), (d) and (e) all need the gateway (one process serves the three).
wants_tollgate() { wants tollgate || wants anthropic || wants messages; }

# extra_headers PATH: the headers a client of that API sends besides Content-Type and
# Authorization, one "Name: value" a line (none for the chat completions API).
extra_headers() {
  if [[ "$1" == "$MESSAGES_PATH" ]]; then
    echo "anthropic-version: $MESSAGES_VERSION"
  fi
}

# --- 1. load generator -----------------------------------------------------------------------

TOOL=""
ensure_load_tool() {
  if command -v wrk >/dev/null 2>&1; then
    TOOL=wrk
    return
  fi
  log "installing wrk"
  if command -v apt-get >/dev/null 2>&1 &&
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } \
      >"$WORK/apt.log" 2>&1 &&
    command -v wrk >/dev/null 2>&1; then
    TOOL=wrk
    return
  fi
  log "apt could not install wrk; falling back to oha"
  if ! command -v oha >/dev/null 2>&1; then
    cargo install oha --locked --quiet || die "neither wrk nor oha could be installed"
  fi
  command -v jq >/dev/null 2>&1 || command -v python3 >/dev/null 2>&1 ||
    die "oha output needs jq or python3 to parse"
  TOOL=oha
}

# --- helpers ---------------------------------------------------------------------------------

# start_server NAME CMD...: runs CMD in the background, waits for its
# "listening on http://IP:PORT" line, and sets SERVER_PID and SERVER_URL.
SERVER_PID=""
SERVER_URL=""
start_server() {
  local name=$1 line="" _
  shift
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 1 200); do
    line="$(grep -m1 '^listening on http://' "$WORK/$name.out" || true)"
    [[ -n "$line" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || {
      cat "$WORK/$name.err" >&2
      die "$name exited during start-up"
    }
    sleep 0.05
  done
  [[ -n "$line" ]] || die "$name did not report its address within 10 s"
  SERVER_URL="${line#listening on }"
}

# http_status BASE_URL AUTH [BODY [PATH]]: the status code of one POST (000 if none); BODY
# and PATH default to the chat completion's.
http_status() {
  local CHAT_BODY="${3:-$CHAT_BODY}" CHAT_PATH="${4:-$CHAT_PATH}" extra=() header
  while IFS= read -r header; do
    [[ -n "$header" ]] && extra+=("$header")
  done < <(extra_headers "$CHAT_PATH")
  if command -v curl >/dev/null 2>&1; then
    local curl_headers=()
    for header in "${extra[@]}"; do
      curl_headers+=(-H "$header")
    done
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST "$1$CHAT_PATH" \
      -H 'Content-Type: application/json' -H "Authorization: $2" "${curl_headers[@]}" \
      --data "$CHAT_BODY" || true
    return
  fi
  # No curl: one HTTP/1.1 request over bash's /dev/tcp.
  local hostport="${1#http://}" fd line more=""
  hostport="${hostport%%/*}"
  for header in "${extra[@]}"; do
    more+="$header"$'\r\n'
  done
  if ! exec {fd}<>"/dev/tcp/${hostport%:*}/${hostport##*:}"; then
    echo 000
    return
  fi
  printf 'POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAuthorization: %s\r\n%sContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "$CHAT_PATH" "$hostport" "$2" "$more" "${#CHAT_BODY}" "$CHAT_BODY" >&"$fd"
  IFS= read -r -t 5 line <&"$fd" || line=""
  exec {fd}>&-
  line="${line#* }"
  echo "${line:0:3}" | grep -E '^[0-9]{3}$' || echo 000
}

# to_us VALUE: wrk's "123.45us" / "1.23ms" / "1.02s" / "1.00m" in microseconds.
to_us() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    if (u == "us") f = 1; else if (u == "ms") f = 1000; else if (u == "s") f = 1000000;
    else if (u == "m") f = 60000000; else f = -1;
    if (f < 0) print "nan"; else printf "%.1f\n", n * f }'
}

# human_us MICROSECONDS: "87 µs" or "1.23 ms".
human_us() {
  awk -v v="$1" 'BEGIN { if (v == "nan") print "n/a"; else if (v < 1000) printf "%.0f µs\n", v; else printf "%.2f ms\n", v / 1000 }'
}

# load BASE_URL AUTH CONNECTIONS DURATION [BODY [PATH]]: prints "RPS P50_US P99_US ERRORS";
# BODY and PATH default to the chat completion's.
load() {
  local CHAT_BODY="${5:-$CHAT_BODY}" CHAT_PATH="${6:-$CHAT_PATH}"
  local url="$1$CHAT_PATH" auth=$2 conns=$3 duration=$4 out header extra=()
  local threads=$((conns < 2 ? 1 : 2))
  while IFS= read -r header; do
    [[ -n "$header" ]] && extra+=("$header")
  done < <(extra_headers "$CHAT_PATH")
  if [[ "$TOOL" == wrk ]]; then
    local script="$WORK/chat.lua"
    # wrk's Lua cannot read our shell variables, so the script is written per target.
    {
      echo 'wrk.method = "POST"'
      printf 'wrk.body = %s\n' "[[${CHAT_BODY}]]"
      echo 'wrk.headers["Content-Type"] = "application/json"'
      printf 'wrk.headers["Authorization"] = "%s"\n' "$auth"
      for header in "${extra[@]}"; do
        printf 'wrk.headers["%s"] = "%s"\n' "${header%%: *}" "${header#*: }"
      done
    } >"$script"
    out="$(wrk -t"$threads" -c"$conns" -d"$duration" --latency -s "$script" "$url")"
    echo "$out" >>"$WORK/wrk.log"
    local rps p50 p99 non2xx socket
    rps="$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")"
    p50="$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")"
    p99="$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
    non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")"
    socket="$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' <<<"$out")"
    echo "${rps:-0} $p50 $p99 $((${non2xx:-0} + ${socket:-0}))"
  else
    local format=(--output-format json) oha_headers=()
    oha --help 2>/dev/null | grep -q -- '--output-format' || format=(--json)
    for header in "${extra[@]}"; do
      oha_headers+=(-H "$header")
    done
    out="$(oha --no-tui "${format[@]}" -z "$duration" -c "$conns" -m POST \
      -H 'Content-Type: application/json' -H "Authorization: $auth" "${oha_headers[@]}" \
      -d "$CHAT_BODY" "$url")"
    echo "$out" >>"$WORK/oha.log"
    if command -v jq >/dev/null 2>&1; then
      jq -r '[.summary.requestsPerSec, (.latencyPercentiles.p50 * 1e6), (.latencyPercentiles.p99 * 1e6),
              ([.statusCodeDistribution | to_entries[] | select(.key | startswith("2") | not) | .value] | add // 0)
              + ([.errorDistribution // {} | to_entries[] | .value] | add // 0)] | @tsv' <<<"$out" | tr '\t' ' '
    else
      python3 -c 'import json,sys
d = json.load(sys.stdin); p = d["latencyPercentiles"]
bad = sum(v for k, v in d.get("statusCodeDistribution", {}).items() if not k.startswith("2"))
bad += sum(d.get("errorDistribution", {}).values())
print(d["summary"]["requestsPerSec"], p["p50"] * 1e6, p["p99"] * 1e6, bad)' <<<"$out"
    fi
  fi
}

# peak_rss_kb PID / rss_kb PID: VmHWM / VmRSS from /proc, in kB.
peak_rss_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB\n", k / 1024 }'; }

# --- 2. build --------------------------------------------------------------------------------

ensure_load_tool
TOLLGATE_PROBLEM=""
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building release binaries"
  if wants_tollgate; then
    # One build for all three; if the gateway does not compile, still measure (a) and (b).
    if ! cargo build --release --quiet -p tollgate -p tollgate-testkit -p tollgate-bench; then
      TOLLGATE_PROBLEM="cargo build --release -p tollgate failed"
      log "$TOLLGATE_PROBLEM; going on without it"
      cargo build --release --quiet -p tollgate-testkit -p tollgate-bench
    fi
  else
    cargo build --release --quiet -p tollgate-testkit -p tollgate-bench
  fi
fi
for bin in fake-upstream bare-forwarder; do
  [[ -x "$BIN/$bin" ]] || die "missing $BIN/$bin"
done

# --- 3. servers ------------------------------------------------------------------------------

# Per target: base URL, Authorization, server PID, idle RSS, and (when not the chat
# completion's) request body and path.
declare -A URL AUTH PID IDLE_RSS BODY REQ_PATH
start_server fake "$BIN/fake-upstream" --no-record
URL[fake]=$SERVER_URL
AUTH[fake]=$FAKE_AUTH
PID[fake]=$SERVER_PID
log "fake upstream at ${URL[fake]}"

ANTHROPIC_CONFIG=""
# (d) and (e) both reach the same fake Anthropic, through the same model.
if wants anthropic || wants messages; then
  start_server fake-anthropic "$BIN/fake-upstream" --no-record --anthropic
  PID[fake-anthropic]=$SERVER_PID
  log "fake Anthropic upstream at $SERVER_URL"
  ANTHROPIC_CONFIG="
[[providers]]
name = \"fake-anthropic\"
kind = \"anthropic\"
base_url = \"$SERVER_URL\"
api_key_env = \"BENCH_UPSTREAM_KEY\"

[[models]]
id = \"bench-model-anthropic\"
type = \"chat\"
input_price_per_mtok = 0.15
output_price_per_mtok = 0.60
channels = [{ provider = \"fake-anthropic\", model = \"bench-model\" }]
"
fi

if wants forwarder; then
  start_server forwarder "$BIN/bare-forwarder" --upstream "${URL[fake]}"
  URL[forwarder]=$SERVER_URL
  AUTH[forwarder]=$FAKE_AUTH
  PID[forwarder]=$SERVER_PID
  log "bare forwarder at ${URL[forwarder]}"
fi

start_tollgate() {
  local cfg="$WORK/tollgate.toml" ready="$WORK/ready" key_json key status _
  [[ -x "$BIN/tollgate" ]] || {
    TOLLGATE_PROBLEM="no $BIN/tollgate binary"
    return 1
  }
  mkdir -p "$WORK/data"
  cat >"$cfg" <<EOF
listen = "127.0.0.1:0"
data_dir = "$WORK/data"

[[providers]]
name = "fake"
kind = "openai"
base_url = "${URL[fake]}/v1"
api_key_env = "BENCH_UPSTREAM_KEY"

[[models]]
id = "bench-model"
type = "chat"
input_price_per_mtok = 0.15
output_price_per_mtok = 0.60
channels = [{ provider = "fake", model = "bench-model" }]
$ANTHROPIC_CONFIG
EOF
  BENCH_UPSTREAM_KEY=sk-fake "$BIN/tollgate" serve --config "$cfg" --ready-file "$ready" \
    >"$WORK/tollgate.out" 2>"$WORK/tollgate.err" &
  PID[tollgate]=$!
  PIDS+=("${PID[tollgate]}")
  for _ in $(seq 1 300); do
    [[ -s "$ready" ]] && break
    kill -0 "${PID[tollgate]}" 2>/dev/null || {
      tail -n 20 "$WORK/tollgate.err" >&2 || true
      TOLLGATE_PROBLEM="tollgate serve exited during start-up (see its stderr above)"
      return 1
    }
    sleep 0.1
  done
  [[ -s "$ready" ]] || {
    TOLLGATE_PROBLEM="tollgate serve wrote no ready file within 30 s"
    return 1
  }
  URL[tollgate]="$(tr -d '[:space:]' <"$ready")"
  URL[tollgate]="${URL[tollgate]%/}"
  log "tollgate at ${URL[tollgate]}"

  local scopes=()
  if [[ "${BENCH_SCOPED_KEY:-0}" == 1 ]]; then
    scopes=(--ip 127.0.0.1/32 --ip ::1 --model bench-model --endpoint /v1/chat/completions --provider fake)
    # The scopes must still let (d) and (e) through, or they would be measured as 403s.
    if [[ -n "$ANTHROPIC_CONFIG" ]]; then
      scopes+=(--model bench-model-anthropic --provider fake-anthropic)
    fi
    if wants messages; then
      scopes+=(--endpoint "$MESSAGES_PATH")
    fi
  fi
  if [[ "${BENCH_LIMITED_KEY:-0}" == 1 ]]; then
    scopes+=(--budget-usd 1000000 --token-quota 1000000000000 --rpm 1000000000 --tpm 1000000000000)
  fi
  if ! key_json="$("$BIN/tollgate" keys create --config "$cfg" --name bench --json "${scopes[@]}" 2>"$WORK/keys.err")"; then
    cat "$WORK/keys.err" >&2
    TOLLGATE_PROBLEM="tollgate keys create failed (see above)"
    return 1
  fi
  key="$(sed -n 's/.*"key"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' <<<"$key_json")"
  [[ -n "$key" ]] || {
    TOLLGATE_PROBLEM="no \"key\" in the output of tollgate keys create: $key_json"
    return 1
  }
  AUTH[tollgate]="Bearer $key"
  # The server picks new keys up within about a second.
  for _ in $(seq 1 50); do
    status="$(http_status "${URL[tollgate]}" "${AUTH[tollgate]}")"
    [[ "$status" != 401 ]] && break
    sleep 0.1
  done
  return 0
}

if wants_tollgate && [[ -z "$TOLLGATE_PROBLEM" ]]; then
  if start_tollgate; then
    IDLE_RSS[tollgate]="$(rss_kb "${PID[tollgate]}")"
    # (d) and (e) are the same server and key, asked for the model behind the Anthropic
    # channel: (d) as a chat completion (translated), (e) over /v1/messages (native).
    for target in anthropic messages; do
      URL[$target]=${URL[tollgate]}
      AUTH[$target]=${AUTH[tollgate]}
      PID[$target]=${PID[tollgate]}
    done
    BODY[anthropic]=$ANTHROPIC_BODY
    BODY[messages]=$MESSAGES_BODY
    REQ_PATH[messages]=$MESSAGES_PATH
  else
    log "tollgate not benchmarked: $TOLLGATE_PROBLEM"
  fi
fi

# --- 4./5. runs ------------------------------------------------------------------------------

declare -A RPS P50 P99 ERRS PEAK
RUN=()
# Tollgate's targets: one server, so its peak RSS is read after the last of them ran.
is_tollgate() { [[ "$1" == tollgate || "$1" == anthropic || "$1" == messages ]]; }
for target in fake forwarder tollgate anthropic messages; do
  if ! wants "$target" || [[ -z "${URL[$target]:-}" ]]; then
    continue
  fi
  status="$(http_status "${URL[$target]}" "${AUTH[$target]:-}" "${BODY[$target]:-}" "${REQ_PATH[$target]:-}")"
  if [[ "$status" != 200 ]]; then
    is_tollgate "$target" || die "$target answers the benchmark request with HTTP $status, not 200"
    TOLLGATE_PROBLEM="it answers the $target benchmark request with HTTP $status, not 200"
    log "tollgate not benchmarked: $TOLLGATE_PROBLEM"
    continue
  fi
  RUN+=("$target")
  for conns in $CONNECTIONS; do
    log "$target, $conns connection(s): warm-up $WARMUP, run $DURATION"
    load "${URL[$target]}" "${AUTH[$target]}" "$conns" "$WARMUP" "${BODY[$target]:-}" "${REQ_PATH[$target]:-}" >/dev/null
    result="$(load "${URL[$target]}" "${AUTH[$target]}" "$conns" "$DURATION" "${BODY[$target]:-}" "${REQ_PATH[$target]:-}")"
    read -r rps p50 p99 errs <<<"$result"
    RPS[$target,$conns]=$rps
    P50[$target,$conns]=$p50
    P99[$target,$conns]=$p99
    ERRS[$target,$conns]=$errs
  done
  PEAK[$target]="$(peak_rss_kb "${PID[$target]}")"
done
# The fakes serve every target's traffic, so their peaks are taken last.
PEAK[fake]="$(peak_rss_kb "${PID[fake]}")"
if [[ -n "${PID[fake-anthropic]:-}" ]]; then
  PEAK[fake-anthropic]="$(peak_rss_kb "${PID[fake-anthropic]}")"
fi

# --- 6. report -------------------------------------------------------------------------------

describe() {
  case $1 in
    fake) echo "(a) fake upstream, direct" ;;
    forwarder) echo "(b) bare hyper forwarder" ;;
    tollgate) echo "(c) Tollgate" ;;
    anthropic) echo "(d) Tollgate, Anthropic adapter" ;;
    messages) echo "(e) Tollgate, /v1/messages native" ;;
  esac
}

commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit+dirty"
cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown)"
if [[ "$TOOL" == wrk ]]; then
  tool_version="$( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $1, $2 }')"
else
  tool_version="$(oha --version 2>/dev/null || echo oha)"
fi

# The Anthropic adapter's cost: (d) against (c), same server, key and load, run back to back.
adapter_report() {
  local conns
  echo
  echo "Anthropic adapter, (d) against (c): the same Tollgate, key and load; (d) translates the"
  echo "request to the Messages API and the answer back to OpenAI's format."
  echo
  echo "| conns | RPS (c) | RPS (d) | RPS change | p50 (c) | p50 (d) | p50 added | p99 (c) | p99 (d) |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for conns in $CONNECTIONS; do
    [[ -n "${RPS[anthropic,$conns]:-}" && -n "${RPS[tollgate,$conns]:-}" ]] || continue
    printf '| %s | %.0f | %.0f | %s | %s | %s | %s | %s | %s |\n' "$conns" \
      "${RPS[tollgate,$conns]}" "${RPS[anthropic,$conns]}" \
      "$(awk -v a="${RPS[anthropic,$conns]}" -v b="${RPS[tollgate,$conns]}" 'BEGIN { printf "%+.1f %%", (a / b - 1) * 100 }')" \
      "$(human_us "${P50[tollgate,$conns]}")" "$(human_us "${P50[anthropic,$conns]}")" \
      "$(awk -v a="${P50[anthropic,$conns]}" -v b="${P50[tollgate,$conns]}" 'BEGIN { printf "%+.0f µs", a - b }')" \
      "$(human_us "${P99[tollgate,$conns]}")" "$(human_us "${P99[anthropic,$conns]}")"
  done
}

# change A B: A's change over B in percent; diff_us A B: A - B in µs; both "—" when either
# value is missing (a target not run), as is rps_cell / p_cell for a missing value.
change() {
  if [[ -z "$1" || -z "$2" ]]; then echo "—"; return; fi
  awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f %%", (a / b - 1) * 100 }'
}
diff_us() {
  if [[ -z "$1" || -z "$2" ]]; then echo "—"; return; fi
  awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.0f µs", a - b }'
}
rps_cell() { if [[ -z "$1" ]]; then echo "—"; else printf '%.0f' "$1"; fi; }
p_cell() { if [[ -z "$1" ]]; then echo "—"; else human_us "$1"; fi; }

# Native /v1/messages against the translated path: (e) against (d) is the translation's cost
# with everything else equal (server, key, model, upstream fake, the same 5-word answer);
# (e) against (c) is Anthropic-in/Anthropic-out against the plain OpenAI pass-through.
messages_report() {
  local conns c d e
  echo
  echo "Native /v1/messages, (e) against (d) and (c): the same Tollgate, key and load; (e) and (d)"
  echo "reach the same fake Anthropic through the same model, (e) relayed as the client wrote it,"
  echo "(d) translated from a chat completion and back; (c) is the OpenAI fake, no translation."
  echo
  echo "| conns | RPS (c) | RPS (d) | RPS (e) | RPS (e) vs (d) | RPS (e) vs (c) | p50 (c) | p50 (d) | p50 (e) | p50 (e) − (d) | p50 (e) − (c) | p99 (c) | p99 (d) | p99 (e) |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for conns in $CONNECTIONS; do
    [[ -n "${RPS[messages,$conns]:-}" ]] || continue
    c="${RPS[tollgate,$conns]:-}" d="${RPS[anthropic,$conns]:-}" e="${RPS[messages,$conns]}"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$conns" \
      "$(rps_cell "$c")" "$(rps_cell "$d")" "$(rps_cell "$e")" "$(change "$e" "$d")" "$(change "$e" "$c")" \
      "$(p_cell "${P50[tollgate,$conns]:-}")" "$(p_cell "${P50[anthropic,$conns]:-}")" \
      "$(p_cell "${P50[messages,$conns]}")" \
      "$(diff_us "${P50[messages,$conns]}" "${P50[anthropic,$conns]:-}")" \
      "$(diff_us "${P50[messages,$conns]}" "${P50[tollgate,$conns]:-}")" \
      "$(p_cell "${P99[tollgate,$conns]:-}")" "$(p_cell "${P99[anthropic,$conns]:-}")" \
      "$(p_cell "${P99[messages,$conns]}")"
  done
}

report() {
  echo "# Tollgate benchmark"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit: \`$commit\`"
  echo "- machine: $(nproc) cores ($cpu), $(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM;" \
    "load generator and servers share it"
  echo "- load: $tool_version, POST $CHAT_PATH \`$CHAT_BODY\`, $DURATION per run after a $WARMUP warm-up" \
    "(2 threads, 1 for 1 connection)"
  if [[ " ${RUN[*]} " == *" anthropic "* ]]; then
    echo "- (d): POST $CHAT_PATH \`$ANTHROPIC_BODY\`"
  fi
  if [[ " ${RUN[*]} " == *" messages "* ]]; then
    echo "- (e): POST $MESSAGES_PATH \`$MESSAGES_BODY\` with \`anthropic-version: $MESSAGES_VERSION\`"
  fi
  if [[ "${BENCH_SCOPED_KEY:-0}" == 1 ]]; then
    echo "- Tollgate's key has every scope set: IP allowlist, model list, endpoint, provider"
  fi
  if [[ "${BENCH_LIMITED_KEY:-0}" == 1 ]]; then
    echo "- Tollgate's key has a budget, a token quota, RPM and TPM: every request reserves, checks both" \
      "limiters, settles, and writes its usage row"
  fi
  if [[ "${BENCH_SCOPED_KEY:-0}" != 1 && "${BENCH_LIMITED_KEY:-0}" != 1 ]]; then
    echo "- Tollgate's key is unrestricted (its usage rows are written as always)"
  fi
  echo
  echo "| target | conns | RPS | p50 | p99 | errors | p50 added vs (a) | RPS % of (b) |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  local target conns added pct tollgate_runs=()
  for target in "${RUN[@]}"; do
    for conns in $CONNECTIONS; do
      added="—"
      pct="—"
      if [[ "$target" != fake && -n "${P50[fake,$conns]:-}" ]]; then
        added="$(awk -v a="${P50[$target,$conns]}" -v b="${P50[fake,$conns]}" \
          'BEGIN { d = a - b; s = d < 0 ? "−" : "+"; if (d < 0) d = -d; if (d < 1000) printf "%s%.0f µs\n", s, d; else printf "%s%.2f ms\n", s, d / 1000 }')"
      fi
      if [[ "$target" == tollgate && -n "${RPS[forwarder,$conns]:-}" ]]; then
        pct="$(awk -v a="${RPS[$target,$conns]}" -v b="${RPS[forwarder,$conns]}" \
          'BEGIN { if (b > 0) printf "%.0f%%\n", 100 * a / b; else print "n/a" }')"
      fi
      printf '| %s | %s | %.0f | %s | %s | %s | %s | %s |\n' "$(describe "$target")" "$conns" \
        "${RPS[$target,$conns]}" "$(human_us "${P50[$target,$conns]}")" \
        "$(human_us "${P99[$target,$conns]}")" "${ERRS[$target,$conns]}" "$added" "$pct"
    done
  done
  echo
  echo "| server | peak RSS (VmHWM) |"
  echo "|---|---:|"
  if [[ -n "${PEAK[fake-anthropic]:-}" ]]; then
    # (d) and (e) go to the second fake, so the first one served (a) to (c) only.
    echo "| fake upstream (served (a) to (c)) | $(mib "${PEAK[fake]}") |"
    echo "| fake Anthropic upstream (served (d), (e)) | $(mib "${PEAK[fake-anthropic]}") |"
  else
    echo "| fake upstream (served every run) | $(mib "${PEAK[fake]}") |"
  fi
  for target in "${RUN[@]}"; do
    [[ "$target" == fake ]] && continue
    if is_tollgate "$target"; then
      tollgate_runs+=("$target")
    else
      echo "| $(describe "$target") | $(mib "${PEAK[$target]}") |"
    fi
  done
  # One Tollgate process served (c) to (e); its peak is the one read after the last of them.
  if ((${#tollgate_runs[@]} == 1)); then
    echo "| $(describe "${tollgate_runs[0]}") | $(mib "${PEAK[${tollgate_runs[0]}]}") |"
  elif ((${#tollgate_runs[@]} > 1)); then
    local served="" last="${tollgate_runs[-1]}"
    for target in "${tollgate_runs[@]}"; do
      served+="${served:+, }$(describe "$target" | cut -d' ' -f1)"
    done
    echo "| Tollgate (served $served) | $(mib "${PEAK[$last]}") |"
  fi
  if [[ " ${RUN[*]} " == *" tollgate "* && " ${RUN[*]} " == *" anthropic "* ]]; then
    adapter_report
  fi
  if [[ " ${RUN[*]} " == *" messages "* ]] &&
    [[ " ${RUN[*]} " == *" anthropic "* || " ${RUN[*]} " == *" tollgate "* ]]; then
    messages_report
  fi
  if [[ -n "${IDLE_RSS[tollgate]:-}" ]]; then
    echo
    echo "Tollgate RSS at idle, before its runs: $(mib "${IDLE_RSS[tollgate]}")."
  fi
  if [[ -n "$TOLLGATE_PROBLEM" ]]; then
    echo
    echo "**Tollgate was not benchmarked:** $TOLLGATE_PROBLEM."
  fi
}

mkdir -p "$(dirname "$RESULTS")"
report | tee "$RESULTS"
[[ -z "$TOLLGATE_PROBLEM" ]] || exit 1
