// A sweep: the paper's table (Smith 2015, Table 1) for the team's own model. Per
// grid point and policy, the final and best validation accuracy over the seeds
// (mean ± std), how many iterations each policy needed to reach the fixed LR's
// final accuracy and its ratio to fixed's own; each policy's mean validation
// accuracy against iteration with a ±std band; the grid points with their range
// tests and bounds; the children with their status; the failures.
//
// While the sweep runs, the page follows its events: a sweep has no series, its
// `status` events carry the job (and its growing result) whenever a child
// finishes; the children's own statuses (queued -> running) are read again every
// few seconds.

import {h, replace, facts, notice, badge} from '../dom.js';
import {age, duration, jobHref, jobSeconds, jobSubject, num, pct, shortId, when, FINAL} from '../format.js';
import {PALETTE, makeChart, markerPlugin} from '../charts.js';
import {bandPlugin, iterationTick, legendValue, levelPlugin, mergeX, plural} from '../chart_sync.js';
import {cancelJob, followJob} from '../jobs.js';

const CHILDREN_PAGE = 50;
const CHILDREN_REFRESH_MS = 2500;
const STATUS_ORDER = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];

/** A policy's colour: its place among the sweep's policies (the table's and the chart's). */
function colourOf(policies, policy) {
  const i = policies.indexOf(policy);
  return PALETTE[(i < 0 ? policies.length : i) % PALETTE.length];
}

