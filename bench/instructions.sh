#!/usr/bin/env bash
# Instructions per request of the gateway under callgrind — repeatable where wall-clock figures drift by ±10 %.
# Gateways (`--workers 1`) under valgrind in front of the demo upstream; per route, the counters are zeroed after
# a warm-up, N requests are sent on one keep-alive connection, and the instructions counted since (every thread of
# the process: the audit and access-log writers too) are divided by N.
# Routes:
#   bare     no plugins; metrics on (the default), no access log, no audit
#   plugins  auth api_key + policy + rate_limit local + request_size, same gateway
#   full     auth api_key + policy + rate_limit local on a gateway with the access log (file) and the audit log
#            (fsync: interval): the production route of bench/chain.sh
# Usage: bench/instructions.sh [BIN] [N]                  prints one JSON line per route
#        bench/instructions.sh --check BASELINE [BIN] [N]  also fails if a route's count exceeds the baseline's
#                                                         by more than 10 % (the test command runs this)
# BIN defaults to target/release/modelgate. The baseline (bench/instructions.baseline.json) holds the counts of
# the `release` profile's binary; refresh it with `bench/instructions.sh > bench/instructions.baseline.json` when a
# change is meant to cost more (and say why in the commit).
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
BASELINE=
if [ "${1:-}" = --check ]; then BASELINE=$(realpath "$2"); shift 2; fi
BIN=$(realpath "${1:-target/release/modelgate}")
N=${2:-2000}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
tmp=$(mktemp -d)
pids=()
# KEEP=DIR keeps the callgrind files (for callgrind_annotate).
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -z "${KEEP:-}" ] || cp -r "$tmp" "$KEEP"; rm -rf "$tmp"' EXIT

wait_file() { for _ in $(seq 1200); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; exit 1; }
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

"$BIN" demo-upstream --listen 127.0.0.1:0 --ready-file "$tmp/up.ready" >/dev/null 2>&1 & pids+=($!)
wait_file "$tmp/up.ready"
key=$("$BIN" keys create --file "$tmp/keys.yaml" --consumer bench 2>/dev/null)
config() {  # config EXTRA_TOP_LEVEL_YAML
  cat <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
server: { watch: false }
identity: { api_keys: { file: keys.yaml } }
$1
upstreams:
  demo: { targets: ["http://$(field "$tmp/up.ready" addr)"] }
routes:
  - { name: bare, match: { path_prefix: /bare }, upstream: demo }
  - name: plugins
    match: { path_prefix: /plugins }
    upstream: demo
    plugins:
      - auth: { methods: [api_key] }
      - policy: { allow: [ { consumers: [bench] } ] }
      - rate_limit: { limits: [ { limit: 1000000000, per: 1s } ] }
      - request_size: { max_body: 1MiB }
  - name: full
    match: { path_prefix: /full }
    upstream: demo
    plugins:
      - auth: { methods: [api_key] }
      - policy: { allow: [ { consumers: [bench] } ] }
      - rate_limit: { limits: [ { limit: 1000000000, per: 1s } ] }
YAML
}

# launch NAME EXTRA: a gateway under callgrind; sets GW (pid) and ADDR.
launch() {
  config "$2" > "$tmp/$1.yaml"
  valgrind --tool=callgrind --callgrind-out-file="$tmp/cg-$1.%p" "$BIN" gateway --config "$tmp/$1.yaml" --workers 1 \
    --ready-file "$tmp/$1.ready" >/dev/null 2>"$tmp/$1.valgrind.log" & GW=$!; pids+=($GW)
  wait_file "$tmp/$1.ready"
  ADDR=$(field "$tmp/$1.ready" gateway)
}

# send PATH COUNT [HEADER VALUE]: COUNT GETs on one keep-alive connection; every answer must be 200.
send() {
  python3 - "$ADDR" "$@" <<'PY'
import http.client, sys
addr, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
headers = {sys.argv[4]: sys.argv[5]} if len(sys.argv) > 5 else {}
host, port = addr.rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port))
for _ in range(n):
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    r.read()
    assert r.status == 200, (path, r.status)
PY
}

dumps() { local f=("$tmp"/cg-*.*.*); echo "${#f[@]}"; }   # dump files written so far (nullglob)

measure() {  # measure ROUTE PATH [HEADER VALUE]
  local route=$1 path=$2; shift 2
  send "$path" 200 "$@"   # warm-up: connections, caches, metric handles
  callgrind_control --zero "$GW" >/dev/null 2>&1
  send "$path" "$N" "$@"
  local before
  before=$(dumps)
  callgrind_control --dump="$route" "$GW" >/dev/null 2>&1
  for _ in $(seq 300); do [ "$(dumps)" -gt "$before" ] && break; sleep 0.1; done
  local file ir
  file=$(ls -t "$tmp"/cg-*.*.* | head -1)
  ir=$(awk '/^summary:/ {print $2}' "$file")
  python3 -c 'import json,sys; ir,n=int(sys.argv[2]),int(sys.argv[3]); print(json.dumps({"route": sys.argv[1], "requests": n, "instructions": ir, "per_request": round(ir/n)}))' "$route" "$ir" "$N" | tee -a "$tmp/counts.jsonl"
}

launch plain ""
measure bare /bare
measure plugins /plugins x-api-key "$key"
launch full "$(printf 'observability: { access_log: { path: access.log } }\naudit: { path: audit.log, fsync: interval }')"
measure full /full x-api-key "$key"
[ "$(wc -l < "$tmp/audit.log")" -ge "$N" ] || { echo "the audit log holds fewer than $N lines" >&2; exit 1; }

[ -z "$BASELINE" ] && exit 0
python3 - "$BASELINE" "$tmp/counts.jsonl" <<'PY'
import json, sys
base = {r["route"]: r["per_request"] for r in map(json.loads, open(sys.argv[1]).read().splitlines())}
now = {r["route"]: r["per_request"] for r in map(json.loads, open(sys.argv[2]).read().splitlines())}
bad = []
for route, b in base.items():
    n = now.get(route)
    ratio = n / b if n else float("inf")
    print(f"instructions per request, {route}: {n} (baseline {b}, {ratio:.3f}x)")
    if ratio > 1.10:
        bad.append(route)
if bad:
    sys.exit(f"more than 10 % over the baseline: {', '.join(bad)} (bench/instructions.sh; refresh the baseline only for a cost that is meant)")
PY
