#!/usr/bin/env bash
# The production route against a Kong-like chain, in one run. Same upstream (nginx answering a small body), each
# proxy with one worker on core 0, wrk and the upstream (and Redis) on core 1; peers alternate, ROUNDS times, and
# the summary takes medians.
#   direct            wrk → upstream
#   nginx             proxy_pass + upstream keepalive
#   kong-like         nginx + Lua doing what Kong OSS key-auth + rate-limiting (local policy) do: the key looked up
#                     in a Lua table, a lua_shared_dict counter per consumer and second incremented with expiry,
#                     X-Consumer-Username set upstream
#   mg-bare           modelgate, one `path_prefix: /` route, defaults (metrics on)
#   mg-full           auth api_key + policy + local rate_limit, metrics, access log to a file, audit (fsync interval)
#   mg-full-jwt       the same with an RS256 JWT instead of the API key
#   mg-full-redis     the same with the Redis rate limit
#   mg-full-noaudit   mg-full without the audit log;  mg-full-nolog: without audit and access log
# Then added latency: `modelgate bench-load` (constant rate, latency from when each request was due) at half of
# nginx's median RPS against direct, nginx, kong-like and mg-full; p99 minus direct's p99 per peer.
# CPU µs per request counts every thread of the proxy process (nginx: its worker). For the audited gateway the
# audit writer's wake-ups per request are its thread's voluntary context switches divided by requests.
# Usage: bench/chain.sh [duration_seconds]   (ROUNDS=3 by default; results in bench/out/chain/, summary on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=${CONNS:-50}
OUT=bench/out/chain
mkdir -p "$OUT"
rm -rf "${OUT:?}"/*

need=()
[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || need+=(libnginx-mod-http-lua)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}"; fi
. bench/lib.sh

REDIS_SOCK=$PWD/$OUT/redis.sock
taskset -c 1 redis-server --port 0 --unixsocket "$REDIS_SOCK" --unixsocketperm 700 --save "" --appendonly no --logfile "$PWD/$OUT/redis.log" & PIDS+=($!)
for _ in $(seq 100); do redis-cli -s "$REDIS_SOCK" ping >/dev/null 2>&1 && break; sleep 0.1; done

make_jwt
KEY=$("$BIN" keys create --file "$OUT/keys.yaml" --consumer team-a 2>/dev/null)

start_nginx_proxy

# Peer: the Kong-like chain (key-auth + local rate-limiting as Lua in the access phase).
LUA_PORT=$(free_port)
mkdir -p "$OUT/lua"
cat > "$OUT/lua/nginx.conf" <<NGX
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
daemon off; worker_processes 1; pid $PWD/$OUT/lua/nginx.pid; error_log $PWD/$OUT/lua/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  lua_shared_dict rate_limiting 16m;
  init_by_lua_block { consumers = { ["$KEY"] = "team-a" } }
  upstream u { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$LUA_PORT;
    location / {
      access_by_lua_block {
        local key = ngx.var.http_x_api_key
        local consumer = key and consumers[key]
        if not consumer then
          ngx.status = 401; ngx.header["WWW-Authenticate"] = 'Key realm="kong"'
          ngx.say('{"message":"No API key found in request"}'); return ngx.exit(401)
        end
        local bucket = consumer .. ":second:" .. math.floor(ngx.now())
        local n = ngx.shared.rate_limiting:incr(bucket, 1, 0, 2)
        if n and n > 1000000000 then return ngx.exit(429) end
        ngx.header["X-RateLimit-Remaining-Second"] = 1000000000 - (n or 0)
        ngx.req.set_header("X-Consumer-Username", consumer)
      }
      proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
taskset -c 0 nginx -c "$PWD/$OUT/lua/nginx.conf" -p "$PWD/$OUT/lua" & LUA_PID=$!; PIDS+=($LUA_PID)

# modelgate: one config, parts switched on per gateway.
gateway_config() {  # gateway_config EXTRA_TOP_LEVEL_YAML
  cat <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
server: { watch: false }
redis: { url: "unix://$REDIS_SOCK" }
identity:
  issuers:
    local: { issuer: https://bench.local, audiences: [modelgate], jwks_file: jwks.json, consumer_claim: client_id }
  api_keys: { file: keys.yaml }
$1
upstreams:
  u: { targets: ["http://127.0.0.1:$UP_PORT"] }
routes:
  - name: full
    match: { path_prefix: /key }
    upstream: u
    plugins:
      - auth: { methods: [api_key] }
      - policy: { allow: [ { consumers: [team-a] } ] }
      - rate_limit: { limits: [ { limit: 1000000000, per: 1s } ] }
  - name: full-jwt
    match: { path_prefix: /jwt }
    upstream: u
    plugins:
      - auth: { methods: [jwt] }
      - policy: { allow: [ { consumers: [team-a] } ] }
      - rate_limit: { limits: [ { limit: 1000000000, per: 1s } ] }
  - name: full-redis
    match: { path_prefix: /redis }
    upstream: u
    plugins:
      - auth: { methods: [api_key] }
      - policy: { allow: [ { consumers: [team-a] } ] }
      - rate_limit: { store: redis, limits: [ { limit: 1000000000, per: 1s } ] }
  - { name: bare, match: { path_prefix: / }, upstream: u }
YAML
}
start_gateway() {  # start_gateway NAME EXTRA → sets GW_ADDR, GW_PID
  gateway_config "$2" > "$OUT/$1.yaml"
  launch_gateway "$1"
}
start_gateway bare ""
BARE_ADDR=$GW_ADDR BARE_PID=$GW_PID
start_gateway full "$(printf 'observability: { access_log: { path: access.log } }\naudit: { path: audit.log, fsync: interval }')"
FULL_ADDR=$GW_ADDR FULL_PID=$GW_PID
start_gateway noaudit "observability: { access_log: { path: access.log } }"
NOAUDIT_ADDR=$GW_ADDR NOAUDIT_PID=$GW_PID
start_gateway nolog ""
NOLOG_ADDR=$GW_ADDR NOLOG_PID=$GW_PID
NG_WORKER=$(pgrep -P "$NG_PID" | head -1)
LUA_WORKER=$(pgrep -P "$LUA_PID" | head -1)

# Every peer answers 200 before measuring.
check() { [ "$(curl -s -o /dev/null -w '%{http_code}' -H "$2" "$1")" = 200 ] || { echo "not 200: $1 ($2)" >&2; exit 1; }; }
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$UP_PORT/" >/dev/null && curl -sf -H "x-api-key: $KEY" "http://127.0.0.1:$LUA_PORT/" >/dev/null && break; sleep 0.1; done
check "http://127.0.0.1:$LUA_PORT/v2/models/m/infer" "x-api-key: $KEY"
check "http://$BARE_ADDR/v2/models/m/infer" "x-none: 1"
for gw in "$FULL_ADDR" "$NOAUDIT_ADDR" "$NOLOG_ADDR"; do
  check "http://$gw/key/v2/models/m/infer" "x-api-key: $KEY"
  check "http://$gw/redis/v2/models/m/infer" "x-api-key: $KEY"
  check "http://$gw/jwt/v2/models/m/infer" "authorization: Bearer $TOKEN"
done

audit_tid() { for t in /proc/"$FULL_PID"/task/*; do if [ "$(cat "$t/comm")" = modelgate-audit ]; then basename "$t"; fi; done; }
AUDIT_TID=$(audit_tid)
switches() { awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$FULL_PID/task/$AUDIT_TID/status"; }
LOG_TID=$(for t in /proc/"$FULL_PID"/task/*; do if [ "$(cat "$t/comm")" = access-log ]; then basename "$t"; fi; done)
thread_ns() { awk '{print $1}' "/proc/$FULL_PID/task/$1/schedstat"; }   # time on CPU, ns
requests() { grep -oE '[0-9]+ requests in' "$OUT/$1.wrk" | cut -d' ' -f1; }

echo -e "peer\trps\tp50_us\tp99_us\tcpu_us_per_req\tnon2xx" > "$OUT/summary.tsv"
: > "$OUT/wakeups.tsv"
for r in $(seq "${ROUNDS:-3}"); do
  run "direct-$r" "http://127.0.0.1:$UP_PORT/v2/models/m/infer"
  run "nginx-$r" "http://127.0.0.1:$NG_PORT/v2/models/m/infer" "$NG_WORKER"
  run "kong-like-$r" "http://127.0.0.1:$LUA_PORT/v2/models/m/infer" "$LUA_WORKER" "x-api-key: $KEY"
  run "mg-bare-$r" "http://$BARE_ADDR/v2/models/m/infer" "$BARE_PID"
  s0=$(switches) a0=$(thread_ns "$AUDIT_TID") l0=$(thread_ns "$LOG_TID")
  run "mg-full-$r" "http://$FULL_ADDR/key/v2/models/m/infer" "$FULL_PID" "x-api-key: $KEY"
  s1=$(switches) a1=$(thread_ns "$AUDIT_TID") l1=$(thread_ns "$LOG_TID")
  echo -e "$r\t$((s1 - s0))\t$(requests "mg-full-$r")\t$((a1 - a0))\t$((l1 - l0))" >> "$OUT/wakeups.tsv"
  run "mg-full-jwt-$r" "http://$FULL_ADDR/jwt/v2/models/m/infer" "$FULL_PID" "authorization: Bearer $TOKEN"
  run "mg-full-redis-$r" "http://$FULL_ADDR/redis/v2/models/m/infer" "$FULL_PID" "x-api-key: $KEY"
  run "mg-full-noaudit-$r" "http://$NOAUDIT_ADDR/key/v2/models/m/infer" "$NOAUDIT_PID" "x-api-key: $KEY"
  run "mg-full-nolog-$r" "http://$NOLOG_ADDR/key/v2/models/m/infer" "$NOLOG_PID" "x-api-key: $KEY"
done
summarize nginx direct kong-like mg-bare mg-full mg-full-jwt mg-full-redis mg-full-noaudit mg-full-nolog
python3 - "$OUT/summary.tsv" "$OUT/wakeups.tsv" <<'PY' | tee -a "$OUT/ratios.txt"
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()[1:]]
med = {}
for r in rows:
    med.setdefault(r[0].rsplit("-", 1)[0], []).append(r)
m = {p: {k: statistics.median(float(r[i]) for r in rs) for k, i in (("rps", 1), ("p99", 3), ("cpu", 4))} for p, rs in med.items()}
full, kong, ng = m["mg-full"], m["kong-like"], m["nginx"]
print(f"targets: mg-full/kong-like rps {full['rps'] / kong['rps']:.2f}x (>= 1.0), mg-full/nginx {full['rps'] / ng['rps']:.2f}x (>= 0.85), "
      f"mg-bare/nginx {m['mg-bare']['rps'] / ng['rps']:.2f}x (>= 0.95) with cpu {m['mg-bare']['cpu'] / ng['cpu']:.2f}x (<= 1.05), "
      f"jwt/key {m['mg-full-jwt']['rps'] / full['rps']:.2f}x (>= 0.95), redis/local {m['mg-full-redis']['rps'] / full['rps']:.2f}x (>= 0.85)")
print(f"audit cost: {full['cpu'] - m['mg-full-noaudit']['cpu']:+.1f} cpu us/req; access log cost: {m['mg-full-noaudit']['cpu'] - m['mg-full-nolog']['cpu']:+.1f} cpu us/req")
wk = [l.split("\t") for l in open(sys.argv[2]).read().splitlines()]
print("audit writer wake-ups per request:", ", ".join(f"{int(s) / int(n):.4f}" for _, s, n, *_ in wk))
print("writer threads' CPU per request (ns), audit / access log:", ", ".join(f"{int(a) / int(n):.0f} / {int(l) / int(n):.0f}" for _, _, n, a, l in wk))
PY

# Added latency at a constant rate: half of nginx's median RPS.
RATE=$(python3 -c 'import statistics,sys; rows=[l.split("\t") for l in open(sys.argv[1]).read().splitlines()[1:]]; print(int(statistics.median(float(r[1]) for r in rows if r[0].rsplit("-",1)[0]=="nginx")/2))' "$OUT/summary.tsv")
: > "$OUT/latency.jsonl"
load() {  # load NAME URL [HEADER]
  local h=(); [ -n "${3:-}" ] && h=(-H "$3")
  taskset -c 1 "$BIN" bench-load "$2" --rate "$RATE" --seconds "$DUR" --connections "$CONNS" "${h[@]}" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); d["peer"]=sys.argv[1]; print(json.dumps(d))' "$1" | tee -a "$OUT/latency.jsonl"
}
for r in $(seq "${ROUNDS:-3}"); do
  load direct "http://127.0.0.1:$UP_PORT/v2/models/m/infer"
  load nginx "http://127.0.0.1:$NG_PORT/v2/models/m/infer"
  load kong-like "http://127.0.0.1:$LUA_PORT/v2/models/m/infer" "x-api-key: $KEY"
  load mg-full "http://$FULL_ADDR/key/v2/models/m/infer" "x-api-key: $KEY"
done >/dev/null
python3 - "$OUT/latency.jsonl" "$RATE" <<'PY' | tee -a "$OUT/ratios.txt"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
peers = ["direct", "nginx", "kong-like", "mg-full"]
med = {p: {k: statistics.median(r[k] for r in rows if r["peer"] == p) for k in ("p50_us", "p99_us", "rate_achieved", "errors")} for p in peers}
print(f"constant rate {sys.argv[2]} rps (half of nginx's median), medians of rounds:")
for p in peers:
    m = med[p]
    print(f"{p:10s} achieved {m['rate_achieved']:7.0f} rps  errors {m['errors']:.0f}  p50 {m['p50_us']:6.0f} us  p99 {m['p99_us']:6.0f} us  "
          f"p99 - direct {m['p99_us'] - med['direct']['p99_us']:+6.0f} us")
PY
