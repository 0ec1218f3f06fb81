#!/usr/bin/env bash
# Identity benchmark: the CPU cost per request of API-key lookup and JWT verification (RS256, cached key), with and
# without a policy, and API key with a signed assertion to the upstream, against the bare route of the same gateway in the same run; and key+policy with the audit log
# on (fsync: interval). The gateway runs on core 0 with one worker; wrk and the nginx upstream share core 1.
# Usage: bench/identity.sh [duration_seconds]   (results in bench/out/identity/, summary on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONNS=${CONNS:-50}
OUT=bench/out/identity
mkdir -p "$OUT"
rm -rf "${OUT:?}"/*

. bench/lib.sh

make_jwt
KEY=$("$BIN" keys create --file "$OUT/keys.yaml" --consumer team-a --groups vision 2>/dev/null)
"$BIN" keys signing-key --out "$OUT/assertion.pem" >/dev/null 2>&1

gateway_config() {  # gateway_config AUDIT_LINE
  cat <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
server: { watch: false }
identity:
  issuers:
    local: { issuer: https://bench.local, audiences: [modelgate], jwks_file: jwks.json, consumer_claim: client_id }
  api_keys: { file: keys.yaml }
  assertion: { signing_key: assertion.pem }
$1
upstreams:
  u: { targets: ["http://127.0.0.1:$UP_PORT"] }
routes:
  - { name: key, match: { path: /v2/models/k/infer }, upstream: u, plugins: [ { auth: { methods: [api_key] } } ] }
  - name: key-policy
    match: { path: /v2/models/digits/infer, headers: { x-api-key: "*" } }
    upstream: u
    plugins: [ { auth: { methods: [api_key] } }, { policy: { allow: [ { groups: [vision], models: [digits] } ] } } ]
  - { name: key-assert, match: { path: /v2/models/a/infer }, upstream: u, plugins: [ { auth: { methods: [api_key], assertion: true } } ] }
  - { name: jwt, match: { path: /v2/models/j/infer }, upstream: u, plugins: [ { auth: { methods: [jwt] } } ] }
  - name: jwt-policy
    match: { path: /v2/models/digits/infer, headers: { authorization: "*" } }
    upstream: u
    plugins: [ { auth: { methods: [jwt] } }, { policy: { allow: [ { groups: [vision], models: [digits] } ] } } ]
  - { name: bare, match: { path_prefix: / }, upstream: u }
YAML
}
start_gateway() {  # start_gateway NAME AUDIT_LINE → sets GW_ADDR, GW_PID
  gateway_config "$2" > "$OUT/$1.yaml"
  launch_gateway "$1"
}
start_gateway plain ""
PLAIN_ADDR=$GW_ADDR PLAIN_PID=$GW_PID
start_gateway audited "audit: { path: audit.log, fsync: interval }"
AUD_ADDR=$GW_ADDR AUD_PID=$GW_PID
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$UP_PORT/" >/dev/null && break; sleep 0.1; done
for path in v2/models/k/infer v2/models/a/infer v2/models/digits/infer; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $KEY" "http://$PLAIN_ADDR/$path")" = 200 ] || { echo "key auth failed on /$path"; exit 1; }
done
for path in v2/models/j/infer v2/models/digits/infer; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $TOKEN" "http://$PLAIN_ADDR/$path")" = 200 ] || { echo "jwt auth failed on /$path"; exit 1; }
done

echo -e "peer\trps\tp50_us\tp99_us\tcpu_us_per_req\tnon2xx" > "$OUT/summary.tsv"
for r in $(seq "${ROUNDS:-3}"); do
  run "bare-$r" "http://$PLAIN_ADDR/v2/models/digits/infer" "$PLAIN_PID"
  run "apikey-$r" "http://$PLAIN_ADDR/v2/models/k/infer" "$PLAIN_PID" "x-api-key: $KEY"
  run "apikey+policy-$r" "http://$PLAIN_ADDR/v2/models/digits/infer" "$PLAIN_PID" "x-api-key: $KEY"
  run "apikey+assertion-$r" "http://$PLAIN_ADDR/v2/models/a/infer" "$PLAIN_PID" "x-api-key: $KEY"
  run "jwt-$r" "http://$PLAIN_ADDR/v2/models/j/infer" "$PLAIN_PID" "authorization: Bearer $TOKEN"
  run "jwt+policy-$r" "http://$PLAIN_ADDR/v2/models/digits/infer" "$PLAIN_PID" "authorization: Bearer $TOKEN"
  run "apikey+policy+audit-$r" "http://$AUD_ADDR/v2/models/digits/infer" "$AUD_PID" "x-api-key: $KEY"
done
summarize bare apikey apikey+policy apikey+assertion jwt jwt+policy apikey+policy+audit
