// Drives the modelgate console in Debian's headless Chromium (playwright-core; no browser download), as a person
// would: sign in at the real IdP, read each view, create and revoke an API key, search the audit log, read a config
// diff, sign out; and as attackers would: a person outside the admin groups, a call without the CSRF token, a
// cross-site call, a session cookie replayed after logout. Run by crates/modelgate/tests/console.rs, which starts
// the IdP, the model server and the gateway and checks the JSON summary printed last.
//
// Environment: ADMIN (http://host:port of the admin listener), GATEWAY (the proxy), REQUEST (an inference body
// file), EXPECT_REQUESTS (requests the route has seen before the browser starts), SHOTS (a directory for one
// screenshot per view, or empty), APP (a page of the `oidc_session` route), CHROMIUM (default /usr/bin/chromium).
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const { ADMIN, GATEWAY, APP, REQUEST, EXPECT_REQUESTS, SHOTS } = process.env;
const summary = {};
const fail = (msg) => { throw new Error(msg); };
const check = (cond, msg) => { if (!cond) fail(msg); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});

async function shot(page, name) {
  if (!SHOTS) return;
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function signIn(page, user, start) {
  await page.goto(start || `${ADMIN}/console/`);
  // Redirected to the IdP's login form (the authorization code flow with PKCE).
  await page.waitForSelector('input[name="login"]');
  check(page.url().includes('/interaction/'), `expected the IdP's login form, at ${page.url()}`);
  await page.fill('input[name="login"]', user);
  await page.fill('input[name="password"]', `${user}-password`);
  const back = new URL(start || `${ADMIN}/console/`);
  await Promise.all([page.waitForNavigation({ url: (u) => u.port === back.port }), page.click('button[type="submit"]')]);
}

async function modelCall(key) {
  const r = await fetch(`${GATEWAY}/v2/models/digits/infer`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': key }, body: fs.readFileSync(REQUEST),
  });
  return r.status;
}

