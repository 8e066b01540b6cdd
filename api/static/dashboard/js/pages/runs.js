// Every job of the team, newest first: filters by kind, status and workload,
// server-side pages (the API's cursors), and a refresh every few seconds while a
// job on the page is queued or running. Range tests can be ticked and overlaid.

import {h, replace, notice, badge} from '../dom.js';
import {age, duration, jobHref, jobSeconds, jobSubject, num, shortId, FINAL, when} from '../format.js';

const PAGE_SIZE = 50;
const REFRESH_MS = 3000;
const KINDS = [['', 'any kind'], ['range_test', 'range tests'], ['training', 'trainings'], ['sweep', 'sweeps']];
const STATUSES = ['', 'queued', 'running', 'succeeded', 'failed', 'cancelled'];
const KIND_LABEL = {range_test: 'range test', training: 'training', sweep: 'sweep'};

// the cursors of the pages before the current one, per filter (Newer goes back)
const history = new Map();
let workloadNames = null;

/** What a job found or trains with, in one cell. */
function boundsCell(job) {
  if (job.kind === 'range_test') {
    const b = job.result && job.result.bounds;
    if (b) {
      return h('span', {class: 'bounds', title: `${b.method}, confidence ${num(b.confidence, 2)}`},
        `${num(b.base_lr)} – ${num(b.max_lr)}`, h('span', {class: 'muted'}, ` ${b.method}`));
    }
    if (job.result && job.result.no_bounds_reason) {
      return h('span', {class: 'muted', title: job.result.no_bounds_reason}, 'no bounds');
    }
    return '–';
  }
  if (job.kind === 'training') {
    const s = (job.spec && job.spec.schedule) || {};
    const policy = h('span', {class: 'muted'}, ` ${s.policy || ''}`);
    const has = (x) => x !== undefined && x !== null;
    if (has(s.base_lr) && has(s.max_lr)) {
      return h('span', {class: 'bounds'}, `${num(s.base_lr)} – ${num(s.max_lr)}`, policy);
    }
    if (has(s.max_lr)) return h('span', {class: 'bounds'}, `max ${num(s.max_lr)}`, policy);
    if (has(s.lr)) return h('span', {class: 'bounds'}, `lr ${num(s.lr)}`, policy);
    const from = job.spec && job.spec.bounds_from;
    return from ? h('span', {class: 'muted'}, 'from a range test') : '–';
  }
  if (job.kind === 'sweep' && job.result) {
    return h('span', {class: 'muted'}, `${job.result.children} runs`);
  }
  return '–';
}

function statusCell(job) {
  const parts = [badge(job.status)];
  if (job.cancel_requested && !FINAL.has(job.status)) parts.push(h('span', {class: 'muted'}, ' cancelling'));
  if (job.status === 'running' && job.total) {
    parts.push(h('span', {class: 'muted'}, ` ${job.progress}/${job.total}`));
  }
  if (job.status === 'queued' && job.waiting_reason) {
    parts.push(h('div', {class: 'waiting', 'data-testid': 'waiting-reason'},
      job.queue_position ? `#${job.queue_position}: ` : '', job.waiting_reason));
  }
  if (job.status === 'failed' && job.error) {
    parts.push(h('div', {class: 'error-text', title: job.error}, job.error));
  }
  return parts;
}

/** What a job is to its parent: a sweep's training or range test, a range test's verification. */
function parentNote(job) {
  if (!job.parent_id) return null;
  const role = job.role || {};
  if (role.stage === 'verify') {
    return h('div', {class: 'muted'}, 'verifies ',
      h('a', {href: `#/range-tests/${job.parent_id}`, class: 'mono'}, shortId(job.parent_id)));
  }
  const what = role.policy !== undefined
    ? `${role.policy}${role.seed !== undefined ? `, seed ${role.seed}` : ''}`
    : (role.stage === 'range_test' ? 'its range test' : 'part');
  return h('div', {class: 'muted'}, `${what} of sweep `,
    h('a', {href: `#/sweeps/${job.parent_id}`, class: 'mono'}, shortId(job.parent_id)));
}

