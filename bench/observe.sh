#!/usr/bin/env bash
# Observability benchmark: the throughput and CPU cost of request metrics, of metrics + the access log (to a
# file), and of metrics + access log + OTLP tracing at 1 % sampling (to a real OTLP/gRPC receiver, the tests'
# otlp-sink), against the same gateway config with all off — four gateway processes run side by side, measured in
# alternation. Each gateway runs on core 0 with one worker; wrk, the nginx upstream and the receiver share core 1.
# ROUTE=plugins sends the load to a route with an API key, a policy and a local rate limit instead of the bare
# route (the gateway as deployed; tracing then also records the phase spans).
# Usage: bench/observe.sh [duration_seconds]   (results in bench/out/observe/, summary on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=${CONNS:-50}
OUT=bench/out/observe
mkdir -p "$OUT"
rm -rf "${OUT:?}"/*
# Where the access logs go (ACCESS_LOG_DIR=/dev/shm measures the log without the disk's filesystem).
LOGS=${ACCESS_LOG_DIR:-$PWD/$OUT}
rm -f "$LOGS/access.log" "$LOGS/access-traced.log"

. bench/lib.sh

KEY=$("$BIN" keys create --file "$PWD/$OUT/keys.yaml" --consumer team-a --groups vision 2>/dev/null)
case ${ROUTE:-bare} in
  bare) HDR="" ;;
  plugins) HDR="x-api-key: $KEY" ;;
  *) echo "ROUTE is bare or plugins"; exit 1 ;;
esac
start_gateway() {  # start_gateway NAME OBSERVABILITY_LINE → sets GW_ADDR, GW_PID
  cat > "$OUT/$1.yaml" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
server: { watch: false }
identity: { api_keys: { file: keys.yaml } }
$2
upstreams:
  u: { targets: ["http://127.0.0.1:$UP_PORT"] }
routes:
  - name: plugins
    match: { path_prefix: /, headers: { x-api-key: "*" } }
    upstream: u
    plugins:
      - { auth: { methods: [api_key] } }
      - { policy: { allow: [ { groups: [vision], models: [digits] } ] } }
      - { rate_limit: { limits: [ { limit: 100000000, per: 1s } ] } }
  - { name: infer, match: { path_prefix: / }, upstream: u }
YAML
  launch_gateway "$1"
}
start_gateway off "observability: { metrics: false }"; OFF_ADDR=$GW_ADDR OFF_PID=$GW_PID
start_gateway metrics ""; MET_ADDR=$GW_ADDR MET_PID=$GW_PID
start_gateway all "observability: { access_log: { path: \"$LOGS/access.log\" } }"; ALL_ADDR=$GW_ADDR ALL_PID=$GW_PID
cargo build --profile dist --locked -q -p modelgate-test-support --bin otlp-sink
taskset -c 1 target/dist/otlp-sink > "$OUT/otlp-sink.out" & SINK_PID=$!; PIDS+=($SINK_PID)
for _ in $(seq 100); do [ -s "$OUT/otlp-sink.out" ] && break; sleep 0.1; done
SINK=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["grpc"])' "$OUT/otlp-sink.out")
start_gateway traced "observability: { access_log: { path: \"$LOGS/access-traced.log\" }, tracing: { endpoint: \"$SINK\", sample_ratio: 0.01 } }"; TR_ADDR=$GW_ADDR TR_PID=$GW_PID
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$UP_PORT/" >/dev/null && break; sleep 0.1; done

echo -e "peer\trps\tp50_us\tp99_us\tcpu_us_per_req\tnon2xx" > "$OUT/summary.tsv"
for r in $(seq "${ROUNDS:-3}"); do
  run "off-$r" "http://$OFF_ADDR/v2/models/digits/versions/1/infer" "$OFF_PID" "$HDR"
  run "metrics-$r" "http://$MET_ADDR/v2/models/digits/versions/1/infer" "$MET_PID" "$HDR"
  run "metrics+access_log-$r" "http://$ALL_ADDR/v2/models/digits/versions/1/infer" "$ALL_PID" "$HDR"
  run "all+tracing_1%-$r" "http://$TR_ADDR/v2/models/digits/versions/1/infer" "$TR_PID" "$HDR"
done
summarize off metrics metrics+access_log all+tracing_1%
wc -l < "$LOGS/access.log" | xargs echo "access log lines:"
kill "$TR_PID"; kill -TERM "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true
tail -1 "$OUT/otlp-sink.out" | xargs -0 echo "spans received (1 % of the traced gateway's requests × 2 spans each: server and upstream):"
