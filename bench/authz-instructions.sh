#!/usr/bin/env bash
# Instructions per `modelgate authz` check under callgrind (repeatable where times are not): an allowed check with API
# key + policy + a local rate limit (issue 21's "≤ 5 µs CPU per allowed check"), split into the whole check (HTTP/1.1
# parsing and answering, the worker's scheduling, metrics) and the decision (the phases: match, authenticate,
# authorize, admit, route, and the allowed answer's headers: `driver::run`, inclusive).
# VIA=envoy: the checks come from Envoy's gRPC ext_authz (examples/authz/envoy.yaml; Envoy from scripts/fetch-envoy)
# in front of a Python upstream, so the count includes HTTP/2 and the protobuf messages.
# Usage: [VIA=envoy] bench/authz-instructions.sh [BIN] [N]   (BIN defaults to target/release/modelgate; one JSON line)
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release/modelgate}")
N=${2:-2000}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -z "${KEEP:-}" ] || cp -r "$tmp" "$KEEP"; rm -rf "$tmp"' EXIT
wait_file() { for _ in $(seq 1200); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; exit 1; }

key=$("$BIN" keys create --file "$tmp/keys.yaml" --consumer bench 2>/dev/null)
cat > "$tmp/authz.yaml" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
server: { watch: false }
identity: { api_keys: { file: keys.yaml } }
routes:
  - name: checked
    match: { path_prefix: /v2/models/digits }
    plugins:
      - auth: { methods: [api_key] }
      - policy: { allow: [ { consumers: [bench], models: [digits] } ] }
      - rate_limit: { limits: [ { limit: 1000000000, per: 1s } ] }
YAML
valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.%p" "$BIN" authz --config "$tmp/authz.yaml" --workers 1 \
  --ready-file "$tmp/authz.ready" >/dev/null 2>"$tmp/valgrind.log" & PID=$!; pids+=($PID)
wait_file "$tmp/authz.ready"
ADDR=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gateway"])' "$tmp/authz.ready")

if [ "${VIA:-}" = envoy ]; then
  ENVOY=$(scripts/fetch-envoy)
  # An upstream answering 200 to anything Envoy lets through.
  python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    do_POST = do_GET
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.serve_forever()' "$tmp/up.port" & pids+=($!)
  wait_file "$tmp/up.port"
  # modelgate runs under valgrind: Envoy waits longer for it
  python3 bench/envoy_conf.py envoy.yaml 0 "$ADDR" "$(cat "$tmp/up.port")" --timeout 10s > "$tmp/envoy.yaml"
  "$ENVOY" -c "$tmp/envoy.yaml" --concurrency 1 --use-dynamic-base-id -l warn --admin-address-path "$tmp/envoy.admin" > "$tmp/envoy.log" 2>&1 & pids+=($!)
  wait_file "$tmp/envoy.admin"
  for _ in $(seq 300); do
    FRONT=$(curl -s "http://$(cat "$tmp/envoy.admin")/listeners?format=json" | python3 -c '
import json, sys
for l in json.load(sys.stdin)["listener_statuses"]:
    if l["name"] == "models": print("%s:%s" % (l["local_address"]["socket_address"]["address"], l["local_address"]["socket_address"]["port_value"]))' 2>/dev/null || true)
    [ -n "$FRONT" ] && break; sleep 0.1
  done
else
  FRONT=$ADDR
fi

checks() {  # checks COUNT: calls of POST /v2/models/digits/infer on one keep-alive connection, all 200 — checks
  # themselves (Traefik-style) or, with VIA=envoy, the calls Envoy checks
  python3 - "$FRONT" "$1" "$key" "${VIA:-}" <<'PY'
import http.client, sys
addr, n, key, via = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
host, port = addr.rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port))
if via == "envoy":
    method, path, h = "POST", "/v2/models/digits/infer", {"Host": "models.example", "X-Api-Key": key, "Content-Length": "0"}
else:
    method, path = "GET", "/"
    h = {"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/v2/models/digits/infer", "X-Forwarded-Host": "models.example", "X-Api-Key": key}
for _ in range(n):
    c.request(method, path, headers=h)
    r = c.getresponse()
    r.read()
    assert r.status == 200 and (via == "envoy" or r.getheader("x-modelgate-consumer") == "bench"), r.status
PY
}
checks 200
callgrind_control --zero "$PID" >/dev/null 2>&1
checks "$N"
callgrind_control --dump=checks "$PID" >/dev/null 2>&1
for _ in $(seq 300); do files=("$tmp"/cg.*.*); [ ${#files[@]} -gt 0 ] && break; sleep 0.1; done
file=$(ls -t "$tmp"/cg.*.* | head -1)
total=$(awk '/^summary:/ {print $2}' "$file")
# The decision: driver::run's future, inclusive (its polls, every phase and the allowed answer).
decision=$(callgrind_annotate --inclusive=yes --threshold=100 "$file" 2>/dev/null \
  | awk '!found && /modelgate_gateway::driver::run::\{\{closure\}\}/ { gsub(",", "", $1); print $1; found = 1 }')
python3 -c '
import json, sys
total, decision, n = int(sys.argv[1]), int(sys.argv[2] or 0), int(sys.argv[3])
print(json.dumps({"via": sys.argv[4] or "http", "checks": n, "per_check": round(total / n), "decision_per_check": round(decision / n)}))' "$total" "${decision:-0}" "$N" "${VIA:-}"
