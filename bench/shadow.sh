#!/usr/bin/env bash
# Shadow versions (docs/versions.md): does copying requests to a shadow version change what clients see? Three
# gateways with the same managed model (`digits`, stable version on the nginx upstream), measured in alternation:
#   none     no shadow version
#   stalled  a shadow version whose upstream answers after 5 s (the demo upstream's /slow/5000), sample 100 %,
#            max_in_flight 16: the copies stall and almost every sampled request is dropped as `busy`
#   mirror   a shadow version on the nginx upstream, sample 100 %, max_in_flight 1000: every request is copied and
#            both answers compared (nginx's answer is not an OIP answer: `not_comparable`, after reading both)
# wrk POSTs examples/digits/request.json to /v2/models/digits/infer (inference requests are what is copied). The
# client's p99 under `stalled` against `none` is the figure of issue 17 (unchanged within noise); `mirror` shows
# what copying everything costs the gateway.
# Usage: bench/shadow.sh [duration_seconds]   (ROUNDS=3, PROFILE=dist; results in bench/out/shadow/)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=${CONNS:-50}
OUT=bench/out/shadow
mkdir -p "$OUT"
rm -rf "${OUT:?}"/*
. bench/lib.sh

SLOW_READY="$OUT/slow.ready"
taskset -c 1 "$BIN" demo-upstream --listen 127.0.0.1:0 --ready-file "$SLOW_READY" >/dev/null 2>&1 & PIDS+=($!)
for _ in $(seq 100); do [ -s "$SLOW_READY" ] && break; sleep 0.1; done
SLOW=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["addr"])' "$SLOW_READY")

start_gateway() {  # start_gateway NAME SHADOW_VERSION_LINE
  cat > "$OUT/$1.yaml" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
server: { watch: false }
upstreams:
  u: { targets: ["http://127.0.0.1:$UP_PORT"] }
  slow: { targets: ["http://$SLOW"], timeouts: { response: 30s } }
routes:
  - { name: infer, match: { path_prefix: / }, upstream: u }
models:
  digits:
    versions:
      "1": { upstream: u, state: stable, probe: none }
$2
YAML
  launch_gateway "$1"
}
start_gateway none ""; NONE_ADDR=$GW_ADDR NONE_PID=$GW_PID
start_gateway stalled '      "2": { upstream: slow, state: shadow, path: /slow/5000, probe: none, shadow: { sample: 100, max_in_flight: 16 } }'
STALLED_ADDR=$GW_ADDR STALLED_PID=$GW_PID
start_gateway mirror '      "2": { upstream: u, state: shadow, probe: none, shadow: { sample: 100, max_in_flight: 1000 } }'
MIRROR_ADDR=$GW_ADDR MIRROR_PID=$GW_PID
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$UP_PORT/" >/dev/null && break; sleep 0.1; done

export WRK_SCRIPT=bench/post.lua BODY_FILE=$PWD/examples/digits/request.json
echo -e "peer\trps\tp50_us\tp99_us\tcpu_us_per_req\tnon2xx" > "$OUT/summary.tsv"
for r in $(seq "${ROUNDS:-3}"); do
  run "none-$r" "http://$NONE_ADDR/v2/models/digits/infer" "$NONE_PID"
  run "stalled-$r" "http://$STALLED_ADDR/v2/models/digits/infer" "$STALLED_PID"
  run "mirror-$r" "http://$MIRROR_ADDR/v2/models/digits/infer" "$MIRROR_PID"
done
summarize none stalled mirror
for g in stalled mirror; do
  admin=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$OUT/$g.ready")
  curl -s "http://$admin/admin/models/digits/shadow" | python3 -c 'import json,sys; s=json.load(sys.stdin)["shadows"][0]; print(sys.argv[1], "results", {k: v for k, v in s["results"].items() if v}, "dropped", {k: v for k, v in s["dropped"].items() if v})' "$g"
done
