// The dispatcher admin console: a plain ES module, no framework, no build step.
//
// Everything shown comes from the /v1 API with the key the user pasted, and
// everything a tenant sends (payloads, URLs, response bodies, error texts) is
// treated as hostile: it reaches the page only as text (textContent, text
// nodes, DOM properties), never as HTML, and never as a link target.
//
// The key lives in sessionStorage (this tab only) and in memory; it travels in
// the Authorization header, and only the events WebSocket, which cannot carry
// headers, takes it as ?token=.

const KEY_STORE = 'dispatcher.console.key';
const JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
const DELIVERY_STATUSES = ['failed', 'pending', 'succeeded'];
const CHANNELS = ['webhook', 'email', 'sms'];
const PAGE_SIZE = 50;
const POLL_MS = 1000;
// After a replay, how long the delivery view waits for its new attempt.
const FOLLOW_REPLAY_MS = 60000;
const MAX_SOCKET_DELAY_MS = 30000;
const PROPS = new Set(['value', 'checked', 'disabled', 'hidden', 'indeterminate']);

const state = {
  key: null,
  socket: null,
  socketTimer: null,
  socketRetries: 0,
  view: null,
  path: null,
  // A message for the view the next navigation shows.
  pending: null,
};

const $ = (id) => document.getElementById(id);

// DOM: elements are built, never parsed from strings.

function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'on') {
      for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
    } else if (name === 'class') {
      el.className = value;
    } else if (name === 'for') {
      el.htmlFor = value;
    } else if (PROPS.has(name)) {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

function text(value) {
  if (value === null || value === undefined || value === '') return '—';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function known(value, allowed) {
  return allowed.includes(value) ? value : 'unknown';
}

function badge(status, allowed, testid) {
  return h('span', { class: `badge st-${known(status, allowed)}`, 'data-testid': testid }, text(status));
}

function fact(term, value, testid) {
  const dd = h('dd', { 'data-testid': testid });
  append(dd, [value instanceof Node ? value : text(value)]);
  return h('div', {}, h('dt', {}, term), dd);
}

function pre(value, testid) {
  const shown = typeof value === 'string' ? value : JSON.stringify(value, null, 2);
  return h('pre', { class: 'data', 'data-testid': testid, tabindex: '0' }, shown ?? 'null');
}

function field(label, control, hint) {
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control,
    hint ? h('span', { class: 'hint' }, hint) : null);
}

function select(id, options, chosen) {
  const el = h('select', { id, 'data-testid': id });
  for (const [value, label] of options) {
    el.append(h('option', { value, selected: value === chosen }, label));
  }
  el.value = chosen;
  return el;
}

function input(id, value, extra = {}) {
  return h('input', {
    id, 'data-testid': id, type: 'text', value, autocomplete: 'off', spellcheck: 'false', ...extra,
  });
}

function table(id, caption, headers, tbody) {
  return h('div', { class: 'table-wrap', role: 'region', 'aria-label': caption, tabindex: '0' },
    h('table', { id, 'data-testid': id },
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', {}, h('tr', {}, headers.map((head) => h('th', { scope: 'col' }, head)))),
      tbody));
}

function emptyRow(columns, message) {
  return h('tr', { 'data-testid': 'empty' }, h('td', { colspan: columns, class: 'empty' }, message));
}

function link(route, label, testid) {
  return h('a', { href: `#${route}`, 'data-testid': testid }, label);
}

function jobLink(id) {
  return link(`/jobs/${encodeURIComponent(id)}`, id, 'job-link');
}

function deliveryLink(id) {
  return link(`/deliveries/${encodeURIComponent(id)}`, id, 'delivery-link');
}

function heading(title, sub) {
  return h('h1', { id: 'view-title', tabindex: '-1' }, title, sub ? ' ' : null,
    sub ? h('code', { class: 'id' }, sub) : null);
}

// Status messages, read out by screen readers through the live region.

function say(message, kind = 'info') {
  const el = $('status');
  el.dataset.kind = kind;
  el.textContent = message;
}

function report(err) {
  if (err instanceof ApiError && err.status === 401) {
    signOut(`The key was refused: ${err.detail}`);
    return;
  }
  say(err instanceof ApiError ? err.detail : `Something went wrong: ${err.message}`, 'error');
}

// The API.

class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.body = body;
  }
}

async function api(method, path, body) {
  if (!state.key) throw new ApiError(401, 'not signed in');
  const init = {
    method,
    headers: { Authorization: `Bearer ${state.key}`, Accept: 'application/json' },
    cache: 'no-store',
    credentials: 'omit',
    redirect: 'error',
    referrerPolicy: 'no-referrer',
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'The server cannot be reached.');
  }
  const raw = await response.text();
  let data = null;
  try {
    data = raw ? JSON.parse(raw) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const detail = (data && typeof data.detail === 'string' && data.detail)
      || (data && typeof data.title === 'string' && data.title)
      || `HTTP ${response.status}`;
    throw new ApiError(response.status, detail, data);
  }
  return data;
}

