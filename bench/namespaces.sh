#!/usr/bin/env bash
# The namespace API's latency (docs/self-service.md): an owner's change checked against the whole config (dry run:
# the check without the reload — issue 18 asks p99 ≤ 50 ms), and applied (check, write, reload). One gateway (one
# worker, core 0) with a namespace holding N routes already; curl on core 1 times each call. Then, with redis-server
# on the PATH, the propagation between two gateways sharing Redis (issue 18: live on all within 2 s p99): each change
# applied on gateway A, timed until gateway B routes it.
# Usage: bench/namespaces.sh [calls] [routes already in the namespace]   (PROFILE=dist; results in bench/out/namespaces/)
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${1:-200}
ROUTES=${2:-50}
OUT=bench/out/namespaces
mkdir -p "$OUT/teams"
rm -rf "${OUT:?}"/*; mkdir -p "$OUT/teams"
PROFILE=${PROFILE:-dist}
cargo build --profile "$PROFILE" --locked -q
BIN=target/$PROFILE/modelgate
KEY=$("$BIN" keys create --file "$PWD/$OUT/keys.yaml" --consumer alice 2>/dev/null)
cat > "$OUT/gateway.yaml" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
include: teams
identity: { api_keys: { file: keys.yaml } }
namespaces:
  team-a: { owners: { consumers: [alice] }, paths: [/v2/models/team-a-], auth_methods: [api_key], max_routes: 1000 }
YAML
python3 - "$OUT/teams/team-a.yaml" "$ROUTES" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
lines = ["upstreams:", "  a: { targets: [\"http://127.0.0.1:9\"] }", "routes:"]
for i in range(n):
    lines.append(f"  - {{ name: r{i}, match: {{ path_prefix: /v2/models/team-a-m{i} }}, upstream: a, plugins: [ {{ auth: {{ methods: [api_key] }} }} ] }}")
open(path, "w").write("\n".join(lines) + "\n")
PY
RUST_LOG=warn taskset -c 0 "$BIN" gateway --config "$OUT/gateway.yaml" --workers 1 --ready-file "$OUT/ready" > /dev/null 2> "$OUT/stderr" & PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$OUT/ready" ] && break; sleep 0.1; done
ADMIN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$OUT/ready")
call() {  # call QUERY I → seconds
  taskset -c 1 curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X PUT -H "authorization: Bearer $KEY" \
    --data "{\"match\": {\"path_prefix\": \"/v2/models/team-a-new$2\"}, \"upstream\": \"a\", \"plugins\": [{\"auth\": {\"methods\": [\"api_key\"]}}]}" \
    "http://$ADMIN/admin/namespaces/team-a/routes/new$2$1"
}
for i in $(seq "$CALLS"); do call "?dry_run=true" "$i"; done > "$OUT/dry_run.txt"
for i in $(seq $((CALLS / 4))); do call "" "$i"; done > "$OUT/applied.txt"
python3 - "$OUT" "$ROUTES" <<'PY'
import statistics, sys
out, routes = sys.argv[1], sys.argv[2]
for name in ("dry_run", "applied"):
    rows = [l.split() for l in open(f"{out}/{name}.txt")]
    assert all(r[0] == "200" for r in rows), f"{name}: non-200 answers"
    ms = sorted(float(r[1]) * 1000 for r in rows)
    p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
    print(f"{name:8s} calls {len(ms):4d}  p50 {p(0.5):6.1f} ms  p99 {p(0.99):6.1f} ms  max {ms[-1]:6.1f} ms  (namespace of {routes}+ routes)")
PY

command -v redis-server > /dev/null || { echo "propagation: skipped (no redis-server on the PATH)"; exit 0; }
kill $PID 2>/dev/null || true
redis-server --port 0 --unixsocket "$PWD/$OUT/redis.sock" --save '' --appendonly no --logfile "$PWD/$OUT/redis.log" & RPID=$!
trap 'kill $PID $RPID ${PIDS:-} 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$OUT/redis.sock" ] && break; sleep 0.1; done
PIDS=""
for g in a b; do
  mkdir -p "$OUT/$g/teams"
  cp "$OUT/keys.yaml" "$OUT/$g/"; cp "$OUT/teams/team-a.yaml" "$OUT/$g/teams/"
  sed "s|^include: teams|include: teams\nredis: { url: \"unix://$PWD/$OUT/redis.sock\" }|" "$OUT/gateway.yaml" > "$OUT/$g/gateway.yaml"
  RUST_LOG=warn "$BIN" gateway --config "$OUT/$g/gateway.yaml" --workers 1 --ready-file "$OUT/$g/ready" > /dev/null 2> "$OUT/$g/stderr" & PIDS="$PIDS $!"
  for _ in $(seq 100); do [ -s "$OUT/$g/ready" ] && break; sleep 0.1; done
done
python3 - "$OUT" "$KEY" "$CALLS" <<'PY'
import http.client, json, sys, time
out, key, calls = sys.argv[1], sys.argv[2], max(20, int(sys.argv[3]) // 4)
ready = lambda g: json.load(open(f"{out}/{g}/ready"))
a_admin, b_proxy = ready("a")["admin"], ready("b")["gateway"]
admin = http.client.HTTPConnection(a_admin)
proxy = http.client.HTTPConnection(b_proxy)
auth = {"authorization": f"Bearer {key}"}
ms = []
for i in range(calls):
    route = {"match": {"path_prefix": f"/v2/models/team-a-p{i}"}, "upstream": "a", "plugins": [{"auth": {"methods": ["api_key"]}}]}
    if i == 0:
        admin.request("PUT", "/admin/namespaces/team-a/upstreams/a", body='{"targets": ["http://127.0.0.1:9"]}', headers=auth)
        admin.getresponse().read()
    t0 = time.perf_counter()
    admin.request("PUT", f"/admin/namespaces/team-a/routes/p{i}", body=json.dumps(route), headers=auth)
    r = admin.getresponse(); r.read()
    assert r.status == 200, r.status
    while True:  # B answers 404 route_not_found until it routes the new path (then 502: the target refuses)
        try:
            proxy.request("POST", f"/v2/models/team-a-p{i}/infer", body=b"{}", headers=auth)
            r = proxy.getresponse(); r.read()
        except (ConnectionError, http.client.HTTPException):  # a closed keep-alive connection: open another
            proxy = http.client.HTTPConnection(b_proxy)
            continue
        if r.status != 404:
            break
        if time.perf_counter() - t0 > 10:
            sys.exit(f"change {i} not live on gateway B after 10 s")
    ms.append((time.perf_counter() - t0) * 1000)
ms.sort()
p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
print(f"propagation changes {len(ms):3d}  p50 {p(0.5):6.1f} ms  p99 {p(0.99):6.1f} ms  max {ms[-1]:6.1f} ms  (applied on A until B routes it)")
PY
