// The modelgate console: views over the admin API. Every call is the admin API's own (GET /admin/..., POST with
// the session's CSRF token); the page holds no credential but the session cookie the browser sends, and shows no
// secret but a new API key, once.
'use strict';

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const view = document.getElementById('view');
let timer = null;
// Bumped at each navigation: a view still loading when the person moved on does not draw over the new one.
let gen = 0;

// --- helpers ---------------------------------------------------------------------------------------------------

/** A DOM element: attributes (on* are listeners) and children (strings become text, never HTML). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** Calls the admin API; resolves to {status, body} (JSON when the answer is JSON, text otherwise). */
async function api(method, path, body) {
  const headers = { accept: 'application/json' };
  if (method !== 'GET') headers['x-csrf-token'] = csrf;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(path, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) { location.href = '/console/login?return_to=' + encodeURIComponent('/console/' + location.hash); }
  const type = r.headers.get('content-type') || '';
  return { status: r.status, body: type.includes('json') ? await r.json() : await r.text() };
}

function errorText(res) {
  const e = res.body && res.body.error;
  return e ? `${e.code}: ${e.message}` : `status ${res.status}`;
}

function table(columns, rows, rowAttrs) {
  return el('table', {},
    el('thead', {}, el('tr', {}, columns.map((c) => el('th', { scope: 'col', class: c.num ? 'num' : null }, c.title)))),
    el('tbody', {}, rows.length === 0
      ? el('tr', {}, el('td', { colspan: columns.length, class: 'muted' }, 'Nothing yet.'))
      : rows.map((r) => el('tr', rowAttrs ? rowAttrs(r) : {}, columns.map((c) => el('td', { class: c.num ? 'num' : null }, c.value(r)))))));
}

const fmt = {
  rps: (v) => (v === undefined ? '–' : v.toFixed(v < 10 ? 2 : 1)),
  pct: (v) => (v === undefined ? '–' : (100 * v).toFixed(1) + ' %'),
  ms: (v) => (v === null || v === undefined ? '–' : v.toFixed(1) + ' ms'),
  list: (v) => (v && v.length ? v.join(', ') : '–'),
};