/** A team's own-loop job: its tags, as text. */
function tags(job) {
  const t = job.spec && job.spec.tags;
  if (!t || typeof t !== 'object') return null;
  const entries = Object.entries(t);
  if (!entries.length) return null;
  return h('div', {class: 'tags'}, entries.map(([k, v]) => h('span', {class: 'tag'}, `${k}=${v}`)));
}

function row(job, selected, onToggle) {
  const pick = job.kind === 'range_test'
    ? h('input', {type: 'checkbox', 'aria-label': `overlay ${shortId(job.id)}`, checked: selected.has(job.id),
      'data-testid': 'overlay-pick', onchange: (e) => onToggle(job.id, e.target.checked)})
    : null;
  return h('tr', {dataset: {id: job.id, kind: job.kind, status: job.status}},
    h('td', {}, pick),
    h('td', {}, h('a', {href: jobHref(job), class: 'mono'}, shortId(job.id))),
    h('td', {'data-testid': 'kind'}, KIND_LABEL[job.kind] || job.kind, job.spec && job.spec.source === 'client'
      ? h('span', {class: 'muted', title: 'run in the team\u2019s own loop'}, ' (own loop)') : null,
    parentNote(job)),
    h('td', {'data-testid': 'subject'}, jobSubject(job), tags(job)),
    h('td', {}, statusCell(job)),
    h('td', {'data-testid': 'bounds'}, boundsCell(job)),
    h('td', {title: when(job.created_at), class: 'nowrap'}, age(job.created_at)),
    h('td', {class: 'nowrap'}, duration(jobSeconds(job))),
    // a sweep never holds a worker: it has no attempts of its own
    h('td', {'data-testid': 'attempts', class: 'nowrap'}, job.kind === 'sweep' ? '–' : `${job.attempt}/${job.max_attempts}`));
}

function select(name, options, value, label) {
  return h('label', {class: 'filter'}, label,
    h('select', {name, 'data-testid': `filter-${name}`},
      options.map(([v, text]) => h('option', {value: v, selected: v === value}, text))));
}