function query(values) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(values)) {
    if (value !== undefined && value !== null && value !== '') params.set(name, value);
  }
  return params.toString();
}

// Routing: #/jobs, #/jobs/{id}, #/deliveries?status=failed, #/deliveries/{id}, #/endpoints.

function route() {
  const raw = location.hash.replace(/^#/, '') || '/jobs';
  const at = raw.indexOf('?');
  const path = at < 0 ? raw : raw.slice(0, at);
  const params = new URLSearchParams(at < 0 ? '' : raw.slice(at + 1));
  let parts;
  try {
    parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    parts = ['?'];
  }
  return { parts, params };
}

// `keep` names parameters written even when empty (an empty status means "any").
function go(path, values, keep = []) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(values)) {
    if (value || keep.includes(name)) params.set(name, value || '');
  }
  const qs = params.toString();
  const target = `#${path}${qs ? `?${qs}` : ''}`;
  if (location.hash === target) render(true);
  else location.hash = target;
}

function later(view, fn, ms) {
  const timer = setTimeout(() => {
    view.timers.delete(timer);
    if (view.alive) fn();
  }, ms);
  view.timers.add(timer);
  return timer;
}

function stopView() {
  const view = state.view;
  if (!view) return;
  view.alive = false;
  for (const timer of view.timers) clearTimeout(timer);
  view.timers.clear();
  state.view = null;
}

// `fresh`: the user went somewhere, so the last view's message no longer applies.
async function render(fresh = false) {
  stopView();
  if (fresh) say(state.pending ?? '');
  state.pending = null;
  const main = $('view');
  if (!state.key) {
    showSignIn();
    return;
  }
  showSession(true);
  const { parts, params } = route();
  const view = { alive: true, timers: new Set(), onEvent: null };
  state.view = view;
  main.replaceChildren();
  main.setAttribute('aria-busy', 'true');
  markNav(parts, params);
  const path = parts.join('/');
  const moved = path !== state.path;
  state.path = path;
  try {
    const [section, id, ...rest] = parts;
    if (rest.length) notFound(main);
    else if (section === 'jobs' && !id) await jobsView(view, main, params);
    else if (section === 'jobs') await jobView(view, main, id);
    else if (section === 'deliveries' && !id) await deliveriesView(view, main, params);
    else if (section === 'deliveries') await deliveryView(view, main, id);
    else if (section === 'endpoints' && !id) await endpointsView(view, main);
    else notFound(main);
  } catch (err) {
    if (!view.alive) return;
    report(err);
    if (!(err instanceof ApiError && err.status === 401)) {
      main.append(h('p', { class: 'error', 'data-testid': 'view-error' },
        err instanceof ApiError ? err.detail : String(err.message)));
    }
  } finally {
    if (view.alive) main.removeAttribute('aria-busy');
  }
  if (view.alive && moved) $('view-title')?.focus();
}

function notFound(main) {
  main.append(heading('Not found'), h('p', {}, 'There is no such page in the console. ',
    link('/jobs', 'Go to jobs', 'home-link'), '.'));
}

function markNav(parts) {
  const current = parts[0] || 'jobs';
  for (const [id, section] of [['nav-jobs', 'jobs'], ['nav-deliveries', 'deliveries'],
    ['nav-endpoints', 'endpoints']]) {
    if (section === current) $(id).setAttribute('aria-current', 'page');
    else $(id).removeAttribute('aria-current');
  }
}

// Jobs: filtered, live over the events WebSocket.