function hexToRgba(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

function swatch(colour) {
  const el = h('span', {class: 'swatch', 'aria-hidden': 'true'});
  el.style.background = colour;
  return el;
}

/** An accuracy spread as "48.7% ± 10.2 (n=2)". */
function accuracySpread(s) {
  if (!s) return h('span', {class: 'muted'}, '–');
  return h('span', {class: 'spread'}, pct(s.mean),
    s.std !== null && s.std !== undefined ? h('span', {class: 'sd'}, ` ± ${(100 * s.std).toFixed(1)}`) : null,
    h('span', {class: 'n'}, ` (n=${s.n})`));
}

/** Iterations as "44 ± 3 (2/2 reached)". */
function iterationSpread(s, reached, succeeded) {
  if (!s && !succeeded) return h('span', {class: 'muted'}, '–');
  const tally = h('span', {class: 'n'}, ` (${reached}/${succeeded} reached)`);
  if (!s) return h('span', {class: 'spread'}, h('span', {class: 'muted'}, 'not reached'), tally);
  return h('span', {class: 'spread'}, Math.round(s.mean).toLocaleString(),
    s.std !== null && s.std !== undefined ? h('span', {class: 'sd'}, ` ± ${Math.round(s.std).toLocaleString()}`) : null,
    tally);
}

/** The row to highlight per grid point: the best final mean accuracy (ties: fewer iterations). */
function bestRows(table) {
  const best = new Map();
  for (const row of table) {
    const acc = row.final_val_accuracy && row.final_val_accuracy.mean;
    if (acc === undefined || acc === null) continue;
    const held = best.get(row.grid);
    const its = row.iterations_to_fixed ? row.iterations_to_fixed.mean : Infinity;
    if (!held || acc > held.acc || (acc === held.acc && its < held.its)) best.set(row.grid, {acc, its, row});
  }
  return new Set([...best.values()].map((b) => b.row));
}

function policyTable(result, policies) {
  const table = result.table || [];
  const grids = [...new Set(table.map((r) => r.grid))];
  const labels = new Map((result.points || []).map((p) => [p.index, p.label]));
  const best = bestRows(table);
  const head = h('tr', {}, ['policy', 'final val accuracy', 'best val accuracy', 'iterations to fixed LR\u2019s accuracy',
    'vs fixed', 'trainings'].map((c, i) => h('th', {scope: 'col', class: i ? 'num' : null}, c)));
  const body = [];
  for (const grid of grids) {
    const rows = table.filter((r) => r.grid === grid);
    if (grids.length > 1) {
      body.push(h('tr', {class: 'grid-row'}, h('td', {colspan: 6, class: 'grid-label'},
        `grid point ${grid}: ${labels.get(grid) || rows[0].label}`)));
    }
    for (const row of rows) {
      const counts = row.counts || {};
      const running = (counts.running || 0) + (counts.queued || 0);
      body.push(h('tr', {
        class: best.has(row) ? 'best' : null,
        dataset: {policy: row.policy, grid: String(row.grid), best: best.has(row) ? 'true' : 'false'},
      },
      h('td', {}, swatch(colourOf(policies, row.policy)), h('strong', {}, row.policy),
        best.has(row) ? h('span', {class: 'best-tag'}, 'best') : null),
      h('td', {class: 'num', 'data-col': 'final'}, accuracySpread(row.final_val_accuracy)),
      h('td', {class: 'num', 'data-col': 'best'}, accuracySpread(row.best_val_accuracy)),
      h('td', {class: 'num', 'data-col': 'iterations'},
        iterationSpread(row.iterations_to_fixed, row.reached_fixed, row.succeeded)),
      h('td', {class: 'num', 'data-col': 'ratio'}, row.ratio_to_fixed === null || row.ratio_to_fixed === undefined
        ? h('span', {class: 'muted'}, '–') : `${row.ratio_to_fixed.toFixed(2)}\u00d7`),
      h('td', {class: 'num', 'data-col': 'trainings'}, `${row.succeeded}/${row.seeds}`,
        row.failed ? h('span', {class: 'error-text inline'}, ` ${row.failed} failed`) : null,
        running ? h('span', {class: 'muted'}, ` ${running} to go`) : null)));
    }
  }
  const targets = [...new Set(table.filter((r) => r.fixed_accuracy !== null && r.fixed_accuracy !== undefined)
    .map((r) => `${grids.length > 1 ? `grid ${r.grid}: ` : ''}${pct(r.fixed_accuracy)}`))];
  return [
    h('div', {class: 'scroll-x'}, h('table', {class: 'policy-table', 'data-testid': 'policy-table'},
      h('thead', {}, head), h('tbody', {}, body))),
    h('p', {class: 'table-note'},
      'Mean ± standard deviation over the seeds that succeeded. ',
      targets.length ? `The target is the fixed LR's final mean accuracy (${targets.join(', ')}); ` : '',
      '"vs fixed" is the mean iterations to reach it over the fixed policy\u2019s own (the paper: 0.36\u00d7 for triangular2 on CIFAR-10).'),
  ];
}

function rangeTestCell(point) {
  if (!point.range_test) return h('span', {class: 'muted'}, '–');
  return h('span', {},
    h('a', {href: `#/range-tests/${point.range_test}`, class: 'mono', 'data-testid': 'range-test-link'},
      shortId(point.range_test)),
    point.range_test_status ? [' ', h('span', {class: ['badge', `status-${point.range_test_status}`]},
      point.range_test_status)] : null);
}

function boundsCell(point) {
  const b = point.bounds;
  if (!b) {
    return point.no_bounds_reason
      ? h('span', {class: 'error-text wrap'}, point.no_bounds_reason)
      : h('span', {class: 'muted'}, 'after its range test');
  }
  return h('div', {class: 'point-bounds', 'data-testid': 'point-bounds'},
    h('div', {}, h('strong', {class: 'bounds'}, `${num(b.base_lr)} – ${num(b.max_lr)}`),
      h('span', {class: 'muted'}, ` ${b.method}${b.verified ? ', verified by training' : ''}`)),
    h('div', {class: 'muted'}, `step size ${b.step_size.toLocaleString()} · fixed LR ${num(b.fixed_lr)} (${b.fixed_lr_from})`
      + ` · ${b.iterations.toLocaleString()} iterations, ${num(b.cycles, 3)} cycles`),
    b.not_verified ? h('div', {class: 'warning-text'}, `not verified: ${b.not_verified}`) : null);
}

function gridPoints(result) {
  const points = result.points || [];
  return h('table', {class: 'grid-points', 'data-testid': 'grid-points'},
    h('thead', {}, h('tr', {}, ['point', 'configuration', 'range test', 'bounds'].map((c) => h('th', {scope: 'col'}, c)))),
    h('tbody', {}, points.map((p) => {
      const opt = p.optimizer || {};
      const config = [p.batch_size ? `batch ${p.batch_size}` : null, opt.name,
        opt.momentum ? `momentum ${num(opt.momentum)}` : null, `weight decay ${num(p.weight_decay)}`]
        .filter(Boolean).join(' · ');
      return h('tr', {dataset: {grid: String(p.index)}},
        h('td', {}, h('strong', {}, p.label)), h('td', {}, config),
        h('td', {}, rangeTestCell(p)), h('td', {}, boundsCell(p)));
    })));
}

function specFacts(job) {
  const s = job.spec || {};
  const budget = s.iterations ? `${s.iterations.toLocaleString()} iterations`
    : `${s.cycles || 4} cycles${s.step_size ? ` of 2 × ${s.step_size}` : ''}`;
  const rt = s.range_test || {};
  const pairs = [
    ['Workload', h('span', {}, jobSubject(job), s.params ? h('span', {class: 'muted'},
      ` ${Object.entries(s.params).map(([k, v]) => `${k}=${v}`).join(', ')}`) : null)],
    ['Policies', (s.policies || []).join(', ')],
    ['Seeds', (s.seeds || []).join(', ')],
    ['Budget', budget],
    ['Fixed LR', s.fixed_lr ? num(s.fixed_lr) : 'from the range test'],
    ['Range tests', `${num(rt.start_lr)} → ${num(rt.end_lr)}, ${rt.num_iter} steps, ${rt.sweep || 'exp'}`],
    ['Verify bounds', s.verify ? `yes, budget ${num(s.verify_budget)} runs` : 'no'],
    ['Status', h('span', {}, h('span', {class: ['badge', `status-${job.status}`]}, job.status),
      job.waiting ? h('span', {class: 'muted'}, ' waiting on its children') : null)],
    ['Created', h('span', {title: when(job.created_at)}, age(job.created_at))],
    ['Duration', duration(jobSeconds(job))],
    ['Job', h('span', {class: 'mono'}, job.id)],
  ];
  return pairs;
}

function roleText(child) {
  const role = child.role || {};
  const bits = [];
  if (role.grid !== undefined) bits.push(`grid ${role.grid}`);
  if (child.kind === 'range_test') bits.push('range test');
  if (role.stage && role.stage !== 'range_test') bits.push(String(role.stage));
  if (role.policy) bits.push(String(role.policy));
  if (role.seed !== undefined) bits.push(`seed ${role.seed}`);
  return bits.join(' · ') || '–';
}

function childResult(child) {
  const r = child.result;
  if (!r) return child.status === 'failed' && child.error
    ? h('span', {class: 'error-text', title: child.error}, child.error) : '–';
  if (child.kind === 'training') {
    return h('span', {}, `val ${pct(r.final_val_accuracy)}`,
      h('span', {class: 'muted'}, ` best ${pct(r.best_val_accuracy)}`));
  }
  if (child.kind === 'range_test' && r.bounds) {
    return h('span', {class: 'bounds'}, `${num(r.bounds.base_lr)} – ${num(r.bounds.max_lr)}`,
      h('span', {class: 'muted'}, ` ${r.bounds.method}`));
  }
  if (r.no_bounds_reason) return h('span', {class: 'muted'}, 'no bounds');
  return '–';
}

function childOrder(policies) {
  return (a, b) => {
    const ra = a.role || {};
    const rb = b.role || {};
    return (ra.grid ?? 0) - (rb.grid ?? 0)
      || (a.kind === 'range_test' ? 0 : 1) - (b.kind === 'range_test' ? 0 : 1)
      || policies.indexOf(ra.policy) - policies.indexOf(rb.policy)
      || (ra.seed ?? 0) - (rb.seed ?? 0)
      || String(a.created_at).localeCompare(String(b.created_at));
  };
}

export async function render(root, {match}, ctx) {
  const id = match[1];
  const controller = new AbortController();
  const {signal} = controller;
  let stopped = false;
  let job = await ctx.api.get(`/sweeps/${id}`, null, {signal});
  const policies = (job.spec && job.spec.policies) || [];

  const statusBox = h('span', {class: 'head-status'});
  const subject = h('span', {class: 'muted'});
  const live = h('span', {class: 'live off', 'data-testid': 'live'});
  const actions = h('span', {class: 'actions'});
  const notices = h('div');
  const progressCard = h('section', {class: 'card sweep-progress', 'data-testid': 'progress'});
  const tableCard = h('section', {class: 'card'});
  const chartCard = h('section', {class: 'card'});
  const chartsBox = h('div', {'data-testid': 'comparison-chart'});
  const pointsCard = h('section', {class: 'card'});
  const factsCard = h('section', {class: 'card'});
  const failuresCard = h('section', {class: 'card', 'data-testid': 'failures'});
  const childrenBody = h('tbody');
  const childrenNote = h('span', {class: 'muted', 'data-testid': 'children-count'});
  const moreBox = h('div', {class: 'load-more'});
  const childrenCard = h('section', {class: 'card'},
    h('div', {class: 'card-head'}, h('h2', {}, 'Children'), childrenNote),
    h('div', {class: 'scroll-x'}, h('table', {class: 'children', 'data-testid': 'children'},
      h('thead', {}, h('tr', {}, ['job', 'kind', 'role', 'status', 'result', 'duration']
        .map((c) => h('th', {scope: 'col'}, c)))),
      childrenBody)),
    moreBox);
  replace(root, h('div', {class: 'run-page sweep-page'},
    h('div', {class: 'page-head'}, h('h1', {}, 'Sweep ', h('span', {class: 'mono muted'}, shortId(id))),
      statusBox, subject, h('span', {class: 'spacer'}), live, actions),
    notices,
    progressCard,
    tableCard,
    h('div', {class: 'grid2'},
      h('div', {class: 'main-col'}, chartCard),
      h('div', {class: 'side'}, factsCard, failuresCard)),
    pointsCard,
    childrenCard));

  // ---------------------------------------------------------------- the sweep
  let charts = [];

  function renderProgress() {
    const r = job.result || {};
    const counts = r.counts || {};
    const planned = r.children || job.total || 0;
    const finished = (counts.succeeded || 0) + (counts.failed || 0) + (counts.cancelled || 0);
    const fraction = planned ? Math.min(1, finished / planned) : (FINAL.has(job.status) ? 1 : 0);
    const bar = h('span');
    bar.style.width = `${(100 * fraction).toFixed(1)}%`;
    const chips = STATUS_ORDER.filter((s) => counts[s]).map((s) => h('span', {
      class: ['badge', `status-${s}`], 'data-testid': `count-${s}`, dataset: {count: String(counts[s])},
    }, `${counts[s]} ${s}`));
    replace(progressCard,
      h('div', {class: 'card-head'}, h('h2', {}, 'Progress'),
        h('span', {class: 'muted', 'data-testid': 'progress-text', dataset: {finished: String(finished), planned: String(planned)}},
          `${finished} of ${planned} children finished${r.complete ? ' · the table is final' : ''}`)),
      h('div', {class: 'progress', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': String(planned),
        'aria-valuenow': String(finished)}, bar),
      h('div', {class: 'counts'}, chips.length ? chips : h('span', {class: 'muted'}, 'no children yet')));
  }

  function renderTable() {
    const r = job.result;
    if (!r || !(r.table || []).length) {
      replace(tableCard, h('h2', {}, 'Policies'), h('p', {class: 'muted'}, 'The table fills in as the trainings finish.'));
      return;
    }
    replace(tableCard, h('h2', {}, 'Policies'), policyTable(r, policies));
  }

  function renderCharts() {
    for (const c of charts) c.destroy();
    charts = [];
    const r = job.result;
    const curves = (r && r.curves) || [];
    const grids = [...new Set(curves.map((c) => c.grid))];
    replace(chartCard, h('div', {class: 'card-head'}, h('h2', {}, 'Validation accuracy by policy'),
      h('span', {class: 'legend-note'}, 'mean over the seeds, ±1 std shaded; cycle ends dashed; drag to zoom')),
    chartsBox);
    chartsBox.replaceChildren();
    if (!curves.length) {
      chartsBox.append(h('p', {class: 'muted'}, 'Drawn once trainings have validation accuracies.'));
      return;
    }
    const labels = new Map(((r && r.points) || []).map((p) => [p.index, p.label]));
    const rows = (r && r.table) || [];
    for (const grid of grids) {
      const mine = curves.filter((c) => c.grid === grid)
        .sort((a, b) => policies.indexOf(a.policy) - policies.indexOf(b.policy));
      const box = h('div', {class: 'chart comparison', dataset: {grid: String(grid)}});
      if (grids.length > 1) chartsBox.append(h('p', {class: 'grid-label'}, `grid point ${grid}: ${labels.get(grid) || ''}`));
      chartsBox.append(box);
      const data = mergeX(mine.map((c) => ({x: c.iteration, ys: [c.mean]})));
      const ends = [...new Set(mine.flatMap((c) => c.cycle_ends || []))].sort((a, b) => a - b);
      const target = rows.find((row) => row.grid === grid && row.fixed_accuracy !== null && row.fixed_accuracy !== undefined);
      const chart = makeChart(box, {
        height: 300,
        cursor: {drag: {x: true, y: false}},
        plugins: [
          bandPlugin(() => mine.map((c) => ({
            x: c.iteration, lo: c.mean.map((m, i) => m - (c.std[i] || 0)), hi: c.mean.map((m, i) => m + (c.std[i] || 0)),
            scale: 'acc', fill: hexToRgba(colourOf(policies, c.policy), 0.14),
          }))),
          markerPlugin(() => ends.map((x) => ({x, color: '#98a2b3', dash: [3, 4], width: 1}))),
          levelPlugin(() => (target ? [{y: target.fixed_accuracy, scale: 'acc', color: colourOf(policies, 'fixed'),
            label: `fixed LR's final accuracy ${pct(target.fixed_accuracy)}`}] : [])),
        ],
        scales: {x: {time: false}, acc: {range: (u, min, max) => {
          const lo = Math.max(0, Math.floor(((min ?? 0) - 0.05) * 10) / 10);
          const hi = Math.min(1, Math.ceil(((max ?? 1) + 0.02) * 10) / 10);
          return [lo, hi > lo ? hi : lo + 0.1];
        }}},
        axes: [
          {label: 'iteration', labelSize: 20, size: 36, grid: {stroke: '#eef0f4'},
            values: (u, splits) => splits.map((v) => (v === null ? '' : iterationTick(v)))},
          {scale: 'acc', label: 'validation accuracy', labelSize: 18, size: 64, grid: {stroke: '#eef0f4'},
            values: (u, splits) => splits.map((v) => (v === null ? '' : `${Math.round(v * 100)}%`))},
        ],
        series: [
          {label: 'iteration', value: legendValue((v) => Math.round(v).toLocaleString())},
          ...mine.map((c) => ({
            label: c.policy, scale: 'acc', stroke: colourOf(policies, c.policy), width: 2, spanGaps: true,
            points: {show: true, size: 5}, value: legendValue(pct),
          })),
        ],
      }, data);
      charts.push(chart);
    }
  }

  function renderFailures() {
    const failures = (job.result && job.result.failures) || [];
    failuresCard.hidden = !failures.length;
    if (!failures.length) {
      failuresCard.replaceChildren();
      return;
    }
    replace(failuresCard, h('h2', {}, `Failures (${failures.length})`), h('ul', {class: 'failures'},
      failures.map((f) => {
        const role = f.role || {};
        const kind = role.stage === 'range_test' ? 'range_test' : 'training';
        return h('li', {dataset: {job: f.job_id || ''}},
          f.job_id ? h('a', {href: jobHref({kind, id: f.job_id}), class: 'mono'}, shortId(f.job_id)) : null,
          f.role ? h('span', {class: 'muted'}, ` ${roleText({role, kind})}`) : null,
          ': ', h('span', {class: 'error-text wrap'}, f.reason));
      })));
  }

  function renderHead() {
    replace(statusBox, badge(job.status));
    replace(subject, jobSubject(job), policies.length
      ? ` · ${plural(policies.length, 'policy', 'policies')} × ${plural((job.spec.seeds || []).length, 'seed')}` : '');
    const buttons = [];
    if (!FINAL.has(job.status)) {
      buttons.push(h('button', {type: 'button', class: 'danger', 'data-testid': 'cancel',
        disabled: job.cancel_requested, onclick: cancel}, job.cancel_requested ? 'Cancelling…' : 'Cancel sweep'));
    }
    replace(actions, buttons);
    const notes = [];
    if (job.status === 'failed') notes.push(notice('error', h('strong', {}, 'Failed: '), h('span', {'data-testid': 'error'}, job.error || 'no reason given')));
    if (job.status === 'cancelled') notes.push(notice('warning', 'Cancelled: its children were cancelled too; what finished is kept.'));
    if (job.cancel_requested && !FINAL.has(job.status)) notes.push(notice('warning', 'Cancelling: its children are being cancelled.'));
    if (job.status === 'queued') {
      notes.push(notice('info', h('strong', {}, 'Queued'), job.waiting_reason ? `: ${job.waiting_reason}` : '.'));
    }
    replace(notices, notes);
  }

  function renderJob() {
    renderHead();
    renderProgress();
    renderTable();
    renderCharts();
    replace(pointsCard, h('h2', {}, 'Grid points'), (job.result && (job.result.points || []).length)
      ? h('div', {class: 'scroll-x'}, gridPoints(job.result)) : h('p', {class: 'muted'}, 'Listed once the sweep has started.'));
    replace(factsCard, h('h2', {}, 'Sweep'), facts(specFacts(job)));
    renderFailures();
  }

  // ---------------------------------------------------------------- the children
  let children = [];
  let nextCursor = null;
  let pagesRead = 0;

  function renderChildren() {
    const sorted = [...children].sort(childOrder(policies));
    if (!sorted.length) {
      replace(childrenBody, h('tr', {}, h('td', {colspan: 6, class: 'empty'}, 'No children yet.')));
    } else {
      replace(childrenBody, sorted.map((c) => {
        const role = c.role || {};
        return h('tr', {class: `kind-${c.kind}`, dataset: {id: c.id, kind: c.kind, status: c.status,
          policy: role.policy || '', seed: role.seed === undefined ? '' : String(role.seed), grid: String(role.grid ?? '')}},
        h('td', {}, h('a', {href: jobHref(c), class: 'mono'}, shortId(c.id))),
        h('td', {}, c.kind === 'range_test' ? 'range test' : c.kind),
        h('td', {}, roleText(c)),
        h('td', {}, h('span', {class: ['badge', `status-${c.status}`], 'data-testid': 'child-status'}, c.status),
          c.status === 'running' && c.total ? h('span', {class: 'muted'}, ` ${c.progress}/${c.total}`) : null),
        h('td', {}, childResult(c)),
        h('td', {}, duration(jobSeconds(c))));
      }));
    }
    const planned = (job.result && job.result.children) || 0;
    childrenNote.textContent = `${children.length}${nextCursor ? '+' : ''} of ${planned} planned`;
    if (nextCursor) {
      replace(moreBox, h('button', {type: 'button', 'data-testid': 'children-more', onclick: loadMore}, 'Show more'));
    } else {
      moreBox.replaceChildren();
    }
  }

  async function readChildren() {
    // the pages read so far again, so statuses stay current
    const items = [];
    let cursor = null;
    let pages = 0;
    do {
      const page = await ctx.api.get('/jobs', {parent: id, limit: CHILDREN_PAGE, cursor}, {signal});
      items.push(...page.items);
      cursor = page.next_cursor;
      pages += 1;
    } while (cursor && pages < Math.max(1, pagesRead));
    if (stopped) return;
    pagesRead = pages;
    children = items;
    nextCursor = cursor;
    renderChildren();
  }

  async function loadMore(e) {
    e.currentTarget.disabled = true;
    try {
      const page = await ctx.api.get('/jobs', {parent: id, limit: CHILDREN_PAGE, cursor: nextCursor}, {signal});
      if (stopped) return;
      const seen = new Set(children.map((c) => c.id));
      children.push(...page.items.filter((c) => !seen.has(c.id)));
      nextCursor = page.next_cursor;
      pagesRead += 1;
      renderChildren();
    } catch (err) {
      if (err.name !== 'AbortError') ctx.flash(`More children could not be read: ${err.message}`, 'error');
    }
  }

  async function cancel(e) {
    e.currentTarget.disabled = true;
    const read = await cancelJob(ctx, 'sweeps', id, {signal, title: 'sweep', stops: 'the sweep cancels its children.'});
    if (read) {
      job = read;
      renderJob();
    } else if (!signal.aborted) {
      renderHead();
    }
  }

  renderJob();
  await readChildren();

  // ---------------------------------------------------------------- live
  let timer = null;

  async function refreshChildren() {
    timer = null;
    if (stopped) return;
    try {
      await readChildren();
    } catch (err) {
      if (err.name === 'AbortError' || stopped) return;
      childrenNote.textContent = `refresh failed: ${err.message}`;
    }
    if (!stopped && !FINAL.has(job.status)) timer = setTimeout(refreshChildren, CHILDREN_REFRESH_MS);
  }

  async function follow() {
    timer = setTimeout(refreshChildren, CHILDREN_REFRESH_MS);
    await followJob(ctx, id, live, {
      signal,
      isStopped: () => stopped,
      onEvent: (name, data) => {
        if (name !== 'status') return;
        job = data;
        renderJob();
      },
      ended: async () => {
        job = await ctx.api.get(`/sweeps/${id}`, null, {signal});
        renderJob();
        clearTimeout(timer);
        timer = null;
        await readChildren();
      },
    });
  }

  if (!FINAL.has(job.status)) follow();

  return () => {
    stopped = true;
    controller.abort();
    clearTimeout(timer);
    for (const c of charts) c.destroy();
  };
}
