#!/usr/bin/env bash
# Instructions per request of the gateway under callgrind — repeatable where wall-clock figures drift by ±10 %.
# One gateway (`--workers 1`) under valgrind in front of the demo upstream; per route, the counters are zeroed, N
# requests are sent on one keep-alive connection, and the instructions counted since are divided by N.
# Routes: `bare` (no plugins) and `plugins` (auth api_key + policy + rate_limit local + request_size).
# Usage: bench/instructions.sh [BIN] [N]   (BIN defaults to target/release/modelgate; prints one JSON line per route)
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release/modelgate}")
N=${2:-2000}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT

wait_file() { for _ in $(seq 1200); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; exit 1; }
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

"$BIN" demo-upstream --listen 127.0.0.1:0 --ready-file "$tmp/up.ready" >/dev/null 2>&1 & pids+=($!)
wait_file "$tmp/up.ready"
key=$("$BIN" keys create --file "$tmp/keys.yaml" --consumer bench 2>/dev/null)
cat > "$tmp/gateway.yaml" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
server: { watch: false }
identity: { api_keys: { file: keys.yaml } }
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
YAML
valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.%p" "$BIN" gateway --config "$tmp/gateway.yaml" --workers 1 \
  --ready-file "$tmp/gw.ready" >/dev/null 2>"$tmp/valgrind.log" & gw=$!; pids+=($gw)
wait_file "$tmp/gw.ready"
addr=$(field "$tmp/gw.ready" gateway)

# send PATH COUNT [HEADER VALUE]: COUNT GETs on one keep-alive connection; every answer must be 200.
send() {
  python3 - "$addr" "$@" <<'PY'
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

dumps() { local f=("$tmp"/cg.*.*); echo "${#f[@]}"; }   # dump files written so far (nullglob)

measure() {  # measure ROUTE PATH [HEADER VALUE]
  local route=$1 path=$2; shift 2
  send "$path" 200 "$@"   # warm-up: connections, caches, metric handles
  callgrind_control --zero "$gw" >/dev/null 2>&1
  send "$path" "$N" "$@"
  local before
  before=$(dumps)
  callgrind_control --dump="$route" "$gw" >/dev/null 2>&1
  for _ in $(seq 300); do [ "$(dumps)" -gt "$before" ] && break; sleep 0.1; done
  local file ir
  file=$(ls -t "$tmp"/cg.*.* | head -1)
  ir=$(awk '/^summary:/ {print $2}' "$file")
  python3 -c 'import json,sys; ir,n=int(sys.argv[2]),int(sys.argv[3]); print(json.dumps({"route": sys.argv[1], "requests": n, "instructions": ir, "per_request": round(ir/n)}))' "$route" "$ir" "$N"
}

measure bare /bare
measure plugins /plugins x-api-key "$key"