function show(g, title, ...content) {
  if (g !== gen) return;
  view.replaceChildren(el('h1', {}, title), ...content.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

// --- views -----------------------------------------------------------------------------------------------------

async function overview(g) {
  const [routes, models] = await Promise.all([api('GET', '/admin/routes'), api('GET', '/admin/models')]);
  if (routes.status !== 200) return show(g, 'Overview', el('p', { class: 'bad' }, errorText(routes)));
  const live = (r) => r.live || {};
  const totals = routes.body.routes.reduce((t, r) => ({ n: t.n + (live(r).requests_total || 0), e: t.e + (live(r).errors_total || 0) }), { n: 0, e: 0 });
  show(g, 'Overview',
    el('p', { class: 'muted' }, 'Live over the last minute; refreshed every 2 seconds. 5xx ratio counts answers with status 500 and above.'),
    el('p', {}, `Requests since start: ${totals.n}, of which 5xx: ${totals.e}.`),
    el('h2', {}, 'Routes'),
    table([
      { title: 'Route', value: (r) => r.name },
      { title: 'Requests', num: true, value: (r) => live(r).requests_total },
      { title: 'RPS', num: true, value: (r) => fmt.rps(live(r).requests_per_second) },
      { title: '5xx ratio', num: true, value: (r) => fmt.pct(live(r).error_rate) },
      { title: 'p99', num: true, value: (r) => fmt.ms(live(r).p99_ms) },
    ], routes.body.routes, (r) => ({ 'data-route': r.name })),
    el('h2', {}, 'Model versions'),
    table([
      { title: 'Model', value: (m) => m.model },
      { title: 'Version', value: (m) => m.model_version || '–' },
      { title: 'Requests', num: true, value: (m) => m.live.requests_total },
      { title: 'RPS', num: true, value: (m) => fmt.rps(m.live.requests_per_second) },
      { title: '5xx ratio', num: true, value: (m) => fmt.pct(m.live.error_rate) },
      { title: 'p99', num: true, value: (m) => fmt.ms(m.live.p99_ms) },
    ], models.status === 200 ? models.body.models : [], (m) => ({ 'data-model': `${m.model}/${m.model_version || ''}` })));
  if (g === gen) timer = setTimeout(() => overview(g), 2000);
}

async function routes(g) {
  const res = await api('GET', '/admin/routes');
  if (res.status !== 200) return show(g, 'Routes', el('p', { class: 'bad' }, errorText(res)));
  show(g, 'Routes', ...res.body.routes.map((r) => el('section', { 'data-route': r.name },
    el('h2', {}, r.name),
    el('p', {}, el('strong', {}, 'Matches '), r.match || '–', el('br'), el('strong', {}, 'Upstream '), r.upstream || 'none (checks only)'),
    el('p', {}, el('strong', {}, 'Plugins '), r.plugins.map((p) => p.name + (p.from && p.from !== 'route' ? ` (from ${p.from})` : '')).join(' → ') || 'none'),
    r.policy && r.policy.length ? el('ul', { class: 'plain', 'aria-label': 'Policy' }, r.policy.map((s) => el('li', {}, s))) : el('p', { class: 'muted' }, 'No policy: every caller the auth plugin accepts (or anyone without one).'))));
}

async function models(g) {
  const res = await api('GET', '/admin/models');
  if (res.status !== 200) return show(g, 'Models', el('p', { class: 'bad' }, errorText(res)));
  const managed = res.body.managed || [];
  const sections = [];
  for (const m of managed) {
    const rollout = await api('GET', `/admin/models/${encodeURIComponent(m.model)}/rollout`);
    const controls = rollout.status === 200
      ? el('div', {},
        el('p', {}, `Rollout: ${rollout.body.state || 'unknown'}` + (rollout.body.step !== undefined ? `, step ${rollout.body.step}` : '')),
        ['promote', 'pause', 'resume', 'rollback'].map((a) => el('button', { type: 'button', onclick: async () => {
          const r = await api('POST', `/admin/models/${encodeURIComponent(m.model)}/rollout/${a}`);
          if (r.status !== 200) alert(errorText(r));
          models(gen);
        } }, a)))
      : el('p', { class: 'muted' }, 'No rollout configured for this model.');
    const shadow = await api('GET', `/admin/models/${encodeURIComponent(m.model)}/shadow`);
    const shadows = shadow.status === 200 ? shadow.body.shadows : [];
    const compared = (sh) => Object.values(sh.results || {}).reduce((a, b) => a + b, 0);
    sections.push(el('section', { 'data-model': m.model },
      el('h2', {}, m.model),
      shadows.map((sh) => el('p', { 'data-shadow': sh.version },
        `Shadow version ${sh.version}: ${sh.sample.toFixed(1)} % of calls copied to ${sh.upstream}, ${compared(sh)} compared, agreement `
        + (sh.agreement === null ? '–' : fmt.pct(sh.agreement)) + `, ${sh.in_flight} in flight.`)),
      table([
        { title: 'Version', value: (v) => v.version },
        { title: 'State', value: (v) => v.state },
        { title: 'Traffic share', num: true, value: (v) => v.weight.toFixed(1) + ' %' },
        { title: 'Readiness', value: (v) => v.readiness },
        { title: 'Upstream', value: (v) => v.upstream },
      ], m.versions), controls));
  }
  show(g, 'Models and versions',
    managed.length ? sections : el('p', { class: 'muted' }, 'No model has versions managed by the gateway (models: in the config); traffic by version is on the overview.'),
    el('h2', {}, 'Served versions seen'),
    table([
      { title: 'Model', value: (m) => m.model },
      { title: 'Version', value: (m) => m.model_version || '–' },
      { title: 'Requests', num: true, value: (m) => m.live.requests_total },
    ], res.body.models));
}

async function keys(g, created) {
  const res = await api('GET', '/admin/keys');
  if (res.status !== 200) return show(g, 'API keys', el('p', { class: 'bad' }, errorText(res)));
  const act = (k, action) => async () => {
    if (action === 'revoke' && !confirm(`Revoke key ${k.id} of ${k.consumer}? Callers using it are refused at once.`)) return;
    const r = await api('POST', `/admin/keys/${encodeURIComponent(k.id)}/${action}`);
    if (r.status !== 200) return alert(errorText(r));
    keys(gen, action === 'rotate' ? r.body : undefined);
  };
  const form = el('form', { class: 'inline', 'aria-label': 'Create a key', onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const split = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
    const body = { consumer: f.get('consumer'), groups: split(f.get('groups')), scopes: split(f.get('scopes')) };
    if (f.get('expires')) body.expires = f.get('expires');
    const r = await api('POST', '/admin/keys', body);
    if (r.status !== 201) return alert(errorText(r));
    keys(gen, r.body);
  } },
  el('label', {}, 'Consumer', el('input', { name: 'consumer', required: true, autocomplete: 'off' })),
  el('label', {}, 'Groups (comma-separated)', el('input', { name: 'groups', autocomplete: 'off' })),
  el('label', {}, 'Scopes (comma-separated)', el('input', { name: 'scopes', autocomplete: 'off' })),
  el('label', {}, 'Expires after (e.g. 30d)', el('input', { name: 'expires', autocomplete: 'off' })),
  el('button', { type: 'submit', class: 'primary' }, 'Create key'));
  show(g, 'API keys',
    created ? el('div', { class: 'status ok', role: 'status' },
      el('p', {}, `New key ${created.id} for ${created.consumer}. Copy it now: it is shown only once and stored only as a hash.`),
      el('code', { class: 'secret', 'data-new-key': created.id }, created.key)) : null,
    form,
    table([
      { title: 'Id', value: (k) => k.id },
      { title: 'Consumer', value: (k) => k.consumer },
      { title: 'Groups', value: (k) => fmt.list(k.groups) },
      { title: 'Scopes', value: (k) => fmt.list(k.scopes) },
      { title: 'Created', value: (k) => k.created },
      { title: 'Expires', value: (k) => k.expires || 'never' },
      { title: 'Status', value: (k) => (k.revoked ? 'revoked' : 'active') },
      { title: 'Actions', value: (k) => (k.revoked ? '' : [
        el('button', { type: 'button', onclick: act(k, 'rotate'), 'aria-label': `Rotate key ${k.id}` }, 'Rotate'), ' ',
        el('button', { type: 'button', class: 'danger', onclick: act(k, 'revoke'), 'aria-label': `Revoke key ${k.id}` }, 'Revoke')]) },
    ], res.body.keys, (k) => ({ 'data-key': k.id })));
}

async function audit(g, params) {
  const q = new URLSearchParams(params || {});
  const res = await api('GET', '/admin/audit?' + q.toString());
  const field = (name, label, attrs) => el('label', {}, label, el('input', { name, value: q.get(name) || '', autocomplete: 'off', ...(attrs || {}) }));
  const form = el('form', { class: 'inline', 'aria-label': 'Search the audit log', onsubmit: (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const p = {};
    for (const [k, v] of f.entries()) if (v) p[k] = v;
    audit(gen, p);
  } },
  field('consumer', 'Consumer'), field('model', 'Model'),
  el('label', {}, 'Decision', el('select', { name: 'decision' }, ['', 'allow', 'deny', 'ok', 'failed'].map((d) => el('option', { value: d, selected: q.get('decision') === d }, d || 'any')))),
  field('reason', 'Reason contains'), field('since', 'Since (RFC 3339)', { placeholder: '2026-12-01T00:00:00Z' }), field('until', 'Until'),
  el('button', { type: 'submit', class: 'primary' }, 'Search'));
  if (res.status !== 200) return show(g, 'Audit log', form, el('p', { class: 'bad' }, errorText(res)));
  const chain = res.body.chain;
  show(g, 'Audit log', form,
    el('p', { class: 'status ' + (chain.intact ? 'ok' : 'bad'), 'data-chain': chain.intact ? 'intact' : 'broken' },
      chain.intact ? `Chain intact: ${chain.lines} records in ${chain.files} file(s), last seq ${chain.last_seq}.` : `Chain BROKEN: ${chain.error}`),
    el('p', { class: 'muted' }, `${res.body.records.length} record(s), newest first${res.body.truncated ? ' (more match: narrow the search)' : ''}.`),
    el('div', { 'data-audit-query': q.toString() }, table([
      { title: 'Seq', num: true, value: (r) => r.seq },
      { title: 'Time', value: (r) => r.time },
      { title: 'Type', value: (r) => r.type },
      { title: 'Consumer', value: (r) => r.consumer || '–' },
      { title: 'Model', value: (r) => (r.model ? r.model + (r.version ? ' v' + r.version : '') : '–') },
      { title: 'Decision', value: (r) => r.decision },
      { title: 'Reason', value: (r) => r.reason },
      { title: 'Route', value: (r) => r.route || '–' },
    ], res.body.records, (r) => ({ 'data-seq': r.seq }))));
}

async function config(g) {
  const [status, history] = await Promise.all([api('GET', '/admin/config/status'), api('GET', '/admin/config/history')]);
  if (status.status !== 200) return show(g, 'Config', el('p', { class: 'bad' }, errorText(status)));
  const s = status.body;
  const diffBox = el('div', { id: 'diff' });
  const showDiff = async (from) => {
    const r = await api('GET', `/admin/config/diff?from=${encodeURIComponent(from)}`);
    const text = typeof r.body === 'string' ? r.body : errorText(r);
    diffBox.replaceChildren(el('h2', {}, `Changes from ${from} to the active config`),
      el('pre', { 'data-diff': from }, text ? text.split('\n').map((line) => el('span', { class: line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : null }, line + '\n')) : 'No difference.'));
  };
  show(g, 'Config',
    el('p', { class: 'status ' + (s.last_error ? 'bad' : 'ok') }, `Active version ${s.version}, loaded ${s.loaded_at}. Reloads: ${s.reloads_succeeded} applied, ${s.reloads_failed} rejected.`),
    s.last_error ? el('pre', {}, JSON.stringify(s.last_error, null, 2)) : null,
    s.warnings && s.warnings.length ? el('ul', { class: 'plain' }, s.warnings.map((w) => el('li', {}, w))) : null,
    el('p', {}, el('button', { type: 'button', class: 'primary', onclick: async () => {
      const r = await api('POST', '/admin/reload');
      alert(r.status === 200 ? `Reloaded: version ${r.body.version}` : errorText(r));
      config(gen);
    } }, 'Reload from files')),
    el('h2', {}, 'History'),
    table([
      { title: 'Version', value: (a) => a.version },
      { title: 'Applied', value: (a) => a.at },
      { title: 'Trigger', value: (a) => a.trigger },
      { title: 'Files', value: (a) => fmt.list(a.files) },
      { title: '', value: (a) => (a.version === s.version ? 'active' : el('button', { type: 'button', onclick: () => showDiff(a.version) }, 'Diff to active')) },
    ], history.status === 200 ? history.body.history.slice().reverse() : []),
    diffBox);
}

// --- navigation ------------------------------------------------------------------------------------------------

const views = { overview, routes, models, keys, audit, config };

function route() {
  clearTimeout(timer);
  const name = (location.hash || '#overview').slice(1);
  for (const a of document.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === '#' + name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const render = views[name] || overview;
  const g = ++gen;
  render(g).then(() => { if (g === gen) view.setAttribute('data-view', name); }).catch((e) => show(g, 'Error', el('p', { class: 'bad' }, String(e))));
}

window.addEventListener('hashchange', () => { route(); view.focus(); });
route();
