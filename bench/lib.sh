# Shared by the benchmark scripts: nginx and wrk installed if missing, the release build, ports, the nginx
# upstream on core 1, and `run` (wrk on core 1 with CPU per request of the process under test). Sourced after
# `OUT`, `DUR` and `CONNS` are set.

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}"; fi
PROFILE=${PROFILE:-dist}   # PROFILE=release: the quicker build, for a first look
cargo build --profile "$PROFILE" --locked -q
BIN=target/$PROFILE/modelgate

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(free_port); NG_PORT=$(free_port)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Upstream: nginx answering a small body, one worker, core 1.
mkdir -p "$OUT/up" "$OUT/ng"
cat > "$OUT/up/nginx.conf" <<NGX
daemon off; worker_processes 1; pid $PWD/$OUT/up/nginx.pid; error_log $PWD/$OUT/up/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP_PORT; location / { return 200 '{"ok":true}'; } } }
NGX
taskset -c 1 nginx -c "$PWD/$OUT/up/nginx.conf" -p "$PWD/$OUT/up" & PIDS+=($!)

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# run NAME URL [PID] [HEADER] [PID2]: wrk on core 1; records RPS, p50, p99, non-2xx and (with PID) CPU µs per
# request; with PID2 (a front proxy, say) its CPU µs per request too, in a 7th column.
# WRK_SCRIPT=FILE runs wrk with that Lua script (bench/post.lua POSTs $BODY_FILE).
run() {
  local name=$1 url=$2 pid=${3:-} hdr=${4:-} pid2=${5:-}
  local h=(); [ -n "$hdr" ] && h=(-H "$hdr")
  [ -n "${WRK_SCRIPT:-}" ] && h+=(-s "$WRK_SCRIPT")
  taskset -c 1 wrk -t1 -c"$CONNS" -d2s "${h[@]}" "$url" >/dev/null   # warm-up
  local t0=0 u0=0; [ -n "$pid" ] && t0=$(cpu_ticks "$pid"); [ -n "$pid2" ] && u0=$(cpu_ticks "$pid2")
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "${h[@]}" "$url" > "$OUT/$name.wrk"
  local t1=0 u1=0; [ -n "$pid" ] && t1=$(cpu_ticks "$pid"); [ -n "$pid2" ] && u1=$(cpu_ticks "$pid2")
  python3 - "$name" "$OUT/$name.wrk" "$t0" "$t1" "$(getconf CLK_TCK)" "$u0" "$u1" <<'PY' | tee -a "$OUT/summary.tsv"
import re, sys
name, path, t0, t1, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
text = open(path).read()
def lat(p):
    m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)" % p, text, re.M)
    v, u = float(m.group(1)), m.group(2)
    return v * {"us": 1, "ms": 1000, "s": 1e6}[u]
reqs = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
cpu = (t1 - t0) / hz * 1e6 / reqs if t1 > t0 else float("nan")
u0, u1 = int(sys.argv[6]), int(sys.argv[7])
second = f"\t{(u1 - u0) / hz * 1e6 / reqs:.1f}" if u1 > u0 else ""
print(f"{name}\t{rps:.0f}\t{lat(50):.0f}\t{lat(99):.0f}\t{cpu:.1f}\t{non2xx}{second}")
PY
}

# summarize BASE PEER…: medians per peer from $OUT/summary.tsv (rows named PEER-ROUND), with the extra CPU per
# request and the RPS ratio against BASE; fails if any run had non-2xx answers. Writes $OUT/ratios.txt too.
summarize() {
  python3 - "$OUT/summary.tsv" "$@" <<'PY' | tee "$OUT/ratios.txt"
import statistics, sys
path, base, peers = sys.argv[1], sys.argv[2], sys.argv[2:]
rows = [l.split("\t") for l in open(path).read().splitlines()[1:]]
med = {}
for peer in peers:
    rs = [r for r in rows if r[0].rsplit("-", 1)[0] == peer]
    med[peer] = {k: statistics.median(float(r[i]) for r in rs) for k, i in (("rps", 1), ("p99", 3), ("cpu", 4))}
    assert all(r[5] == "0" for r in rs), f"{peer}: non-2xx answers"
b = med[base]
for peer, m in med.items():
    print(f"{peer:22s} {m['rps']:7.0f} rps  p99 {m['p99']:5.0f} us  cpu {m['cpu']:5.1f} us/req  "
          f"extra cpu {m['cpu'] - b['cpu']:+5.1f} us/req  rps {m['rps'] / b['rps']:.2f}x {base}")
PY
}

# launch_gateway NAME: runs the gateway on "$OUT/NAME.yaml" (one worker, core 0), waits for its ready file;
# sets GW_ADDR and GW_PID.
launch_gateway() {
  RUST_LOG=warn taskset -c 0 "$BIN" gateway --config "$OUT/$1.yaml" --workers 1 --ready-file "$OUT/$1.ready" > /dev/null 2> "$OUT/$1.stderr" & GW_PID=$!; PIDS+=($GW_PID)
  for _ in $(seq 100); do [ -s "$OUT/$1.ready" ] && break; sleep 0.1; done
  GW_ADDR=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gateway"])' "$OUT/$1.ready")
}

# start_nginx_proxy: the nginx peer (proxy_pass with upstream keepalive, one worker, core 0) on NG_PORT; sets
# NG_PID (the master; its worker does the proxying).
start_nginx_proxy() {
  cat > "$OUT/ng/nginx.conf" <<NGX
daemon off; worker_processes 1; pid $PWD/$OUT/ng/nginx.pid; error_log $PWD/$OUT/ng/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream u { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NG_PORT;
    location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGX
  taskset -c 0 nginx -c "$PWD/$OUT/ng/nginx.conf" -p "$PWD/$OUT/ng" & NG_PID=$!; PIDS+=($NG_PID)
}

# make_jwt: an RS256 key's public JWKS in $OUT/jwks.json for the gateway, and one token signed with it (1 h
# lifetime; consumer claim client_id=team-a, group vision) in $OUT/token and TOKEN.
make_jwt() {
  node - "$OUT" <<'JS'
const crypto = require('crypto'), fs = require('fs'), out = process.argv[2];
const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
fs.writeFileSync(`${out}/jwks.json`, JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'bench', alg: 'RS256', use: 'sig' }] }));
const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
const now = Math.floor(Date.now() / 1000);
const input = `${b64({ alg: 'RS256', typ: 'JWT', kid: 'bench' })}.${b64({ iss: 'https://bench.local', aud: 'modelgate', sub: 'svc', client_id: 'team-a', scope: 'digits:infer', groups: ['vision'], iat: now, exp: now + 3600 })}`;
fs.writeFileSync(`${out}/token`, `${input}.${crypto.sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`);
JS
  TOKEN=$(cat "$OUT/token")
}
