// A STAND-IN for AWS STS, for modelgate's AWS IAM tests (the real STS cannot be reached from a test machine).
// It answers GetCallerIdentity as STS does: it verifies the SigV4 query signature of a presigned request against
// a fixed table of test credentials, checks the request has not expired, and answers with STS's XML — the
// GetCallerIdentityResponse, or an ErrorResponse with status 403. Port chosen by the OS; it prints one JSON ready
// line: {"event":"ready","endpoint":"http://127.0.0.1:PORT"}.
//
// Test-only endpoints: GET /test/calls — how many GetCallerIdentity calls it answered (to observe caching);
// POST /test/fail — answer every later call with 503 (an STS outage that still accepts connections);
// POST /test/throttle — answer every later call as STS throttles: HTTP 400 with the code `Throttling`;
// POST /test/slow — hold every later answer 300 ms (to observe calls in flight at once).
import http from 'node:http';
import crypto from 'node:crypto';

// access key id → secret and the identity STS reports for it (all made up).
const CREDENTIALS = {
  AKIATESTALICE0000001: { secret: 'alice-secret-key', arn: 'arn:aws:iam::111122223333:user/alice', userId: 'AIDATESTALICE', account: '111122223333' },
  ASIATESTTEAMA0000001: { secret: 'team-a-secret-key', arn: 'arn:aws:sts::111122223333:assumed-role/ml-team-a/session-1', userId: 'AROATESTTEAMA:session-1', account: '111122223333' },
  AKIATESTMALLORY00001: { secret: 'mallory-secret-key', arn: 'arn:aws:iam::999999999999:user/mallory', userId: 'AIDATESTMALLORY', account: '999999999999' },
};

let calls = 0;
let failing = false;
let throttling = false;
let slow = false;

const hmac = (key, data) => crypto.createHmac('sha256', key).update(data).digest();
const sha256hex = (data) => crypto.createHash('sha256').update(data).digest('hex');
// RFC 3986 encoding as SigV4 wants it.
const enc = (s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

function error(res, status, code, message) {
  res.writeHead(status, { 'content-type': 'text/xml' });
  res.end(`<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>${code}</Code><Message>${message}</Message></Error>
  <RequestId>${crypto.randomUUID()}</RequestId>
</ErrorResponse>
`);
}

function getCallerIdentity(req, res, url) {
  calls += 1;
  if (slow) {
    setTimeout(() => getCallerIdentityNow(req, res, url), 300);
    return;
  }
  getCallerIdentityNow(req, res, url);
}

function getCallerIdentityNow(req, res, url) {
  if (failing) return error(res, 503, 'ServiceUnavailable', 'stand-in outage');
  if (throttling) return error(res, 400, 'Throttling', 'Rate exceeded');
  const q = url.searchParams;
  if (q.get('Action') !== 'GetCallerIdentity' || q.get('Version') !== '2011-06-15') return error(res, 400, 'InvalidAction', 'only GetCallerIdentity');
  const [accessKey, date, region, service, terminal] = (q.get('X-Amz-Credential') || '').split('/');
  const cred = CREDENTIALS[accessKey];
  if (!cred) return error(res, 403, 'InvalidClientTokenId', 'The security token included in the request is invalid.');
  const amzDate = q.get('X-Amz-Date') || '';
  const signedHeaders = (q.get('X-Amz-SignedHeaders') || '').split(';');
  const canonicalQuery = [...q.entries()]
    .filter(([k]) => k !== 'X-Amz-Signature')
    .map(([k, v]) => [enc(k), enc(v)])
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const canonicalHeaders = signedHeaders.map((h) => `${h}:${(req.headers[h] || '').trim()}\n`).join('');
  const canonicalRequest = ['GET', url.pathname, canonicalQuery, canonicalHeaders, signedHeaders.join(';'), sha256hex('')].join('\n');
  const scope = `${date}/${region}/${service}/${terminal}`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256hex(canonicalRequest)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${cred.secret}`, date), region), service), terminal);
  const want = hmac(key, stringToSign).toString('hex');
  const got = q.get('X-Amz-Signature') || '';
  if (got.length !== want.length || !crypto.timingSafeEqual(Buffer.from(got), Buffer.from(want))) {
    return error(res, 403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided.');
  }
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  const signedAt = m ? Date.UTC(m[1], m[2] - 1, m[3], m[4], m[5], m[6]) : NaN;
  if (!(Date.now() < signedAt + Number(q.get('X-Amz-Expires')) * 1000)) return error(res, 403, 'AccessDenied', 'Request has expired');
  res.writeHead(200, { 'content-type': 'text/xml' });
  res.end(`<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>${cred.arn}</Arn>
    <UserId>${cred.userId}</UserId>
    <Account>${cred.account}</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata>
    <RequestId>${crypto.randomUUID()}</RequestId>
  </ResponseMetadata>
</GetCallerIdentityResponse>
`);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, `http://${req.headers.host}`);
  if (url.pathname === '/test/calls') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ calls }));
  }
  if (url.pathname === '/test/fail' && req.method === 'POST') {
    failing = true;
    res.writeHead(200);
    return res.end();
  }
  if (url.pathname === '/test/throttle' && req.method === 'POST') {
    throttling = true;
    res.writeHead(200);
    return res.end();
  }
  if (url.pathname === '/test/slow' && req.method === 'POST') {
    slow = true;
    res.writeHead(200);
    return res.end();
  }
  if (req.method === 'GET' && url.pathname === '/') return getCallerIdentity(req, res, url);
  return error(res, 404, 'NotFound', 'stand-in: unknown path');
});
server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ event: 'ready', endpoint: `http://127.0.0.1:${server.address().port}` }));
});
