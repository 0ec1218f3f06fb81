#!/usr/bin/env bash
# Gateway benchmark: modelgate vs nginx (proxy_pass + upstream keepalive) vs direct, same upstream, same run.
# The proxy under test runs on core 0 with one worker; wrk and the upstream share core 1.
# Usage: bench/run.sh [duration_seconds]   (results in bench/out/, summary on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=${CONNS:-50}
OUT=bench/out
mkdir -p "$OUT"
rm -rf "$OUT"/*

. bench/lib.sh

start_nginx_proxy

# modelgate: bare route, one worker, core 0.
cat > "$OUT/gateway.yaml" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
server: { watch: false }
upstreams:
  u: { targets: ["http://127.0.0.1:$UP_PORT"] }
routes:
  - name: bench
    match: { path_prefix: / }
    upstream: u
YAML
RUST_LOG=warn taskset -c 0 "$BIN" gateway --config "$OUT/gateway.yaml" --workers 1 --ready-file "$OUT/mg.ready" > "$OUT/mg.stdout" 2> "$OUT/mg.stderr" & MG_PID=$!; PIDS+=($MG_PID)
for _ in $(seq 100); do [ -s "$OUT/mg.ready" ] && break; sleep 0.1; done
MG_ADDR=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gateway"])' "$OUT/mg.ready")
MG_ADMIN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$OUT/mg.ready")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$NG_PORT/" >/dev/null && curl -sf "http://127.0.0.1:$UP_PORT/" >/dev/null && break; sleep 0.1; done
NG_WORKER=$(pgrep -P "$NG_PID" | head -1)   # the nginx worker does the proxying; the master only supervises

echo -e "peer\trps\tp50_us\tp99_us\tcpu_us_per_req\tnon2xx" > "$OUT/summary.tsv"
# Peers alternate, ROUNDS times, so drift on this shared machine hits both alike; the summary takes medians.
for r in $(seq "${ROUNDS:-3}"); do
  run "direct-$r" "http://127.0.0.1:$UP_PORT/v2/models/m/infer"
  run "nginx-$r" "http://127.0.0.1:$NG_PORT/v2/models/m/infer" "$NG_WORKER"
  run "modelgate-$r" "http://$MG_ADDR/v2/models/m/infer" "$MG_PID"
done
python3 - "$OUT/summary.tsv" <<'PY' | tee "$OUT/ratios.txt"
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()[1:]]
med = {}
for peer in ("direct", "nginx", "modelgate"):
    rs = [r for r in rows if r[0].rsplit("-", 1)[0] == peer]
    med[peer] = {k: statistics.median(float(r[i]) for r in rs) for k, i in (("rps", 1), ("p50", 2), ("p99", 3), ("cpu", 4))}
    print(f"median {peer}: {med[peer]['rps']:.0f} rps, p50 {med[peer]['p50']:.0f} us, p99 {med[peer]['p99']:.0f} us, cpu {med[peer]['cpu']:.1f} us/req")
m, n = med["modelgate"], med["nginx"]
print(f"modelgate/nginx: rps {m['rps']/n['rps']:.2f}x, p99 {m['p99']/n['p99']:.2f}x, cpu/req {m['cpu']/n['cpu']:.2f}x")
PY

# Reload of a generated 10,000-route config under load: time, RSS, and non-2xx during the reload.
python3 - "$OUT/gateway.yaml" "$UP_PORT" <<'PY'
import sys
path, port = sys.argv[1], sys.argv[2]
lines = ["listen: 127.0.0.1:0", "admin: { listen: 127.0.0.1:0 }", "server: { watch: false }", "upstreams:"]
for u in range(100):
    lines.append(f"  u{u}: {{ targets: [\"http://127.0.0.1:{port}\"] }}")
lines.append("routes:")
for i in range(10000):
    kind = i % 3
    m = {0: f"{{ path: /v2/models/m{i}/infer, methods: [POST] }}",
         1: f"{{ path: \"/t{i}/{{model}}/infer\" }}",
         2: f"{{ path_prefix: /p{i} }}"}[kind]
    lines.append(f"  - name: r{i}\n    match: {m}\n    upstream: u{i % 100}\n    plugins: [ {{ request_size: {{ max_body: 1MiB }} }} ]")
lines.append("  - name: bench\n    match: { path_prefix: / }\n    upstream: u0")
open(path, "w").write("\n".join(lines) + "\n")
PY
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
RSS_BEFORE=$(rss_kib "$MG_PID")
taskset -c 1 wrk -t1 -c"$CONNS" -d6s "http://$MG_ADDR/v2/models/m/infer" > "$OUT/reload.wrk" & WRK=$!
sleep 2
RELOAD_S=$(curl -s -o "$OUT/reload.json" -w '%{time_total}' -X POST "http://$MG_ADMIN/admin/reload")
wait $WRK
sleep 1   # let the allocator return the transient parse memory
RSS_AFTER=$(rss_kib "$MG_PID")
NON2XX=$(grep -oP 'Non-2xx or 3xx responses: \K\d+' "$OUT/reload.wrk" || echo 0)
ERRS=$(grep -oP 'Socket errors: .*' "$OUT/reload.wrk" || echo "Socket errors: none")
# The same reload with the gateway idle (no competing load on its core): median of 5.
IDLE_RELOADS=$(for _ in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_total}\n' -X POST "http://$MG_ADMIN/admin/reload"; done | sort -n | sed -n 3p)
sleep 1
RSS_IDLE=$(rss_kib "$MG_PID")
VALIDATE_S=$( { /usr/bin/time -f '%e %M' "$BIN" validate "$OUT/gateway.yaml" >/dev/null; } 2>&1 | tail -1)
{
  echo -e "reload_10k_routes_s\t$RELOAD_S\t$(cat "$OUT/reload.json" | tr -d '\n ')"
  echo -e "reload_10k_routes_idle_median_s\t$IDLE_RELOADS"
  echo -e "rss_kib_before_after_after6reloads\t$RSS_BEFORE\t$RSS_AFTER\t$RSS_IDLE"
  echo -e "wrk_across_reload_non2xx\t$NON2XX\t$ERRS\t$(grep -oP '\d+ requests in' "$OUT/reload.wrk")"
  echo -e "validate_10k_cli_s_and_maxrss_kib\t$VALIDATE_S"
} | tee -a "$OUT/summary.tsv"