try {
  // --- an administrator ---------------------------------------------------------------------------------------
  const alice = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await alice.newPage();
  page.on('dialog', (d) => d.accept());
  await signIn(page, 'alice');
  await page.waitForSelector('#view[data-view="overview"]');
  const who = await page.textContent('.who');
  check(who.includes('alice@example.com'), `the header names the person: ${who}`);

  const cookies = await alice.cookies(ADMIN);
  const session = cookies.find((c) => c.name === 'mg_session');
  check(session, 'a session cookie was set');
  summary.cookie = { httpOnly: session.httpOnly, sameSite: session.sameSite, secure: session.secure, path: session.path };
  summary.cookie_leaks_id = /^[A-Za-z0-9_-]+$/.test(session.value) && session.value.length > 60;
  check(!cookies.some((c) => c.name === 'mg_login'), 'the login cookie is cleared after the callback');

  // Overview: the route's request count is the traffic sent before the browser started.
  const cell = page.locator('tr[data-route="infer"] td').nth(1);
  await cell.waitFor();
  summary.overview_requests = Number(await cell.textContent());
  check(summary.overview_requests === Number(EXPECT_REQUESTS), `overview shows ${summary.overview_requests} requests, expected ${EXPECT_REQUESTS}`);
  summary.overview_versions = await page.locator('tr[data-model="digits/1"]').count();
  await shot(page, 'overview');

  // Routes: the policy in words.
  await page.click('nav a[href="#routes"]');
  await page.waitForSelector('#view[data-view="routes"]');
  summary.policy = await page.locator('section[data-route="infer"] li').allTextContents();
  await shot(page, 'routes');

  // Models and versions.
  await page.click('nav a[href="#models"]');
  await page.waitForSelector('#view[data-view="models"]');
  summary.model_versions = await page.locator('section[data-model="digits"] tbody tr').allTextContents();
  await shot(page, 'models');

  // API keys: create one (shown once), call the model with it, revoke it, call again.
  await page.click('nav a[href="#keys"]');
  await page.waitForSelector('#view[data-view="keys"]');
  await page.fill('input[name="consumer"]', 'team-a');
  await page.fill('input[name="groups"]', 'vision');
  await page.click('button[type="submit"].primary');
  const secret = page.locator('code.secret');
  await secret.waitFor();
  const key = (await secret.textContent()).trim();
  const keyId = await secret.getAttribute('data-new-key');
  check(key.startsWith(`mg_${keyId}_`), `a new key: ${key.slice(0, 12)}…`);
  summary.call_with_new_key = await modelCall(key);
  await page.click(`tr[data-key="${keyId}"] button.danger`);
  await page.waitForSelector(`tr[data-key="${keyId}"] >> text=revoked`);
  summary.call_after_revoke = await modelCall(key);
  summary.key_shown_after_revoke = await page.locator('code.secret').count();
  await shot(page, 'keys');

  // The audit log: the allowed call and the refused one, by consumer; the chain is intact.
  await page.click('nav a[href="#audit"]');
  await page.waitForSelector('#view[data-view="audit"]');
  await page.fill('input[name="consumer"]', 'team-a');
  await page.selectOption('select[name="decision"]', 'allow');
  await page.fill('input[name="model"]', 'digits');
  await page.click('form[aria-label="Search the audit log"] button[type="submit"]');
  // The answer to this search (not the unfiltered list shown before it).
  await page.waitForSelector('[data-audit-query*="decision=allow"] tbody tr[data-seq]');
  summary.audit_allowed = await page.locator('#view tbody tr[data-seq]').count();
  summary.chain = await page.getAttribute('[data-chain]', 'data-chain');
  await page.fill('input[name="consumer"]', '');
  await page.fill('input[name="model"]', '');
  await page.selectOption('select[name="decision"]', 'deny');
  await page.fill('input[name="reason"]', 'revoked');
  await page.click('form[aria-label="Search the audit log"] button[type="submit"]');
  await page.waitForSelector('[data-audit-query*="reason=revoked"] tbody tr[data-seq]');
  summary.audit_revoked = await page.locator('#view tbody tr[data-seq]').allTextContents();
  await shot(page, 'audit');

  // Config: status, history and the diff of the earlier version to the active one.
  await page.click('nav a[href="#config"]');
  await page.waitForSelector('#view[data-view="config"]');
  await page.click('text=Diff to active');
  const diff = page.locator('pre[data-diff]');
  await diff.waitFor();
  summary.diff = await diff.textContent();
  await shot(page, 'config');

  // Keyboard: from a fresh page, Tab reaches the skip link, then the views in order; Enter opens one.
  await page.goto(`${ADMIN}/console/#overview`);
  await page.waitForSelector('#view[data-view="overview"]');
  const focused = () => page.evaluate(() => document.activeElement && document.activeElement.textContent.trim());
  summary.keyboard = [];
  for (let i = 0; i < 3; i += 1) {
    await page.keyboard.press('Tab');
    summary.keyboard.push(await focused());
  }
  await page.keyboard.press('Enter');
  await page.waitForSelector('#view[data-view="routes"]');
  summary.keyboard.push(await page.getAttribute('#view', 'data-view'));

  // CSRF: the page's own fetch without the token is refused; with it, allowed. A cross-site POST is refused even
  // with the token.
  summary.post_without_token = await page.evaluate(async () => (await fetch('/admin/reload', { method: 'POST' })).status);
  summary.post_with_token = await page.evaluate(async () => {
    const token = document.querySelector('meta[name="csrf-token"]').content;
    return (await fetch('/admin/reload', { method: 'POST', headers: { 'x-csrf-token': token } })).status;
  });
  const token = await page.getAttribute('meta[name="csrf-token"]', 'content');
  const cross = await alice.request.post(`${ADMIN}/admin/reload`, { headers: { origin: 'http://evil.example', 'x-csrf-token': token } });
  summary.cross_site_post = cross.status();

  // Sign out: the session ends at the server; the old cookie opens nothing.
  await Promise.all([page.waitForNavigation(), page.click('.who button[type="submit"]')]);
  summary.after_logout_url = new URL(page.url()).pathname;
  summary.after_logout_page = await page.textContent('h1');
  const replay = await fetch(`${ADMIN}/admin/health`, { headers: { cookie: `mg_session=${session.value}` } });
  summary.replayed_cookie = replay.status;
  await alice.close();

  // --- a person outside the admin groups ----------------------------------------------------------------------
  const bob = await browser.newContext();
  const bobPage = await bob.newPage();
  await signIn(bobPage, 'bob');
  summary.outsider_title = await bobPage.textContent('h1');
  summary.outsider_cookie = (await bob.cookies(ADMIN)).some((c) => c.name === 'mg_session');
  const bobApi = await bobPage.evaluate(async () => (await fetch('/admin/health')).status);
  summary.outsider_api = bobApi;

  // The same login in front of a web app: bob is sent to sign in (the IdP remembers him) and back to the page.
  await bobPage.goto(APP);
  if (new URL(bobPage.url()).pathname.startsWith('/interaction/')) {
    await bobPage.fill('input[name="login"]', 'bob');
    await bobPage.fill('input[name="password"]', 'bob-password');
    await Promise.all([bobPage.waitForNavigation({ url: (u) => u.pathname.startsWith('/app/') }), bobPage.click('button[type="submit"]')]);
  }
  summary.app_seen = JSON.parse(await bobPage.textContent('body'));
  summary.app_script_without_session = (await fetch(APP)).status;
  // Sign out through the gateway's page; the app then sends him to sign in again.
  await bobPage.goto(new URL('/.modelgate/logout', APP).href);
  await Promise.all([bobPage.waitForNavigation(), bobPage.click('button[type="submit"]')]);
  const again = await fetch(APP, { headers: { accept: 'text/html', cookie: (await bob.cookies(APP)).map((c) => `${c.name}=${c.value}`).join('; ') }, redirect: 'manual' });
  summary.app_after_logout = new URL(again.headers.get('location') || 'http://x/none', APP).pathname;
  await bob.close();

  // alice is signed in at the IdP but outside the app's policy: refused after her login.
  const alice2 = await browser.newContext();
  const alicePage = await alice2.newPage();
  const resp = await (async () => {
    await alicePage.goto(APP);
    await alicePage.fill('input[name="login"]', 'alice');
    await alicePage.fill('input[name="password"]', 'alice-password');
    const [r] = await Promise.all([alicePage.waitForNavigation({ url: (u) => u.pathname.startsWith('/app/') }), alicePage.click('button[type="submit"]')]);
    return r;
  })();
  summary.app_alice_status = resp.status();
  await alice2.close();

  summary.ok = true;
} catch (e) {
  summary.ok = false;
  summary.error = String(e && e.stack ? e.stack : e);
} finally {
  await browser.close();
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  process.exitCode = summary.ok ? 0 : 1;
}
