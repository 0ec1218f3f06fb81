#!/usr/bin/env bash
# `modelgate authz` benchmark: the CPU cost of one allowed check (API key + policy + local rate limit), against the
# same route proxied by `modelgate gateway` in the same run; and what the check adds to a request proxied by nginx
# with `auth_request` (nginx alone vs nginx + auth_request to modelgate authz) and to one proxied by Envoy (Envoy alone
# vs Envoy + ext_authz over gRPC to modelgate authz, examples/authz/envoy.yaml, and over HTTP, envoy-http.yaml),
# p50/p99 over loopback.
# modelgate and the front proxies on core 0, wrk and the nginx upstream on core 1.
# Usage: bench/authz.sh [duration_seconds]   (results in bench/out/authz/, summary on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=${CONNS:-50}
OUT=bench/out/authz
mkdir -p "$OUT"
rm -rf "${OUT:?}"/*

. bench/lib.sh

KEY=$("$BIN" keys create --file "$OUT/keys.yaml" --consumer team-a --groups vision 2>/dev/null)
cat > "$OUT/gw.yaml" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
server: { watch: false }
identity: { api_keys: { file: keys.yaml } }
upstreams:
  u: { targets: ["http://127.0.0.1:$UP_PORT"] }
routes:
  - name: infer
    match: { path_prefix: /v2/models/digits }
    upstream: u
    plugins:
      - auth: { methods: [api_key] }
      - policy: { allow: [ { groups: [vision], models: [digits] } ] }
      - rate_limit: { limits: [ { name: requests, limit: 100000000, per: 1s, by: [consumer] } ] }
YAML
cp "$OUT/gw.yaml" "$OUT/authz.yaml"
launch_gateway gw
GWP_ADDR=$GW_ADDR GWP_PID=$GW_PID
RUST_LOG=warn taskset -c 0 "$BIN" authz --config "$OUT/authz.yaml" --workers 1 --ready-file "$OUT/authz.ready" > /dev/null 2> "$OUT/authz.stderr" & AZ_PID=$!; PIDS+=($AZ_PID)
for _ in $(seq 100); do [ -s "$OUT/authz.ready" ] && break; sleep 0.1; done
AZ_ADDR=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gateway"])' "$OUT/authz.ready")

# The front nginx (one worker, core 0): /direct proxies, /checked asks modelgate authz first (the docs' snippet).
AR_PORT=$(free_port)
mkdir -p "$OUT/front"
cat > "$OUT/front/nginx.conf" <<NGX
daemon off; worker_processes 1; pid $PWD/$OUT/front/nginx.pid; error_log $PWD/$OUT/front/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream u { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }
  upstream authz { server $AZ_ADDR; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$AR_PORT;
    location = /_modelgate {
      internal;
      proxy_pass http://authz;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI \$request_uri;
      proxy_set_header X-Original-Method \$request_method;
      proxy_set_header Host \$host;
      proxy_set_header X-Modelgate-Deny-Status 403;
    }
    location /direct/ { proxy_pass http://u/; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location /v2/ {
      auth_request /_modelgate;
      auth_request_set \$mg_consumer \$upstream_http_x_modelgate_consumer;
      proxy_set_header X-Modelgate-Consumer \$mg_consumer;
      proxy_set_header X-Api-Key "";
      proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection "";
    }
  } }
NGX
taskset -c 0 nginx -c "$PWD/$OUT/front/nginx.conf" -p "$PWD/$OUT/front" & PIDS+=($!)

# Envoy (one worker, core 0): examples/authz/envoy.yaml with its addresses replaced, and the same file without the
# ext_authz filter.
ENVOY=$(scripts/fetch-envoy)
EV_PORT=$(free_port); ED_PORT=$(free_port)
envoy_conf() { # CHECKED(0|1) PORT [EXAMPLE]
  local filter=(); [ "$1" = 1 ] || filter=(--no-filter)
  python3 bench/envoy_conf.py "${3:-envoy.yaml}" "$2" "$AZ_ADDR" "$UP_PORT" "${filter[@]}"
}
envoy_conf 1 "$EV_PORT" > "$OUT/envoy-checked.yaml"
envoy_conf 0 "$ED_PORT" > "$OUT/envoy-direct.yaml"
EH_PORT=$(free_port)
envoy_conf 1 "$EH_PORT" envoy-http.yaml > "$OUT/envoy-http.yaml"
taskset -c 0 "$ENVOY" -c "$OUT/envoy-checked.yaml" --concurrency 1 --use-dynamic-base-id -l warn > "$OUT/envoy-checked.log" 2>&1 & EVC_PID=$!; PIDS+=($EVC_PID)
taskset -c 0 "$ENVOY" -c "$OUT/envoy-direct.yaml" --concurrency 1 --use-dynamic-base-id -l warn > "$OUT/envoy-direct.log" 2>&1 & EVD_PID=$!; PIDS+=($EVD_PID)
taskset -c 0 "$ENVOY" -c "$OUT/envoy-http.yaml" --concurrency 1 --use-dynamic-base-id -l warn > "$OUT/envoy-http.log" 2>&1 & EVH_PID=$!; PIDS+=($EVH_PID)

cat > "$OUT/check.lua" <<LUA
-- wrk script: a Traefik-style check of POST /v2/models/digits/infer with the key.
wrk.headers["X-Forwarded-Method"] = "POST"
wrk.headers["X-Forwarded-Uri"] = "/v2/models/digits/infer"
wrk.headers["X-Api-Key"] = "$KEY"
LUA

for _ in $(seq 100); do curl -sf "http://127.0.0.1:$AR_PORT/direct/" >/dev/null && break; sleep 0.1; done
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $KEY" "http://$GWP_ADDR/v2/models/digits/infer")" = 200 ] || { echo "gateway refused the key"; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $KEY" -H 'x-forwarded-method: POST' -H 'x-forwarded-uri: /v2/models/digits/infer' "http://$AZ_ADDR/")" = 200 ] || { echo "authz refused the check"; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $KEY" "http://127.0.0.1:$AR_PORT/v2/models/digits/infer")" = 200 ] || { echo "nginx + auth_request refused"; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$AR_PORT/v2/models/digits/infer")" = 401 ] || { echo "nginx + auth_request let a call without a key through"; exit 1; }
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ED_PORT/" >/dev/null && curl -s -o /dev/null "http://127.0.0.1:$EV_PORT/" && break; sleep 0.1; done
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $KEY" "http://127.0.0.1:$EV_PORT/v2/models/digits/infer")" = 200 ] || { echo "envoy + ext_authz refused"; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$EV_PORT/v2/models/digits/infer")" = 401 ] || { echo "envoy + ext_authz let a call without a key through"; exit 1; }
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$EH_PORT/" && break; sleep 0.1; done
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $KEY" "http://127.0.0.1:$EH_PORT/v2/models/digits/infer")" = 200 ] || { echo "envoy + ext_authz (HTTP service) refused"; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$EH_PORT/v2/models/digits/infer")" = 401 ] || { echo "envoy + ext_authz (HTTP service) let a call without a key through"; exit 1; }

# cpu_us_per_req: modelgate's (authz for the checked rows, Envoy's own for envoy-direct); front_cpu: Envoy's when
# it calls ext_authz.
echo -e "peer\trps\tp50_us\tp99_us\tcpu_us_per_req\tnon2xx\tfront_cpu_us_per_req" > "$OUT/summary.tsv"
for r in $(seq "${ROUNDS:-3}"); do
  run "gateway-proxied-$r" "http://$GWP_ADDR/v2/models/digits/infer" "$GWP_PID" "x-api-key: $KEY"
  WRK_SCRIPT="$OUT/check.lua" run "authz-check-$r" "http://$AZ_ADDR/" "$AZ_PID"
  run "nginx-direct-$r" "http://127.0.0.1:$AR_PORT/direct/"
  run "nginx+auth_request-$r" "http://127.0.0.1:$AR_PORT/v2/models/digits/infer" "$AZ_PID" "x-api-key: $KEY"
  run "envoy-direct-$r" "http://127.0.0.1:$ED_PORT/v2/models/digits/infer" "$EVD_PID"
  run "envoy+ext_authz-$r" "http://127.0.0.1:$EV_PORT/v2/models/digits/infer" "$AZ_PID" "x-api-key: $KEY" "$EVC_PID"
  run "envoy+ext_authz_http-$r" "http://127.0.0.1:$EH_PORT/v2/models/digits/infer" "$AZ_PID" "x-api-key: $KEY" "$EVH_PID"
done
summarize gateway-proxied authz-check nginx-direct nginx+auth_request envoy-direct envoy+ext_authz envoy+ext_authz_http
