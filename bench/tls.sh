#!/usr/bin/env bash
# TLS termination against nginx, in one run, with the same certificate (ECDSA P-256, made here with openssl): each
# proxy with one worker on core 0 in front of the same nginx upstream (core 1), wrk `-t1 -cCONNS` on core 1.
#   *-keepalive   requests on kept-alive TLS connections: the cost of TLS records on top of proxying
#   *-handshake   `Connection: close` on every request, so every request is a new connection and a full TLS
#                 handshake (wrk does not resume sessions): the handshake rate
# Peers alternate, ROUNDS times (default 3); medians; CPU per request is the proxy process's (nginx: its worker).
# Usage: bench/tls.sh [duration_seconds]   (results in bench/out/tls/, summary on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-8}
CONNS=${CONNS:-50}
OUT=bench/out/tls
mkdir -p "$OUT"
rm -rf "${OUT:?}"/*
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }
. bench/lib.sh

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null

# nginx with TLS 1.2/1.3 and the same certificate, proxying with upstream keepalive.
NGS_PORT=$(free_port)
mkdir -p "$OUT/ngs"
cat > "$OUT/ngs/nginx.conf" <<NGX
daemon off; worker_processes 1; pid $PWD/$OUT/ngs/nginx.pid; error_log $PWD/$OUT/ngs/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream u { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NGS_PORT ssl;
    ssl_certificate $PWD/$OUT/cert.pem; ssl_certificate_key $PWD/$OUT/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
taskset -c 0 nginx -c "$PWD/$OUT/ngs/nginx.conf" -p "$PWD/$OUT/ngs" & NGS_PID=$!; PIDS+=($NGS_PID)

cat > "$OUT/mg.yaml" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
server: { watch: false }
tls: { certificates: [ { cert: cert.pem, key: key.pem } ] }
upstreams:
  u: { targets: ["http://127.0.0.1:$UP_PORT"] }
routes:
  - { name: bare, match: { path_prefix: / }, upstream: u }
YAML
launch_gateway mg
MG_ADDR=$GW_ADDR MG_PID=$GW_PID

for _ in $(seq 100); do curl -skf "https://127.0.0.1:$NGS_PORT/" >/dev/null && break; sleep 0.1; done
for url in "https://127.0.0.1:$NGS_PORT/" "https://$MG_ADDR/"; do
  [ "$(curl -sk -o /dev/null -w '%{http_code}' "$url")" = 200 ] || { echo "not 200: $url" >&2; exit 1; }
done
NGS_WORKER=$(pgrep -P "$NGS_PID" | head -1)

echo -e "peer\trps\tp50_us\tp99_us\tcpu_us_per_req\tnon2xx" > "$OUT/summary.tsv"
for r in $(seq "${ROUNDS:-3}"); do
  run "nginx-keepalive-$r" "https://127.0.0.1:$NGS_PORT/v2/models/m/infer" "$NGS_WORKER"
  run "mg-keepalive-$r" "https://$MG_ADDR/v2/models/m/infer" "$MG_PID"
  run "nginx-handshake-$r" "https://127.0.0.1:$NGS_PORT/v2/models/m/infer" "$NGS_WORKER" "Connection: close"
  run "mg-handshake-$r" "https://$MG_ADDR/v2/models/m/infer" "$MG_PID" "Connection: close"
done
summarize nginx-keepalive mg-keepalive
cp "$OUT/ratios.txt" "$OUT/ratios-keepalive.txt"
summarize nginx-handshake mg-handshake
cp "$OUT/ratios.txt" "$OUT/ratios-handshake.txt"