async function jobsView(view, main, params) {
  const status = JOB_STATUSES.includes(params.get('status')) ? params.get('status') : '';
  const type = params.get('type') || '';
  const statusSelect = select('jobs-status', [['', 'any'], ...JOB_STATUSES.map((s) => [s, s])], status);
  const typeInput = input('jobs-type', type, { placeholder: 'e.g. echo' });
  const form = h('form', {
    class: 'filters',
    'data-testid': 'jobs-filters',
    on: {
      submit: (event) => {
        event.preventDefault();
        go('/jobs', { status: statusSelect.value, type: typeInput.value.trim() });
      },
    },
  }, field('Status', statusSelect), field('Type', typeInput),
  h('button', { type: 'submit', id: 'jobs-apply' }, 'Apply'));
  const tbody = h('tbody');
  const more = h('button', { type: 'button', id: 'jobs-more', hidden: true }, 'Load more');
  main.append(heading('Jobs'), form,
    h('p', { class: 'hint' }, 'Rows change as jobs do, while the live indicator says "live".'),
    table('jobs-table', 'Jobs', ['ID', 'Type', 'Status', 'Created', 'Started', 'Finished',
      'Error'], tbody),
    more);

  const rows = new Map();
  const matches = (job) => (!status || job.status === status) && (!type || job.type === type);
  const row = (job) => {
    const tr = h('tr', { 'data-testid': 'job-row', 'data-job-id': job.id },
      h('td', {}, jobLink(job.id)),
      h('td', {}, text(job.type)),
      h('td', { 'data-testid': 'job-status' }, badge(job.status, JOB_STATUSES)),
      h('td', { class: 'time' }, text(job.created_at)),
      h('td', { class: 'time' }, text(job.started_at)),
      h('td', { class: 'time' }, text(job.finished_at)),
      h('td', { class: 'wrap' }, job.error ? `${text(job.error.type)}: ${text(job.error.message)}` : '—'));
    const old = rows.get(job.id);
    rows.set(job.id, tr);
    return { tr, old };
  };
  const clearEmpty = () => tbody.querySelector('[data-testid="empty"]')?.remove();

  let cursor = null;
  async function load() {
    const page = await api('GET', `/v1/jobs?${query({ status, type, limit: PAGE_SIZE, cursor })}`);
    if (!view.alive) return;
    for (const job of page.items) {
      if (rows.has(job.id)) continue;
      tbody.append(row(job).tr);
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    if (!rows.size) tbody.append(emptyRow(7, 'No jobs match.'));
  }
  more.addEventListener('click', () => load().catch(report));
  view.onEvent = (job) => {
    if (!rows.has(job.id) && !matches(job)) return;
    const { tr, old } = row(job);
    if (old) {
      old.replaceWith(tr);
    } else {
      clearEmpty();
      tbody.prepend(tr);
    }
  };
  await load();
}

// One job with its deliveries, refreshed by its events.

async function jobView(view, main, id) {
  const facts = h('dl', { class: 'facts', 'data-testid': 'job-facts' });
  const data = h('div', { class: 'data-blocks' });
  const tbody = h('tbody');
  main.append(heading('Job', id), facts, data,
    h('h2', {}, 'Deliveries'),
    table('job-deliveries', 'Deliveries of this job',
      ['ID', 'Channel', 'Target', 'Status', 'Attempts'], tbody));

  const fill = (job) => {
    facts.replaceChildren(
      fact('Type', job.type),
      fact('Status', badge(job.status, JOB_STATUSES), 'job-status'),
      fact('Created', job.created_at), fact('Started', job.started_at),
      fact('Finished', job.finished_at), fact('Deadline', job.deadline),
      fact('Callback URL', job.callback_url),
      fact('Endpoint', job.endpoint_id),
      fact('Error', job.error ? `${text(job.error.type)}: ${text(job.error.message)}` : null),
    );
    data.replaceChildren(...['payload', 'result', 'metadata', 'notify'].map((name) => (
      h('details', { open: name === 'payload' || name === 'result' },
        h('summary', {}, name[0].toUpperCase() + name.slice(1)), pre(job[name], `job-${name}`))
    )));
    const deliveries = Array.isArray(job.deliveries) ? job.deliveries : [];
    tbody.replaceChildren(...deliveries.map((d) => h('tr', {
      'data-testid': 'job-delivery-row', 'data-delivery-id': d.id,
    },
    h('td', {}, deliveryLink(d.id)),
    h('td', {}, text(d.channel)),
    h('td', { class: 'wrap' }, text(d.target)),
    h('td', {}, badge(d.status, DELIVERY_STATUSES)),
    h('td', { class: 'num' }, text(d.attempt_count)))));
    if (!deliveries.length) tbody.append(emptyRow(5, 'None yet: deliveries appear once the job finishes.'));
  };
  const reload = async () => {
    const job = await api('GET', `/v1/jobs/${encodeURIComponent(id)}`);
    if (view.alive) fill(job);
  };
  view.onEvent = (job) => {
    if (job.id === id) reload().catch(report);
  };
  await reload();
}

// Deliveries: filtered (failed by default), replay selected, bulk replay with a dry run first.

function deliveryFilters(params) {
  const status = params.has('status') ? params.get('status') : 'failed';
  return {
    status: DELIVERY_STATUSES.includes(status) ? status : '',
    job_id: params.get('job_id') || '',
    endpoint_id: params.get('endpoint_id') || '',
    channel: CHANNELS.includes(params.get('channel')) ? params.get('channel') : '',
    since: params.get('since') || '',
    until: params.get('until') || '',
  };
}

function toLocalInput(iso) {
  const at = new Date(iso);
  if (!iso || Number.isNaN(at.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}T${pad(at.getHours())}:${pad(at.getMinutes())}`;
}

function fromLocalInput(value) {
  const at = new Date(value);
  return value && !Number.isNaN(at.getTime()) ? at.toISOString() : '';
}

async function deliveriesView(view, main, params) {
  const filters = deliveryFilters(params);
  const controls = {
    status: select('deliveries-status',
      [...DELIVERY_STATUSES.map((s) => [s, s]), ['', 'any']], filters.status),
    channel: select('deliveries-channel', [['', 'any'], ...CHANNELS.map((c) => [c, c])],
      filters.channel),
    job_id: input('deliveries-job', filters.job_id, { placeholder: 'job_…' }),
    endpoint_id: input('deliveries-endpoint', filters.endpoint_id, { placeholder: 'ep_…' }),
    since: h('input', { id: 'deliveries-since', type: 'datetime-local', value: toLocalInput(filters.since) }),
    until: h('input', { id: 'deliveries-until', type: 'datetime-local', value: toLocalInput(filters.until) }),
  };
  const form = h('form', {
    class: 'filters',
    'data-testid': 'deliveries-filters',
    on: {
      submit: (event) => {
        event.preventDefault();
        go('/deliveries', {
          status: controls.status.value,
          job_id: controls.job_id.value.trim(),
          endpoint_id: controls.endpoint_id.value.trim(),
          channel: controls.channel.value,
          since: fromLocalInput(controls.since.value),
          until: fromLocalInput(controls.until.value),
        }, ['status']);
      },
    },
  },
  field('Status', controls.status), field('Channel', controls.channel),
  field('Job', controls.job_id), field('Endpoint', controls.endpoint_id),
  field('Created since (local time)', controls.since),
  field('Created before (local time)', controls.until),
  h('button', { type: 'submit', id: 'deliveries-apply' }, 'Apply'));

  const all = h('input', { type: 'checkbox', id: 'select-all', 'data-testid': 'select-all' });
  const allLabel = h('label', { for: 'select-all', class: 'visually-hidden' }, 'Select all shown');
  const tbody = h('tbody');
  const replaySelected = h('button', {
    type: 'button', id: 'replay-selected', 'data-testid': 'replay-selected', disabled: true,
  }, 'Replay selected (0)');
  const more = h('button', { type: 'button', id: 'deliveries-more', hidden: true }, 'Load more');
  const title = filters.status === 'failed' ? 'Failed deliveries' : 'Deliveries';
  main.append(heading(title), form,
    h('div', { class: 'actions' }, replaySelected),
    table('deliveries-table', title, [h('span', {}, all, allLabel), 'ID', 'Job', 'Channel',
      'Target', 'Status', 'Attempts', 'Last code', 'Last error', 'Created'], tbody),
    more, bulkPanel(view, filters));

  const boxes = () => [...tbody.querySelectorAll('input[type="checkbox"]')];
  const chosen = () => boxes().filter((box) => box.checked).map((box) => box.value);
  const count = () => {
    const n = chosen().length;
    const total = boxes().length;
    replaySelected.textContent = `Replay selected (${n})`;
    replaySelected.disabled = n === 0;
    all.checked = total > 0 && n === total;
    all.indeterminate = n > 0 && n < total;
  };
  all.addEventListener('change', () => {
    for (const box of boxes()) box.checked = all.checked;
    count();
  });
  tbody.addEventListener('change', count);

  let cursor = null;
  let shown = 0;
  async function load() {
    const page = await api('GET', `/v1/deliveries?${query({ ...filters, limit: PAGE_SIZE, cursor })}`);
    if (!view.alive) return;
    for (const d of page.items) {
      const box = `select-${d.id}`;
      tbody.append(h('tr', { 'data-testid': 'delivery-row', 'data-delivery-id': d.id },
        h('td', {}, h('input', { type: 'checkbox', id: box, value: d.id, 'data-testid': 'delivery-select' }),
          h('label', { for: box, class: 'visually-hidden' }, `Select ${d.id}`)),
        h('td', {}, deliveryLink(d.id)),
        h('td', {}, jobLink(d.job_id)),
        h('td', {}, text(d.channel)),
        h('td', { class: 'wrap' }, text(d.target)),
        h('td', { 'data-testid': 'delivery-row-status' }, badge(d.status, DELIVERY_STATUSES)),
        h('td', { class: 'num' }, text(d.attempt_count)),
        h('td', { class: 'num' }, text(d.last_status_code)),
        h('td', { class: 'wrap' }, text(d.last_error)),
        h('td', { class: 'time' }, text(d.created_at))));
      shown += 1;
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    if (!shown) tbody.append(emptyRow(10, 'No deliveries match.'));
    count();
  }
  more.addEventListener('click', () => load().catch(report));
  replaySelected.addEventListener('click', async () => {
    const ids = chosen();
    replaySelected.disabled = true;
    const refused = [];
    for (const id of ids) {
      try {
        await api('POST', `/v1/deliveries/${encodeURIComponent(id)}/replay`);
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) {
          report(err);
          return;
        }
        refused.push(`${id}: ${err instanceof ApiError ? err.detail : err.message}`);
      }
    }
    if (!view.alive) return;
    const done = ids.length - refused.length;
    say(`Replayed ${done} of ${ids.length} deliveries.${refused.length ? ` Not replayed: ${refused.join('; ')}` : ''}`,
      refused.length ? 'error' : 'info');
    tbody.replaceChildren();
    cursor = null;
    shown = 0;
    await load().catch(report);
  });
  await load();
}

function bulkPanel(view, filters) {
  const section = h('section', { class: 'panel', 'aria-labelledby': 'bulk-title', 'data-testid': 'bulk' });
  const replayable = filters.status === 'failed' || filters.status === 'succeeded';
  const spec = { status: filters.status };
  for (const name of ['since', 'until', 'endpoint_id', 'channel']) {
    if (filters[name]) spec[name] = filters[name];
  }
  const scope = [`status ${filters.status || 'any'}`];
  if (filters.endpoint_id) scope.push(`endpoint ${filters.endpoint_id}`);
  if (filters.channel) scope.push(`channel ${filters.channel}`);
  if (filters.since) scope.push(`created since ${filters.since}`);
  if (filters.until) scope.push(`created before ${filters.until}`);
  const check = h('button', {
    type: 'button', id: 'bulk-dry-run', 'data-testid': 'bulk-dry-run', disabled: !replayable,
  }, 'Count matching deliveries');
  const outcome = h('div', { id: 'bulk-outcome', 'data-testid': 'bulk-outcome' });
  append(section, [
    h('h2', { id: 'bulk-title' }, 'Replay every match'),
    h('p', {}, `Every delivery with ${scope.join(', ')}, in every page, not only those shown.`,
      filters.job_id ? ' The job filter does not apply to this.' : ''),
    replayable ? null : h('p', { class: 'hint' }, 'Choose the status failed or succeeded first.'),
    check, outcome]);

  check.addEventListener('click', async () => {
    check.disabled = true;
    outcome.replaceChildren();
    try {
      const answer = await api('POST', '/v1/deliveries/replay', { ...spec, dry_run: true });
      if (!view.alive) return;
      const n = Number(answer.matched) || 0;
      const message = `${n} ${n === 1 ? 'delivery matches' : 'deliveries match'}.`;
      outcome.append(h('p', { id: 'bulk-result', 'data-testid': 'bulk-result' }, message));
      say(message);
      if (n > 0) {
        const confirm = h('button', { type: 'button', id: 'bulk-confirm', 'data-testid': 'bulk-confirm', class: 'danger' },
          `Replay ${n} ${n === 1 ? 'delivery' : 'deliveries'}`);
        const cancel = h('button', { type: 'button', id: 'bulk-cancel', 'data-testid': 'bulk-cancel' }, 'Cancel');
        confirm.addEventListener('click', async () => {
          confirm.disabled = true;
          cancel.disabled = true;
          try {
            const done = await api('POST', '/v1/deliveries/replay', { ...spec, dry_run: false });
            if (!view.alive) return;
            const m = Number(done.replayed) || 0;
            outcome.replaceChildren(h('p', { id: 'bulk-done', 'data-testid': 'bulk-done' },
              `Replayed ${m} ${m === 1 ? 'delivery' : 'deliveries'}.`));
            say(`Replayed ${m} ${m === 1 ? 'delivery' : 'deliveries'}.`);
          } catch (err) {
            report(err);
            confirm.disabled = false;
            cancel.disabled = false;
          }
        });
        cancel.addEventListener('click', () => {
          outcome.replaceChildren();
          say('Bulk replay cancelled.');
          check.focus();
        });
        outcome.append(h('div', { class: 'actions' }, confirm, cancel));
        confirm.focus();
      }
    } catch (err) {
      report(err);
    } finally {
      check.disabled = !replayable;
    }
  });
  return section;
}

// One delivery with its attempts, refreshed every second while it is pending or after a replay.

async function deliveryView(view, main, id) {
  const facts = h('dl', { class: 'facts', 'data-testid': 'delivery-facts' });
  const timeline = h('ol', { class: 'timeline', id: 'attempts', 'data-testid': 'attempts' });
  const replay = h('button', { type: 'button', id: 'replay-delivery', 'data-testid': 'replay-delivery' }, 'Replay');
  const polling = h('span', { id: 'delivery-polling', 'data-testid': 'delivery-polling', class: 'hint', hidden: true },
    'Refreshing every second…');
  main.append(heading('Delivery', id),
    h('div', { class: 'actions' }, replay, polling),
    facts, h('h2', {}, 'Attempts'), timeline);

  let seen = '';
  let last = null;
  let follow = null;
  let timer = null;

  const draw = (d) => {
    const json = JSON.stringify(d);
    if (json === seen) return;
    const before = last;
    seen = json;
    last = d;
    facts.replaceChildren(
      fact('Status', badge(d.status, DELIVERY_STATUSES, 'delivery-status-badge'), 'delivery-status'),
      fact('Job', jobLink(d.job_id)),
      fact('Channel', d.channel), fact('Target', d.target),
      fact('Endpoint', d.endpoint_id), fact('Event', d.event_type),
      fact('Attempts', d.attempt_count, 'delivery-attempt-count'),
      fact('Next attempt', d.next_attempt_at),
      fact('Last status code', d.last_status_code), fact('Last error', d.last_error),
      fact('Created', d.created_at),
    );
    const attempts = Array.isArray(d.attempts) ? [...d.attempts] : [];
    attempts.sort((a, b) => a.number - b.number);
    timeline.replaceChildren(...attempts.map(attemptItem));
    if (!attempts.length) timeline.append(h('li', { class: 'empty' }, 'No attempt yet.'));
    if (before && before.status !== d.status) say(`Delivery ${d.id} is now ${d.status}.`);
  };
  const wanted = (d) => d.status === 'pending'
    || (follow !== null && Date.now() < follow.until && d.attempt_count <= follow.after);
  const schedule = () => {
    clearTimeout(timer);
    view.timers.delete(timer);
    const on = last !== null && wanted(last);
    polling.hidden = !on;
    if (!on) {
      follow = null;
      return;
    }
    timer = later(view, () => refresh().catch((err) => {
      if (!view.alive) return;
      report(err);
      if (!(err instanceof ApiError) || ![401, 403, 404].includes(err.status)) schedule();
    }), POLL_MS);
  };
  async function refresh() {
    const d = await api('GET', `/v1/deliveries/${encodeURIComponent(id)}`);
    if (!view.alive) return;
    draw(d);
    schedule();
  }
  replay.addEventListener('click', async () => {
    replay.disabled = true;
    const after = last ? last.attempt_count : 0;
    try {
      await api('POST', `/v1/deliveries/${encodeURIComponent(id)}/replay`);
      if (!view.alive) return;
      follow = { after, until: Date.now() + FOLLOW_REPLAY_MS };
      say(`Replay of ${id} requested; following it.`);
      await refresh();
    } catch (err) {
      if (view.alive) report(err);
    } finally {
      replay.disabled = false;
    }
  });
  await refresh();
}

function attemptItem(a) {
  const ok = Number.isInteger(a.status_code) && a.status_code >= 200 && a.status_code < 300 && !a.error;
  const body = a.response_body === null || a.response_body === undefined
    ? h('p', { class: 'hint' }, 'No response body.')
    : h('details', { open: true }, h('summary', {}, 'Response body'),
      pre(String(a.response_body), 'attempt-body'));
  return h('li', { class: `attempt ${ok ? 'ok' : 'bad'}`, 'data-testid': 'attempt', 'data-number': a.number },
    h('h3', {}, `Attempt ${text(a.number)}`, ' ',
      h('span', { class: `badge ${ok ? 'st-succeeded' : 'st-failed'}` }, ok ? 'ok' : 'failed')),
    h('dl', { class: 'facts' },
      fact('Trigger', a.trigger, 'attempt-trigger'), fact('By', a.by, 'attempt-by'),
      fact('Started', a.started_at), fact('Duration', `${text(a.duration_ms)} ms`),
      fact('Status code', a.status_code, 'attempt-status-code'),
      fact('Error', a.error, 'attempt-error')),
    body);
}

// Endpoints: enable a disabled one, rotate a secret (shown once).

async function endpointsView(view, main) {
  const tbody = h('tbody');
  const secretSlot = h('div', { id: 'secret-slot' });
  const more = h('button', { type: 'button', id: 'endpoints-more', hidden: true }, 'Load more');
  main.append(heading('Endpoints'), secretSlot,
    table('endpoints-table', 'Endpoints', ['ID', 'URL', 'Description', 'Signature', 'Limits',
      'State', 'Circuit', 'Actions'], tbody), more);

  const rows = new Map();
  const put = (ep) => {
    const actions = h('td', { class: 'row-actions' });
    const tr = h('tr', { 'data-testid': 'endpoint-row', 'data-endpoint-id': ep.id },
      h('td', {}, h('code', { class: 'id' }, ep.id)),
      h('td', { class: 'wrap' }, text(ep.url)),
      h('td', { class: 'wrap' }, text(ep.description)),
      h('td', {}, text(ep.signature)),
      h('td', {}, `${ep.rate_limit ?? '∞'}/s, ${ep.max_in_flight ?? '∞'} at once`),
      h('td', { class: 'wrap', 'data-testid': 'endpoint-state' }, ep.disabled
        ? [h('span', { class: 'badge st-failed' }, 'disabled'), ` since ${text(ep.disabled_at)}: ${text(ep.disabled_reason)}`]
        : h('span', { class: 'badge st-succeeded' }, 'enabled')),
      h('td', { 'data-testid': 'endpoint-circuit' }, ep.circuit === 'open'
        ? [h('span', { class: 'badge st-failed' }, 'open'), ` since ${text(ep.circuit_since)}`]
        : h('span', { class: 'badge st-succeeded' }, 'closed')),
      actions);
    const enable = h('button', { type: 'button', 'data-testid': 'enable-endpoint' }, 'Enable');
    const rotate = h('button', { type: 'button', 'data-testid': 'rotate-endpoint' }, 'Rotate secret');
    append(actions, [ep.disabled ? enable : null, rotate,
      link(`/deliveries?${query({ status: 'failed', endpoint_id: ep.id })}`, 'Failed deliveries',
        'endpoint-deliveries')]);
    enable.addEventListener('click', async () => {
      enable.disabled = true;
      try {
        const updated = await api('PATCH', `/v1/endpoints/${encodeURIComponent(ep.id)}`, { disabled: false });
        if (!view.alive) return;
        put(updated);
        say(`Endpoint ${ep.id} is enabled.`);
        rows.get(ep.id)?.querySelector('[data-testid="rotate-endpoint"]')?.focus();
      } catch (err) {
        report(err);
        enable.disabled = false;
      }
    });
    rotate.addEventListener('click', () => confirmRotation(view, ep, actions, rotate, secretSlot));
    const old = rows.get(ep.id);
    rows.set(ep.id, tr);
    if (old) old.replaceWith(tr);
    else tbody.append(tr);
  };

  let cursor = null;
  async function load() {
    const page = await api('GET', `/v1/endpoints?${query({ limit: PAGE_SIZE, cursor })}`);
    if (!view.alive) return;
    page.items.forEach(put);
    cursor = page.next_cursor;
    more.hidden = !cursor;
    if (!rows.size) tbody.append(emptyRow(8, 'No endpoints.'));
  }
  more.addEventListener('click', () => load().catch(report));
  await load();
}

function confirmRotation(view, ep, actions, rotate, secretSlot) {
  if (actions.querySelector('[data-testid="rotate-confirm"]')) return;
  const box = h('div', { class: 'confirm', role: 'group', 'aria-label': `Rotate the secret of ${ep.id}` });
  const yes = h('button', { type: 'button', class: 'danger', 'data-testid': 'rotate-confirm' }, 'Rotate now');
  const no = h('button', { type: 'button', 'data-testid': 'rotate-cancel' }, 'Cancel');
  append(box, [h('span', {}, 'Webhooks get signed by the new secret (the old one signs during its grace). '), yes, no]);
  rotate.hidden = true;
  actions.append(box);
  yes.focus();
  const close = () => {
    box.remove();
    rotate.hidden = false;
    rotate.focus();
  };
  no.addEventListener('click', close);
  yes.addEventListener('click', async () => {
    yes.disabled = true;
    try {
      const answer = await api('POST', `/v1/endpoints/${encodeURIComponent(ep.id)}/rotate-secret`);
      if (!view.alive) return;
      close();
      showSecret(secretSlot, ep.id, answer);
    } catch (err) {
      report(err);
      yes.disabled = false;
    }
  });
}

function showSecret(slot, endpointId, answer) {
  const isKey = typeof answer.public_key === 'string';
  const value = isKey ? answer.public_key : String(answer.secret ?? '');
  const what = isKey ? 'public key' : 'signing secret';
  const secretInput = h('input', {
    id: 'new-secret-value', 'data-testid': 'new-secret-value', type: 'text', readonly: true,
    value, autocomplete: 'off', spellcheck: 'false',
  });
  const copy = h('button', { type: 'button', 'data-testid': 'copy-secret' }, 'Copy');
  const done = h('button', { type: 'button', 'data-testid': 'hide-secret' }, 'Done, hide it');
  const panel = h('section', { class: 'panel secret', id: 'new-secret', 'data-testid': 'new-secret', 'aria-labelledby': 'new-secret-title' },
    h('h2', { id: 'new-secret-title' }, `New ${what} of `, h('code', { class: 'id' }, endpointId)),
    h('p', {}, `Shown this once: copy it to the receiver now. The console does not keep it.`),
    h('div', { class: 'field' }, h('label', { for: 'new-secret-value' }, `New ${what}`), secretInput),
    h('div', { class: 'actions' }, copy, done));
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(value);
      say(`Copied the new ${what}.`);
    } catch {
      secretInput.select();
      say('Copying is not allowed here; the text is selected, copy it by hand.', 'error');
    }
  });
  done.addEventListener('click', () => {
    secretInput.value = '';
    slot.replaceChildren();
    say(`The new ${what} is hidden.`);
  });
  slot.replaceChildren(panel);
  say(`The ${what} of ${endpointId} was rotated. Copy the new one now: it is shown once.`);
  secretInput.focus();
  secretInput.select();
}

// The events WebSocket: one per signed-in tab, reconnected with backoff.

function setLive(mode) {
  const el = $('live-state');
  el.textContent = mode;
  el.className = `live ${mode === 'live' ? 'on' : 'off'}`;
  el.title = mode === 'live' ? 'Job events arrive as they happen' : 'Job events are not arriving';
}

function connectEvents() {
  if (!state.key || state.socket) return;
  clearTimeout(state.socketTimer);
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const socket = new WebSocket(`${scheme}//${location.host}/v1/events/ws?token=${encodeURIComponent(state.key)}`);
  state.socket = socket;
  setLive('connecting');
  socket.addEventListener('open', () => {
    if (state.socket !== socket) return;
    state.socketRetries = 0;
    setLive('live');
  });
  socket.addEventListener('message', (event) => {
    if (state.socket !== socket || typeof event.data !== 'string') return;
    let job;
    try {
      job = JSON.parse(event.data);
    } catch {
      return;
    }
    if (job && typeof job.id === 'string' && state.view?.onEvent) state.view.onEvent(job);
  });
  socket.addEventListener('close', (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    setLive('offline');
    if (!state.key) return;
    if (event.code === 1008) {
      signOut('The key was revoked.');
      return;
    }
    const delay = Math.min(MAX_SOCKET_DELAY_MS, 1000 * 2 ** state.socketRetries);
    state.socketRetries += 1;
    state.socketTimer = setTimeout(connectEvents, delay);
  });
}

function disconnectEvents() {
  clearTimeout(state.socketTimer);
  const socket = state.socket;
  state.socket = null;
  state.socketRetries = 0;
  if (socket) socket.close(1000, 'signed out');
  setLive('offline');
}

// Signing in and out.

let signinSection = null;

function showSession(on) {
  $('nav').hidden = !on;
  $('session').hidden = !on;
}

function showSignIn() {
  showSession(false);
  state.path = null;
  $('view').replaceChildren(signinSection);
  $('view').removeAttribute('aria-busy');
}

async function signIn(key) {
  const button = $('signin-button');
  button.disabled = true;
  state.key = key;
  try {
    await api('GET', '/v1/jobs?limit=1');
  } catch (err) {
    state.key = null;
    say(err.status === 401 ? `That key was refused: ${err.detail}` : err.detail || String(err), 'error');
    $('api-key').focus();
    return;
  } finally {
    button.disabled = false;
  }
  sessionStorage.setItem(KEY_STORE, key);
  $('api-key').value = '';
  connectEvents();
  state.pending = 'Signed in.';
  if (!location.hash || location.hash === '#') location.hash = '#/jobs';
  else render(true);
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  state.key = null;
  disconnectEvents();
  stopView();
  showSignIn();
  say(message || 'Signed out.');
  $('api-key').focus();
}

function boot() {
  signinSection = $('signin');
  $('signin-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = $('api-key').value.trim();
    if (!key) {
      say('Paste an API key first.', 'error');
      $('api-key').focus();
      return;
    }
    signIn(key);
  });
  $('signout-button').addEventListener('click', () => signOut('Signed out.'));
  window.addEventListener('hashchange', () => render(true));
  // A section's link when it is already shown loads it afresh (no hashchange fires).
  $('nav').addEventListener('click', (event) => {
    const target = event.target.closest('a');
    if (target && target.getAttribute('href') === location.hash) render(true);
  });
  state.key = sessionStorage.getItem(KEY_STORE);
  if (state.key) connectEvents();
  render();
  document.documentElement.dataset.ready = 'true';
}

boot();