export async function render(root, {query}, ctx) {
  const filters = {
    kind: query.get('kind') || '',
    status: query.get('status') || '',
    workload: query.get('workload') || '',
  };
  const cursor = query.get('cursor') || '';
  const filterKey = JSON.stringify(filters);
  const stack = history.get(filterKey) || [];
  history.set(filterKey, stack);
  // a reloaded tab on a later page: that page is the only one known before it
  if (cursor && stack[stack.length - 1] !== cursor) stack.splice(0, stack.length, cursor);
  if (!cursor) stack.length = 0;
  const selected = new Set((sessionStorage.getItem('clr-sweep.overlay') || '').split(',').filter(Boolean));

  const base = {...filters};
  let timer = null;
  let stopped = false;
  const controller = new AbortController();
  const fetchPage = () => ctx.api.get('/jobs', {
    limit: PAGE_SIZE, cursor, kind: base.kind, status: base.status, workload: base.workload,
  }, {signal: controller.signal});
  // the first page and the workloads (for the filter) at once, not one after the other
  const firstPage = fetchPage();
  firstPage.catch(() => null); // its error is handled where it is awaited, below
  if (workloadNames === null) {
    workloadNames = ctx.api.get('/workloads').then((w) => w.items.map((i) => i.name)).catch(() => {
      workloadNames = null; // asked again on the next visit
      return [];
    });
  }
  const names = await workloadNames;
  const form = h('form', {class: 'filters', 'data-testid': 'filters'},
    select('kind', KINDS, filters.kind, 'Kind'),
    select('status', STATUSES.map((s) => [s, s || 'any status']), filters.status, 'Status'),
    select('workload', [['', 'any workload'], ...names.map((n) => [n, n])], filters.workload, 'Workload'));
  form.addEventListener('change', () => {
    const data = new FormData(form);
    const params = new URLSearchParams();
    for (const key of ['kind', 'status', 'workload']) if (data.get(key)) params.set(key, data.get(key));
    ctx.navigate(`#/runs${params.toString() ? `?${params}` : ''}`);
  });
  form.addEventListener('submit', (e) => e.preventDefault());

  const overlayButton = h('button', {type: 'button', 'data-testid': 'overlay-open', disabled: selected.size < 2},
    'Overlay selected range tests');
  overlayButton.addEventListener('click', () => ctx.navigate(`#/overlay?ids=${[...selected].join(',')}`));
  const onToggle = (id, on) => {
    if (on) selected.add(id);
    else selected.delete(id);
    sessionStorage.setItem('clr-sweep.overlay', [...selected].join(','));
    overlayButton.disabled = selected.size < 2;
    overlayButton.textContent = selected.size ? `Overlay ${selected.size} range tests` : 'Overlay selected range tests';
  };

  const body = h('tbody');
  const table = h('table', {class: 'runs', 'data-testid': 'runs-table'},
    h('thead', {}, h('tr', {},
      ['', 'id', 'kind', 'workload / model', 'status', 'bounds', 'created', 'duration', 'attempts']
        .map((c) => h('th', {scope: 'col'}, c)))),
    body);
  const pager = h('div', {class: 'pager'});
  const updated = h('span', {class: 'muted', 'data-testid': 'runs-updated'});
  replace(root,
    h('div', {class: 'page-head'}, h('h1', {}, 'Runs'), h('span', {class: 'spacer'}), updated, overlayButton),
    form, table, pager);

  async function load(pending = null) {
    const page = await (pending || fetchPage());
    if (stopped) return;
    if (!page.items.length) {
      replace(body, h('tr', {}, h('td', {colspan: 9, class: 'empty'},
        cursor ? 'No more runs.' : 'No runs yet. Submit a range test to start.')));
    } else {
      replace(body, page.items.map((job) => row(job, selected, onToggle)));
    }
    const linkTo = (c) => {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(base)) if (v) params.set(k, v);
      if (c) params.set('cursor', c);
      return `#/runs${params.toString() ? `?${params}` : ''}`;
    };
    const newer = h('button', {type: 'button', 'data-testid': 'page-newer', disabled: !cursor}, '← Newer');
    newer.addEventListener('click', () => {
      stack.pop();
      ctx.navigate(linkTo(stack.length ? stack[stack.length - 1] : ''));
    });
    const older = h('button', {type: 'button', 'data-testid': 'page-older', disabled: !page.next_cursor}, 'Older →');
    older.addEventListener('click', () => {
      stack.push(page.next_cursor);
      ctx.navigate(linkTo(page.next_cursor));
    });
    replace(pager, newer, h('span', {class: 'muted'}, `page ${stack.length + 1}`), older);
    replace(updated, `updated ${new Date().toLocaleTimeString()}`);
    performance.mark('runs-rendered');
    // keep the first page current while something on it is still going on
    const active = page.items.some((job) => !FINAL.has(job.status));
    if (active && !cursor) timer = setTimeout(refresh, REFRESH_MS);
  }

  async function refresh() {
    timer = null;
    if (stopped) return;
    try {
      await load();
    } catch (err) {
      if (err.name === 'AbortError' || stopped) return;
      replace(updated, `refresh failed: ${err.message}`);
      timer = setTimeout(refresh, REFRESH_MS * 2);
    }
  }

  try {
    await load(firstPage);
  } catch (err) {
    if (err.name === 'AbortError') return null;
    if (err.status === 422) {
      replace(body, h('tr', {}, h('td', {colspan: 9}, notice('error', err.message))));
    } else {
      throw err;
    }
  }
  return () => {
    stopped = true;
    controller.abort();
    if (timer) clearTimeout(timer);
  };
}
