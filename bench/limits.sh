#!/usr/bin/env bash
# Rate-limit benchmark: the throughput and CPU cost of API-key auth + a local rate limit, and of API-key auth + a
# Redis rate limit (one Lua script per request), against the bare route of the same gateway in the same run; and
# Redis commands per request (from Redis's own counters). The gateway runs on core 0 with one worker; wrk, the
# nginx upstream and redis-server share core 1.
# Usage: bench/limits.sh [duration_seconds]   (results in bench/out/limits/, summary on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=${CONNS:-50}
OUT=bench/out/limits
mkdir -p "$OUT"
rm -rf "${OUT:?}"/*
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

. bench/lib.sh

REDIS_SOCK=$PWD/$OUT/redis.sock
taskset -c 1 redis-server --port 0 --unixsocket "$REDIS_SOCK" --unixsocketperm 700 --save "" --appendonly no --logfile "$PWD/$OUT/redis.log" & PIDS+=($!)
for _ in $(seq 100); do redis-cli -s "$REDIS_SOCK" ping >/dev/null 2>&1 && break; sleep 0.1; done
KEY=$("$BIN" keys create --file "$OUT/keys.yaml" --consumer team-a 2>/dev/null)

cat > "$OUT/gateway.yaml" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
server: { watch: false }
redis: { url: "unix://$REDIS_SOCK" }
identity: { api_keys: { file: keys.yaml } }
upstreams:
  u: { targets: ["http://127.0.0.1:$UP_PORT"] }
routes:
  - name: key
    match: { path: /v2/models/k/infer }
    upstream: u
    plugins: [ { auth: { methods: [api_key] } } ]
  - name: key-local
    match: { path: /v2/models/l/infer }
    upstream: u
    plugins: [ { auth: { methods: [api_key] } }, { rate_limit: { limits: [ { limit: 1000000000, per: 1s } ] } } ]
  - name: key-redis
    match: { path: /v2/models/r/infer }
    upstream: u
    plugins: [ { auth: { methods: [api_key] } }, { rate_limit: { store: redis, limits: [ { limit: 1000000000, per: 1s } ] } } ]
  - { name: bare, match: { path_prefix: / }, upstream: u }
YAML
launch_gateway gateway
GW=$GW_ADDR
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$UP_PORT/" >/dev/null && break; sleep 0.1; done
for m in k l r; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $KEY" "http://$GW/v2/models/$m/infer")" = 200 ] || { echo "route $m failed"; exit 1; }
done

# Commands clients sent (round trips, as nothing is pipelined): EVALSHA/EVAL calls; the commands a script runs
# inside Redis (TIME, GET, INCRBY, PEXPIRE) are not round trips and are not counted.
redis_cmds() { redis-cli -s "$REDIS_SOCK" info commandstats | awk -F'[:=,]' '/^cmdstat_(evalsha|eval|script)/ {n += $3} END {print n+0}'; }
echo -e "peer\trps\tp50_us\tp99_us\tcpu_us_per_req\tnon2xx" > "$OUT/summary.tsv"
: > "$OUT/redis.tsv"
for r in $(seq "${ROUNDS:-3}"); do
  run "bare-$r" "http://$GW/v2/models/digits/infer" "$GW_PID"
  run "apikey-$r" "http://$GW/v2/models/k/infer" "$GW_PID" "x-api-key: $KEY"
  run "apikey+local-$r" "http://$GW/v2/models/l/infer" "$GW_PID" "x-api-key: $KEY"
  run "apikey+redis-$r" "http://$GW/v2/models/r/infer" "$GW_PID" "x-api-key: $KEY"
done
# Redis commands per request: Redis's own command counter around one wrk run (requests still in flight when wrk
# stops reached Redis but are not counted by wrk: at most CONNS, an over-estimate of the ratio).
for r in 1 2 3; do
  c0=$(redis_cmds)
  taskset -c 1 wrk -t1 -c"$CONNS" -d3s -H "x-api-key: $KEY" "http://$GW/v2/models/r/infer" > "$OUT/redis-count-$r.wrk"
  sleep 0.5
  c1=$(redis_cmds)
  reqs=$(grep -oE '[0-9]+ requests in' "$OUT/redis-count-$r.wrk" | cut -d' ' -f1)
  echo -e "$r\t$((c1 - c0))\t$reqs" >> "$OUT/redis.tsv"
done
summarize bare apikey apikey+local apikey+redis
python3 - "$OUT/redis.tsv" <<'PY' | tee -a "$OUT/ratios.txt"
import sys
red = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
print("redis round trips (EVALSHA) per request:", ", ".join(f"{int(c) / int(n):.2f}" for _, c, n in red))
PY
