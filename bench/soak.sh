#!/usr/bin/env bash
# Soak: the gateway under steady authenticated load for a long while, with unauthenticated garbage mixed in, config
# reloads and replica restarts, and its memory watched. Bounded: it ends after DURATION seconds (default 600).
#
#   load      `modelgate bench-load` at RATE requests/s (default 1000) on 20 keep-alive connections, in 60 s
#             segments (p50/p99 and errors per segment), GETs to a route with auth api_key + policy + local
#             rate_limit, access log and audit log (fsync interval), balanced over two demo-upstream replicas
#   garbage   ~20 requests/s without a credential: random 1 KB paths and versions, random headers, junk bodies
#   reloads   every 30 s the config file is rewritten (a rate limit changes); the file watcher reloads it
#   restarts  every 90 s one replica (alternating) is killed with SIGKILL and started again on its port
#   memory    the gateway's RSS (VmRSS) every 10 s
#
# Verdicts (printed, and the exit status): no errors on the authenticated load (retries cover the killed replica);
# no upward RSS trend: the least-squares slope over the samples after the first minute, times the time they span,
# must stay under 5 % of the median RSS (or 2 MiB, whichever is larger); every reload applied; `audit verify` passes.
# p99 drift (last segment's p99 over the first's) is reported, not judged (this machine's timings move ±10 %).
#
# Usage: bench/soak.sh [DURATION_SECONDS]   (RATE=… to change the load; results in bench/out/soak/)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-600}
RATE=${RATE:-1000}
OUT=bench/out/soak
mkdir -p "$OUT"
rm -rf "${OUT:?}"/*
cargo build --release --locked -q
BIN=$PWD/target/release/modelgate
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_file() { for _ in $(seq 300); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; exit 1; }
json() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# Two replicas (real processes). A restart reuses the port, so the config does not change with it.
start_replica() {  # start_replica N [ADDR]
  rm -f "$OUT/up$1.ready"
  "$BIN" demo-upstream --name "r$1" --listen "${2:-127.0.0.1:0}" --ready-file "$OUT/up$1.ready" >/dev/null 2>&1 &
  eval "UP$1_PID=$!"
  PIDS+=($!)
  wait_file "$OUT/up$1.ready"
}
start_replica 1
start_replica 2
UP1=$(json "$OUT/up1.ready" addr) UP2=$(json "$OUT/up2.ready" addr)

KEY=$("$BIN" keys create --file "$OUT/keys.yaml" --consumer soak 2>/dev/null)
write_config() {  # write_config LIMIT
  cat > "$OUT/gateway.yaml.tmp" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
server: { reload_debounce: 100ms }
identity: { api_keys: { file: keys.yaml } }
observability: { access_log: { path: access.log } }
audit: { path: audit.log, fsync: interval }
upstreams:
  replicas: { targets: ["http://$UP1", "http://$UP2"], passive_health: { cooldown: 2s } }
routes:
  - name: models
    match: { path_prefix: /v2/models/ }
    upstream: replicas
    plugins:
      - auth: { methods: [api_key] }
      - policy: { allow: [ { consumers: [soak] } ] }
      - rate_limit: { limits: [ { limit: $1, per: 1s } ] }
YAML
  mv "$OUT/gateway.yaml.tmp" "$OUT/gateway.yaml"   # one rename: the watcher never sees half a file
}
write_config 1000000
RUST_LOG=warn "$BIN" gateway --config "$OUT/gateway.yaml" --ready-file "$OUT/gw.ready" >/dev/null 2>"$OUT/gateway.stderr" &
GW_PID=$!
PIDS+=($GW_PID)
wait_file "$OUT/gw.ready"
GW=$(json "$OUT/gw.ready" gateway) ADMIN=$(json "$OUT/gw.ready" admin)
version() { curl -s "http://$ADMIN/admin/config/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])'; }

START=$(date +%s)
END=$((START + DURATION))

# Memory: RSS every 10 s.
(
  while [ "$(date +%s)" -lt "$END" ]; do
    echo -e "$(($(date +%s) - START))\t$(awk '/^VmRSS/ {print $2}' "/proc/$GW_PID/status")" >> "$OUT/rss.tsv"
    sleep 10
  done
) & PIDS+=($!)

# Garbage: unauthenticated, random paths, headers and bodies.
(
  while [ "$(date +%s)" -lt "$END" ]; do
    junk=$(head -c 600 /dev/urandom | base64 -w0 | tr -dc 'a-zA-Z0-9' | head -c 1024)
    curl -s -o /dev/null "http://$GW/v2/models/digits/versions/$junk/infer" -H "x-junk-$RANDOM: $junk" || true
    curl -s -o /dev/null "http://$GW/v2/models/m$RANDOM/infer" -H 'x-api-key: mg_forged' --data-binary "$junk" || true
    curl -s -o /dev/null "http://$GW/$junk/../../etc/passwd" || true
    sleep 0.1
  done
) & PIDS+=($!)

# Reloads every 30 s, each checked to apply.
(
  n=0
  while [ $(($(date +%s) + 30)) -lt "$END" ]; do
    sleep 30
    n=$((n + 1))
    before=$(version)
    write_config $((1000000 + n))
    applied=no
    for _ in $(seq 100); do [ "$(version)" != "$before" ] && { applied=yes; break; }; sleep 0.1; done
    echo -e "$(($(date +%s) - START))\t$applied" >> "$OUT/reloads.tsv"
  done
) & PIDS+=($!)

# Replica restarts every 90 s, alternating.
(
  i=0
  while [ $(($(date +%s) + 90)) -lt "$END" ]; do
    sleep 90
    i=$((i % 2 + 1))
    if [ $i = 1 ]; then pid=$UP1_PID addr=$UP1; else pid=$UP2_PID addr=$UP2; fi
    kill -9 "$pid" 2>/dev/null || true
    sleep 1
    start_replica $i "$addr"
    echo -e "$(($(date +%s) - START))\tr$i" >> "$OUT/restarts.tsv"
  done
) & PIDS+=($!)

# Load, in 60 s segments.
while [ $(($(date +%s) + 5)) -lt "$END" ]; do
  left=$((END - $(date +%s)))
  seg=$((left < 60 ? left : 60))
  "$BIN" bench-load "http://$GW/v2/models/digits/infer" --rate "$RATE" --seconds "$seg" --connections 20 -H "x-api-key: $KEY" >> "$OUT/segments.jsonl"
done
sleep 1

"$BIN" audit verify "$OUT/audit.log" > "$OUT/audit-verify.txt" 2>&1 && AUDIT=ok || AUDIT=broken
python3 - "$OUT" "$AUDIT" <<'PY' | tee "$OUT/summary.txt"
import json, statistics, sys
out, audit = sys.argv[1], sys.argv[2]
rss = [tuple(map(int, l.split("\t"))) for l in open(f"{out}/rss.tsv") if l.strip()]
segs = [json.loads(l) for l in open(f"{out}/segments.jsonl") if l.strip()]
reloads = [l.split("\t") for l in open(f"{out}/reloads.tsv").read().splitlines()] if __import__("os").path.exists(f"{out}/reloads.tsv") else []
restarts = len(open(f"{out}/restarts.tsv").read().splitlines()) if __import__("os").path.exists(f"{out}/restarts.tsv") else 0
late = [(t, k) for t, k in rss if t >= 60] or rss
n = len(late)
mt = sum(t for t, _ in late) / n
mk = sum(k for _, k in late) / n
var = sum((t - mt) ** 2 for t, _ in late)
slope = sum((t - mt) * (k - mk) for t, k in late) / var if var else 0.0  # KiB per second
span = late[-1][0] - late[0][0]
growth = slope * span
median = statistics.median(k for _, k in rss)
bound = max(0.05 * median, 2048)
errors = sum(s["errors"] for s in segs)
requests = sum(s["requests"] for s in segs)
drift = segs[-1]["p99_us"] / segs[0]["p99_us"] if segs and segs[0]["p99_us"] else float("nan")
ok_reloads = sum(1 for r in reloads if r[1] == "yes")
print(f"duration {rss[-1][0] if rss else 0} s; {requests} authenticated requests, {errors} errors; "
      f"{ok_reloads}/{len(reloads)} reloads applied; {restarts} replica restarts; audit verify: {audit}")
print(f"RSS: first {rss[0][1]} KiB, last {rss[-1][1]} KiB, median {median:.0f} KiB; slope after the first minute "
      f"{slope * 60:+.1f} KiB/min, {growth:+.0f} KiB over {span} s (bound {bound:.0f} KiB)")
print("p99 per segment (us): " + " ".join(str(s["p99_us"]) for s in segs) + f"; drift last/first {drift:.2f}x")
verdicts = {
    "no errors": errors == 0,
    "no RSS trend": growth < bound,
    "reloads applied": ok_reloads == len(reloads),
    "audit chain intact": audit == "ok",
}
for k, v in verdicts.items():
    print(f"{'PASS' if v else 'FAIL'}: {k}")
sys.exit(0 if all(verdicts.values()) else 1)
PY
