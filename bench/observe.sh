#!/usr/bin/env bash
# Observability benchmark: the throughput and CPU cost of request metrics, and of metrics + the access log (to a
# file), against the same gateway config with both off — three gateway processes run side by side, measured in
# alternation. Each gateway runs on core 0 with one worker; wrk and the nginx upstream share core 1.
# Usage: bench/observe.sh [duration_seconds]   (results in bench/out/observe/, summary on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=${CONNS:-50}
OUT=bench/out/observe
mkdir -p "$OUT"
rm -rf "${OUT:?}"/*

. bench/lib.sh

start_gateway() {  # start_gateway NAME OBSERVABILITY_LINE → sets GW_ADDR, GW_PID
  cat > "$OUT/$1.yaml" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
server: { watch: false }
$2
upstreams:
  u: { targets: ["http://127.0.0.1:$UP_PORT"] }
routes:
  - { name: infer, match: { path_prefix: / }, upstream: u }
YAML
  launch_gateway "$1"
}
start_gateway off "observability: { metrics: false }"; OFF_ADDR=$GW_ADDR OFF_PID=$GW_PID
start_gateway metrics ""; MET_ADDR=$GW_ADDR MET_PID=$GW_PID
start_gateway all "observability: { access_log: { path: access.log } }"; ALL_ADDR=$GW_ADDR ALL_PID=$GW_PID
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$UP_PORT/" >/dev/null && break; sleep 0.1; done

echo -e "peer\trps\tp50_us\tp99_us\tcpu_us_per_req\tnon2xx" > "$OUT/summary.tsv"
for r in $(seq "${ROUNDS:-3}"); do
  run "off-$r" "http://$OFF_ADDR/v2/models/digits/versions/1/infer" "$OFF_PID"
  run "metrics-$r" "http://$MET_ADDR/v2/models/digits/versions/1/infer" "$MET_PID"
  run "metrics+access_log-$r" "http://$ALL_ADDR/v2/models/digits/versions/1/infer" "$ALL_PID"
done
summarize off metrics metrics+access_log
wc -l < "$OUT/access.log" | xargs echo "access log lines:"
