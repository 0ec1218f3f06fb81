#!/usr/bin/env bash
# Model-server benchmark on the digits model, or (MODEL_NAME=minilm) the MiniLM-L6 transformer with int8 weights, or
# (MODEL_NAME=minilm-f32) its float32 export, all PyTorch → ONNX, same machine, same run:
#   (1) each runtime in-process at batch 1/8/32 — the physical limit; (1b) tract with 1 and 2 threads per run;
#   (2) `modelgate serve` as a new user runs it — no config.yaml, onnxruntime found (`default`) or absent
#       (`default-tract`) — and with settings pinned in config.yaml, wrk at concurrency 1/8/32/64;
#   (3) a Python baseline, FastAPI + uvicorn + onnxruntime (bench/python_baseline.py), same requests.
# Servers run on core 0 (CPUS=0-1: on both cores, sharing core 1 with wrk, as on a machine where the server is
# alone), wrk on core 1. Usage: bench/serve.sh [seconds per run]. Results in bench/out/serve-MODEL[-cpus...]/.
# MODES picks server modes (default: all), SKIP_RUNTIME=1 / SKIP_PY=1 skip (1) / (3).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
MODEL_NAME=${MODEL_NAME:-digits}
CPUS=${CPUS:-0}
OUT=bench/out/serve-$MODEL_NAME; [ "$CPUS" = 0 ] || OUT=$OUT-cpus$CPUS
rm -rf "$OUT"; mkdir -p "$OUT"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --profile dist --locked -q
BIN=$PWD/target/dist/modelgate
# onnxruntime's library from the PyPI wheel (as scripts/test fetches it).
ORT_DYLIB_PATH=$(scripts/fetch-onnxruntime)
export ORT_DYLIB_PATH
case $MODEL_NAME in
  digits) MODEL=examples/models/digits/1/model.onnx; REQ=examples/digits/request.json; DYN=1 ;;
  # one sentence of 16 tokens per request
  minilm) scripts/fetch-minilm; MODEL=target/models/minilm-l6-int8.onnx; REQ=examples/minilm/request.json; DYN=16 ;;
  minilm-f32) scripts/fetch-minilm-f32; MODEL=target/models/minilm-l6-f32.onnx; REQ=examples/minilm/request.json; DYN=16 ;;
  *) echo "MODEL_NAME is digits, minilm or minilm-f32"; exit 1 ;;
esac
if [ ! -x bench/out/pyenv/bin/python ]; then
  python3 -m venv bench/out/pyenv
  bench/out/pyenv/bin/pip install -q fastapi uvicorn onnxruntime numpy
fi
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not up: $1"; exit 1; }

echo -e "peer\tconcurrency\trps\tp50_us\tp99_us\tnon2xx" > "$OUT/summary.tsv"
# run NAME URL CONC
run() {
  BODY_FILE=$REQ taskset -c 1 wrk -t1 -c"$3" -d2s -s bench/post.lua "$2" >/dev/null
  BODY_FILE=$REQ taskset -c 1 wrk -t1 -c"$3" -d"${DUR}s" --latency -s bench/post.lua "$2" > "$OUT/$1-c$3.wrk"
  python3 - "$1" "$3" "$OUT/$1-c$3.wrk" <<'PY' | tee -a "$OUT/summary.tsv"
import re, sys
name, conc, path = sys.argv[1], sys.argv[2], sys.argv[3]
t = open(path).read()
def lat(p):
    m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)" % p, t, re.M)
    return float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
bad = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", t)) else 0
print(f"{name}\t{conc}\t{rps:.0f}\t{lat(50):.0f}\t{lat(99):.0f}\t{bad}")
PY
}

# (1) runtimes in-process (SKIP_RUNTIME=1 skips)
[ "${SKIP_RUNTIME:-0}" = 1 ] || for backend in tract onnxruntime; do
  for b in 1 8 32; do
    echo -n "$backend " | tee -a "$OUT/runtime.jsonl"
    # threads: the served default (the cores this process may use: 1 under taskset)
    taskset -c "$CPUS" "$BIN" bench-runtime --backend "$backend" --model "$MODEL" --batch "$b" --dynamic-dim "$DYN" --seconds "$DUR" | tee -a "$OUT/runtime.jsonl"
  done
done

# (1b) tract's multithreaded matmul (`threads: 2`) against one thread, on both cores, in-process (the served runs
# below keep core 1 for wrk, so they cannot show it)
[ "${SKIP_RUNTIME:-0}" = 1 ] || for b in 1 8 32; do
  for t in 1 2; do
    echo -n "tract-threads$t " | tee -a "$OUT/runtime-threads.jsonl"
    "$BIN" bench-runtime --backend tract --model "$MODEL" --batch "$b" --dynamic-dim "$DYN" --threads "$t" --seconds "$DUR" | tee -a "$OUT/runtime-threads.jsonl"
  done
done

# (2) modelgate serve. default: no config.yaml, onnxruntime found (here through ORT_DYLIB_PATH; a user's python3
# package works the same); default-tract: no config.yaml and no onnxruntime to find; tract / tract-no-batching:
# pinned to tract, batching on / off (max_batch_size: 0).
for mode in ${MODES:-default default-tract tract-no-batching}; do
  repo="$OUT/repo-$mode"; mkdir -p "$repo/$MODEL_NAME/1"; cp "$MODEL" "$repo/$MODEL_NAME/1/model.onnx"
  case $mode in
    tract) echo "backend: tract" > "$repo/$MODEL_NAME/config.yaml" ;;
    tract-no-batching) printf 'backend: tract\nmax_batch_size: 0\n' > "$repo/$MODEL_NAME/config.yaml" ;;
  esac
  env=(); [ "$mode" = default-tract ] && env=(env -u ORT_DYLIB_PATH PATH=/usr/bin:/bin)
  port=$(free_port)
  RUST_LOG=warn taskset -c "$CPUS" "${env[@]}" "$BIN" serve --model-repository "$repo" --listen "127.0.0.1:$port" --grpc-listen 127.0.0.1:0 > "$OUT/serve-$mode.log" 2>&1 & PIDS+=($!)
  wait_http "http://127.0.0.1:$port/v2/health/ready"
  for c in 1 8 32 64; do run "modelgate-$mode" "http://127.0.0.1:$port/v2/models/$MODEL_NAME/infer" "$c"; done
  kill "${PIDS[-1]}"
done

# (3) Python baseline (SKIP_PY=1 skips)
[ "${SKIP_PY:-0}" = 1 ] && exit 0
port=$(free_port)
taskset -c "$CPUS" bench/out/pyenv/bin/python bench/python_baseline.py "$MODEL" "$port" > /dev/null 2>&1 & PIDS+=($!)
for _ in $(seq 200); do curl -sf -X POST -H 'content-type: application/json' -d @"$REQ" "http://127.0.0.1:$port/v2/models/$MODEL_NAME/infer" >/dev/null 2>&1 && break; sleep 0.1; done
for c in 1 8 32 64; do run python-fastapi-ort "http://127.0.0.1:$port/v2/models/$MODEL_NAME/infer" "$c"; done
