#!/usr/bin/env bash
# gRPC inference through the gateway's full chain against the model server directly, in one run. One model server
# (`modelgate serve`, the digits model, onnxruntime when present, gRPC on h2c) on core 1; h2load (nghttp2's HTTP/2
# load generator) on core 1; the gateway on core 0 with one worker. Peers alternate, ROUNDS times; medians.
#   direct     h2load → model server gRPC
#   mg-bare    h2load → gateway → model server: a `path_prefix: /` route, no plugins (the HTTP/2 proxying alone)
#   mg-full    h2load → gateway → model server: auth api_key, policy by model, local rate_limit, tensor_validation
#              (from gRPC ModelMetadata), metrics, access log to a file, audit (fsync interval)
# Every request is one unary `ModelInfer` of a 1×1×8×8 FP32 image in raw_input_contents (built with tritonclient's
# own protobuf classes). h2load counts HTTP statuses only, so afterwards the gateway's metrics must show every
# request as 2xx with the model's label, and the model server's as successes.
# Usage: bench/grpc.sh [duration_seconds]   (ROUNDS=3, CLIENTS=16, PROFILE=dist; results in bench/out/grpc/, summary on
# stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-16}
OUT=bench/out/grpc
mkdir -p "$OUT"
rm -rf "${OUT:?}"/*
command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client; }
PROFILE=${PROFILE:-dist}   # PROFILE=release: the quicker build, for a first look
cargo build --profile "$PROFILE" --locked -q
BIN=$PWD/target/$PROFILE/modelgate
ORT_DYLIB_PATH=$(scripts/fetch-onnxruntime)
export ORT_DYLIB_PATH
PY=$(scripts/fetch-pyclients)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_ready() { for _ in $(seq 300); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "not ready: $1"; exit 1; }
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# The request: a gRPC frame (flag, big-endian length, ModelInferRequest).
"$PY" - "$OUT/infer.bin" <<'PY'
import json, struct, sys
import numpy as np
from tritonclient.grpc import service_pb2
case = json.load(open("examples/digits/golden.json"))["cases"][0]
req = service_pb2.ModelInferRequest(model_name="digits")
t = req.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
req.raw_input_contents.append(np.array(case["input"], dtype=np.float32).tobytes())
msg = req.SerializeToString()
open(sys.argv[1], "wb").write(struct.pack(">BI", 0, len(msg)) + msg)
PY

RUST_LOG=warn taskset -c 1 "$BIN" serve --model-repository examples/models --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 \
  --ready-file "$OUT/serve.ready" > /dev/null 2> "$OUT/serve.stderr" & PIDS+=($!)
wait_ready "$OUT/serve.ready"
GRPC=$(field "$OUT/serve.ready" grpc); REST=$(field "$OUT/serve.ready" http)

KEY=$("$BIN" keys create --file "$OUT/keys.yaml" --consumer team-a 2>/dev/null)
cat > "$OUT/full.yaml" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
identity: { api_keys: { file: $PWD/$OUT/keys.yaml } }
audit: { path: $PWD/$OUT/audit.log, fsync: interval }
observability: { access_log: { path: $PWD/$OUT/access.log } }
upstreams:
  models: { targets: ["http://$GRPC"], protocol: http2 }
routes:
  - name: grpc-infer
    match: { path: /inference.GRPCInferenceService/ModelInfer, methods: [POST] }
    upstream: models
    plugins:
      - auth: { methods: [api_key] }
      - policy: { allow: [ { consumers: [team-a], models: [digits] } ] }
      - rate_limit: { limits: [ { limit: 1000000, per: 1s, by: [consumer] } ] }
      - tensor_validation: {}
YAML
cat > "$OUT/bare.yaml" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
upstreams:
  models: { targets: ["http://$GRPC"], protocol: http2 }
routes:
  - { name: grpc-bare, match: { path_prefix: / }, upstream: models }
YAML
RUST_LOG=warn taskset -c 0 "$BIN" gateway --config "$OUT/full.yaml" --workers 1 --ready-file "$OUT/gw.ready" > /dev/null 2> "$OUT/gw.stderr" & GW_PID=$!; PIDS+=($GW_PID)
wait_ready "$OUT/gw.ready"
GW=$(field "$OUT/gw.ready" gateway); ADMIN=$(field "$OUT/gw.ready" admin)
RUST_LOG=warn taskset -c 0 "$BIN" gateway --config "$OUT/bare.yaml" --workers 1 --ready-file "$OUT/bare.ready" > /dev/null 2> "$OUT/bare.stderr" & BARE_PID=$!; PIDS+=($BARE_PID)
wait_ready "$OUT/bare.ready"
BARE=$(field "$OUT/bare.ready" gateway)

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
echo -e "peer\trps\tp50_us\tp99_us\tgw_cpu_us\tfailed" > "$OUT/summary.tsv"
# run NAME ADDR: h2load on core 1 (2 s warm-up, then DUR s with a per-request log).
run() {
  local name=$1 addr=$2
  local args=(-c "$CLIENTS" -m 1 -d "$OUT/infer.bin" -H 'content-type: application/grpc' -H 'te: trailers' -H "x-api-key: $KEY")
  taskset -c 1 h2load "${args[@]}" -D 2 "http://$addr/inference.GRPCInferenceService/ModelInfer" > /dev/null
  local pid=$GW_PID; [ "$name" = "${name#mg-bare}" ] || pid=$BARE_PID
  local t0; t0=$(cpu_ticks "$pid")
  taskset -c 1 h2load "${args[@]}" -D "$DUR" --log-file "$OUT/$name.log" "http://$addr/inference.GRPCInferenceService/ModelInfer" > "$OUT/$name.h2load"
  local t1; t1=$(cpu_ticks "$pid")
  local gw_ticks=0; [ "${name%%-*}" = mg ] && gw_ticks=$((t1 - t0))
  python3 - "$name" "$OUT/$name.h2load" "$OUT/$name.log" "$gw_ticks" "$(getconf CLK_TCK)" <<'PY' | tee -a "$OUT/summary.tsv"
import re, statistics, sys
name, out, log, ticks, hz = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
failed = int(re.search(r"(\d+) failed", out).group(1))
rows = [l.split("\t") for l in open(log).read().splitlines() if l]
lat = sorted(int(r[2]) for r in rows)
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
cpu = ticks / hz * 1e6 / len(lat) if ticks else float("nan")
print(f"{name}\t{rps:.0f}\t{q(0.5)}\t{q(0.99)}\t{cpu:.1f}\t{failed}")
PY
}
for r in $(seq "$ROUNDS"); do
  run "direct-$r" "$GRPC"
  run "mg-bare-$r" "$BARE"
  run "mg-full-$r" "$GW"
done

# Every request through the gateway was answered OK by the model: its metrics agree with h2load's count.
python3 - "$OUT/summary.tsv" "http://$ADMIN/metrics" "http://$REST/metrics" <<'PY' | tee "$OUT/ratios.txt"
import statistics, sys, urllib.request
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()[1:]]
gw = urllib.request.urlopen(sys.argv[2]).read().decode()
ok = sum(float(l.rsplit(" ", 1)[1]) for l in gw.splitlines() if l.startswith('modelgate_requests_total{route="grpc-infer",model="digits"') and 'code="2xx"' in l)
bad = sum(float(l.rsplit(" ", 1)[1]) for l in gw.splitlines() if l.startswith('modelgate_requests_total{') and 'code="2xx"' not in l)
assert bad == 0, f"the gateway answered {bad} requests with an error"
assert all(r[5] == "0" for r in rows), "h2load saw failed requests"
print(f"gateway: {ok:.0f} requests 2xx for model digits, none refused")
med = {p: {k: statistics.median(float(r[i]) for r in rows if r[0].rsplit("-", 1)[0] == p) for k, i in (("rps", 1), ("p50", 2), ("p99", 3), ("cpu", 4))} for p in ("direct", "mg-bare", "mg-full")}
d, g = med["direct"], med["mg-full"]
for p, m in med.items():
    print(f"{p:8s} {m['rps']:7.0f} rps  p50 {m['p50']:6.0f} us  p99 {m['p99']:6.0f} us  gateway cpu {m['cpu']:5.1f} us/req")
b = med["mg-bare"]
for name, m in (("mg-bare", b), ("mg-full", g)):
    print(f"{name} / direct: rps {m['rps'] / d['rps']:.2f}x, added p50 {m['p50'] - d['p50']:+.0f} us, added p99 {m['p99'] - d['p99']:+.0f} us")
PY
