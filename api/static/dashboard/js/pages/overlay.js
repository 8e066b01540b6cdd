// Several range tests on one chart, to compare configurations: each test's
// smoothed loss against the learning rate in its own colour, its default bounds
// shaded in that colour and its base and max marked; a legend table of their
// settings with those that differ between the tests highlighted (what one
// compares); tests added from the team's recent succeeded range tests, or removed.
//
// The tests' learning rates differ (another range, another number of steps), so
// each smoothed curve is interpolated (in log LR) onto one grid as wide as the
// chart; a zoom makes a new grid over the zoomed range from the points read.

import {h, replace, notice} from '../dom.js';
import {num, shortId, jobHref} from '../format.js';
import {
  PALETTE, alpha, fetchSeries, keepSplits, logSplits, logTicks, lossRange, makeChart, markerPlugin, numTicks,
  shadePlugin, zoomHooks,
} from '../charts.js';
import {batchSize, modelParams, optimizerSettings, paintSwatches, subjectText} from './rangetest.js';

const ID = /^[0-9a-fA-F-]{36}$/;
const MAX_TESTS = PALETTE.length;
const MAX_POINTS = 4000;
const KEYS = 'ABCDEFGHIJKL';

/** The ids in `?ids=a,b,c`: well-formed, once each (the page shows MAX_TESTS at most). */
function parseIds(query) {
  const ids = [];
  for (const raw of (query.get('ids') || '').split(',')) {
    const s = raw.trim().toLowerCase();
    if (ID.test(s) && !ids.includes(s)) ids.push(s);
  }
  return ids;
}

function href(ids) {
  return `#/overlay${ids.length ? `?ids=${ids.join(',')}` : ''}`;
}

/** A test's settings that a comparison reads: [{key, label, text}] (group: where it is shown). */
function settings(job) {
  const spec = job.spec || {};
  const out = [
    {key: 'subject', group: 'subject', label: spec.workload ? 'workload' : 'model', text: subjectText(spec)},
    {key: 'batch', group: 'batch', label: 'batch size', text: String(batchSize(spec) ?? '–')},
    {key: 'opt.name', group: 'optimizer', label: 'optimizer', text: (spec.optimizer || {}).name || '–'},
  ];
  for (const [k, v] of optimizerSettings(spec.optimizer)) {
    out.push({key: `opt.${k}`, group: 'optimizer', label: k, text: v});
  }
  for (const [k, v] of modelParams(spec)) out.push({key: `param.${k}`, group: 'params', label: k, text: v});
  out.push({key: 'range', group: 'range', label: 'LR range',
    text: `${num(spec.start_lr)}\u2013${num(spec.end_lr)}, ${spec.num_iter} steps`});
  if (spec.seed !== undefined) out.push({key: 'seed', group: 'params', label: 'seed', text: String(spec.seed)});
  return out;
}

/** The setting keys whose values are not the same in every test (a missing one counts). */
function differing(jobs) {
  const all = jobs.map((job) => new Map(settings(job).map((s) => [s.key, s])));
  const keys = new Set(all.flatMap((m) => [...m.keys()]));
  const out = new Set();
  for (const key of keys) {
    const texts = new Set(all.map((m) => (m.get(key) ? m.get(key).text : '\u2205')));
    if (texts.size > 1) out.add(key);
  }
  return out;
}

/** n learning rates evenly spaced in log between lo and hi. */
function logGrid(lo, hi, n) {
  const a = Math.log10(lo);
  const b = Math.log10(hi);
  return Array.from({length: n}, (_, i) => 10 ** (a + ((b - a) * i) / Math.max(1, n - 1)));
}

/** ys (at xs, ascending) interpolated in log x at each grid point; null outside xs' range. */
function resample(xs, ys, grid) {
  const out = new Array(grid.length).fill(null);
  if (!xs.length) return out;
  let j = 0;
  for (let i = 0; i < grid.length; i += 1) {
    const g = grid[i];
    if (g < xs[0] || g > xs[xs.length - 1]) continue;
    while (j < xs.length - 2 && xs[j + 1] < g) j += 1;
    const x0 = xs[j];
    const x1 = xs[Math.min(j + 1, xs.length - 1)];
    const y0 = ys[j];
    const y1 = ys[Math.min(j + 1, ys.length - 1)];
    if (y0 === null || y1 === null || y0 === undefined || y1 === undefined) {
      out[i] = y0 ?? y1 ?? null;
      continue;
    }
    const t = x1 === x0 ? 0 : (Math.log(g) - Math.log(x0)) / (Math.log(x1) - Math.log(x0));
    out[i] = y0 + t * (y1 - y0);
  }
  return out;
}

/** A curve's points ascending in LR, without the non-positive LRs a log axis cannot show. */
function sortedCurve(read) {
  const lr = read.values.lr || [];
  const sm = read.values.smoothed_loss || read.values.loss || [];
  const pts = [];
  for (let i = 0; i < lr.length; i += 1) if (lr[i] > 0 && Number.isFinite(lr[i])) pts.push([lr[i], sm[i]]);
  pts.sort((a, b) => a[0] - b[0]);
  return {lr: pts.map((p) => p[0]), smooth: pts.map((p) => p[1])};
}

export async function render(root, {query}, ctx) {
  const asked = parseIds(query);
  const ids = asked.slice(0, MAX_TESTS);
  const controller = new AbortController();
  const {signal} = controller;
  const tests = await Promise.all(ids.map(async (id, i) => {
    const color = PALETTE[i % PALETTE.length];
    try {
      const [job, read] = await Promise.all([
        ctx.api.get(`/range-tests/${id}`, null, {signal}),
        fetchSeries(ctx.api, id, 'curve', {maxPoints: MAX_POINTS, signal}),
      ]);
      return {id, key: KEYS[i], color, job, curve: sortedCurve(read), points: read.points};
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      return {id, key: KEYS[i], color, error: err.status === 404 ? 'not found (or another team\u2019s)' : err.message};
    }
  }));
  const shown = tests.filter((t) => t.job);

  // ------------------------------------------------------------- picking tests
  const picker = h('select', {'data-testid': 'overlay-add', 'aria-label': 'add a range test'},
    h('option', {value: ''}, 'Add a range test\u2026'));
  picker.addEventListener('change', () => {
    if (picker.value) ctx.navigate(href([...ids, picker.value]));
  });
  ctx.api.get('/jobs', {kind: 'range_test', status: 'succeeded', limit: 100}, {signal}).then((page) => {
    for (const job of page.items) {
      if (ids.includes(job.id)) continue;
      const b = job.result && job.result.bounds;
      const spec = job.spec || {};
      picker.append(h('option', {value: job.id},
        `${shortId(job.id)} \u00B7 ${subjectText(spec)} \u00B7 batch ${batchSize(spec) ?? '–'} \u00B7 `
        + `${(spec.optimizer || {}).name || ''}${b ? ` \u00B7 ${num(b.base_lr)}\u2013${num(b.max_lr)}` : ''}`));
    }
    picker.disabled = ids.length >= MAX_TESTS || picker.options.length <= 1;
    if (picker.options.length <= 1) picker.options[0].textContent = 'No other succeeded range tests';
  }).catch((err) => {
    if (err.name !== 'AbortError') picker.options[0].textContent = `Could not list range tests: ${err.message}`;
  });
  const remove = (id) => ctx.navigate(href(ids.filter((x) => x !== id)));

  // ------------------------------------------------------------- the legend
  const diff = differing(shown.map((t) => t.job));
  const mark = (key) => (diff.has(key) ? 'differs' : null);
  const rows = tests.map((t) => {
    const removeButton = h('button', {type: 'button', class: 'remove', 'data-testid': 'overlay-remove',
      title: 'remove from the overlay', onclick: () => remove(t.id)}, '\u2715');
    const keyCell = h('td', {}, h('span', {class: 'ov-key', dataset: {color: t.color}}, t.key));
    if (!t.job) {
      return h('tr', {class: 'ov-missing', dataset: {id: t.id}}, keyCell,
        h('td', {class: 'mono'}, shortId(t.id)), h('td', {colspan: 6}, t.error), h('td', {}, removeButton));
    }
    const job = t.job;
    const spec = job.spec || {};
    const all = settings(job);
    const opt = all.filter((s) => s.group === 'optimizer' && s.key !== 'opt.name');
    const params = all.filter((s) => s.group === 'params');
    const b = job.result && job.result.bounds;
    return h('tr', {dataset: {id: t.id}},
      keyCell,
      h('td', {}, h('a', {href: jobHref(job), class: 'mono'}, shortId(job.id)),
        spec.source === 'client' ? h('div', {class: 'muted'}, 'own loop') : null),
      h('td', {class: mark('subject')}, subjectText(spec)),
      h('td', {class: ['num', mark('batch')], 'data-testid': 'batch-size'}, String(batchSize(spec) ?? '–')),
      h('td', {}, h('span', {class: ['chip', mark('opt.name')]}, (spec.optimizer || {}).name || '–'),
        opt.map((s) => h('span', {class: ['chip', mark(s.key)]}, s.text === 'yes' ? s.label : `${s.label} ${s.text}`))),
      h('td', {}, params.length
        ? params.map((s) => h('span', {class: ['chip', mark(s.key)], dataset: {key: s.key}}, `${s.label} ${s.text}`))
        : h('span', {class: 'muted'}, '–'),
      h('span', {class: ['chip', mark('range')], title: 'the swept LR range'}, all.find((s) => s.key === 'range').text)),
      h('td', {class: 'num', 'data-testid': 'overlay-bounds'}, b
        ? [h('strong', {}, `${num(b.base_lr)} \u2013 ${num(b.max_lr)}`), h('div', {class: 'muted'}, b.method)]
        : h('span', {class: 'muted'}, job.status === 'succeeded' ? 'no bounds' : job.status)),
      h('td', {}, removeButton));
  });
  const differs = [...diff].map((key) => {
    const s = shown.map((t) => settings(t.job).find((x) => x.key === key)).find(Boolean);
    return s ? s.label : key;
  });

  const chartBox = h('div', {class: 'chart ov-chart', 'data-testid': 'overlay-chart'});
  const zoomNote = h('span', {class: 'rt-zoom'});
  replace(root,
    h('div', {class: 'page-head ov-head'}, h('h1', {}, 'Overlay of range tests'),
      h('span', {class: 'muted'}, `${shown.length} test${shown.length === 1 ? '' : 's'}`),
      h('span', {class: 'spacer'}), h('label', {class: 'ov-add'}, picker)),
    asked.length > MAX_TESTS ? notice('warning', `Showing the first ${MAX_TESTS} of the ${asked.length} `
      + `range tests asked for: one chart has ${MAX_TESTS} colours.`) : null,
    ids.length ? null : notice('info', 'Pick range tests to compare: tick them on the ',
      h('a', {href: '#/runs?kind=range_test'}, 'runs page'), ', or add them here.'),
    shown.length ? h('section', {class: 'card ov-chart-card'},
      h('div', {class: 'rt-chart-note'}, h('strong', {}, 'Smoothed loss vs learning rate'), h('span', {class: 'spacer'}),
        zoomNote),
      chartBox,
      h('p', {class: 'legend-note'}, 'Each test\u2019s default bounds are shaded in its colour (dashed: base, '
        + 'solid: max). Drag to zoom, double-click to reset.')) : null,
    tests.length ? h('section', {class: 'card'},
      h('p', {class: 'ov-differs', 'data-testid': 'overlay-differs'}, shown.length < 2
        ? h('span', {class: 'muted'}, 'Add another test to compare.')
        : differs.length ? ['Differs between the tests (highlighted): ', h('strong', {}, differs.join(', '))]
          : h('span', {class: 'muted'}, 'The tests have the same settings.')),
      h('table', {class: 'ov-legend', 'data-testid': 'overlay-legend'},
        h('thead', {}, h('tr', {}, ['', 'range test', 'workload / model', 'batch', 'optimizer', 'model & sweep',
          'bounds', ''].map((c, i) => h('th', {scope: 'col', class: i === 3 || i === 6 ? 'num' : null}, c)))),
        h('tbody', {}, rows))) : null);
  paintSwatches(root);

  if (!shown.length) return () => controller.abort();

  // ------------------------------------------------------------- the chart
  const lo = Math.min(...shown.map((t) => t.curve.lr[0] ?? Infinity));
  const hi = Math.max(...shown.map((t) => t.curve.lr[t.curve.lr.length - 1] ?? -Infinity));
  const gridSize = () => Math.max(200, Math.min(2000, chartBox.clientWidth || 800));
  const data = (a, b) => {
    const grid = logGrid(a, b, gridSize());
    return [grid, ...shown.map((t) => resample(t.curve.lr, t.curve.smooth, grid))];
  };
  const bounds = (t) => t.job.result && t.job.result.bounds;
  let chart = null;
  if (Number.isFinite(lo) && Number.isFinite(hi) && hi > lo) {
    chart = makeChart(chartBox, {
      height: 460,
      scales: {
        x: {time: false, distr: 3, log: 10},
        y: {range: (u) => {
          const [i0, i1] = u.series[0].idxs || [0, null];
          let a = Infinity;
          let b = -Infinity;
          for (let s = 1; s < u.data.length; s += 1) {
            if (u.series[s].show === false) continue;
            const [ra, rb] = lossRange(u.data[s], [], i0 ?? 0, i1);
            if (u.data[s].some((v) => v !== null)) {
              a = Math.min(a, ra);
              b = Math.max(b, rb);
            }
          }
          return Number.isFinite(a) ? [a, b] : [0, 1];
        }},
      },
      series: [
        {label: 'learning rate', value: (_u, v) => (v === null || v === undefined ? '–' : num(v))},
        ...shown.map((t) => ({
          label: `${t.key} ${shortId(t.id)}`, stroke: t.color, width: 2.2,
          value: (_u, v) => (v === null || v === undefined ? '–' : num(v, 4)),
        })),
      ],
      axes: [
        {label: 'learning rate', splits: logSplits, filter: keepSplits, values: logTicks, grid: {stroke: '#eef0f3'}},
        {label: 'smoothed loss', values: numTicks, grid: {stroke: '#eef0f3'}, size: 60},
      ],
      cursor: {drag: {x: true, y: false}},
      legend: {live: true},
      plugins: [
        shadePlugin((u) => shown.map((t, i) => ({t, i})).filter(({t, i}) => bounds(t) && u.series[i + 1].show !== false)
          .map(({t}) => ({from: bounds(t).base_lr, to: bounds(t).max_lr, fill: alpha(t.color, 0.1)}))),
        markerPlugin((u) => shown.flatMap((t, i) => {
          const b = bounds(t);
          if (!b || u.series[i + 1].show === false) return [];
          return [
            {x: b.base_lr, color: t.color, width: 1.4, dash: [5, 4], at: 'bottom', label: `${t.key} base ${num(b.base_lr)}`},
            {x: b.max_lr, color: t.color, width: 1.6, dash: [1, 0], label: `${t.key} max ${num(b.max_lr)}`},
          ];
        })),
        zoomHooks({onZoom: (a, b) => zoom(a, b), onReset: () => zoom(lo, hi)}),
      ],
    }, data(lo, hi));
  } else {
    replace(chartBox, h('p', {class: 'rt-empty'}, 'These tests have no curve points yet.'));
  }

  /** A new grid over [a, b] (the whole range on a reset), and the note saying so. */
  function zoom(a, b) {
    const whole = a <= lo && b >= hi;
    if (whole) chart.zoomed = false;
    chart.setData(data(Math.max(a, lo), Math.min(b, hi)));
    replace(zoomNote, whole ? [] : [
      h('span', {'data-testid': 'zoom-state'}, `zoomed to ${num(Math.max(a, lo))} \u2013 ${num(Math.min(b, hi))}`),
      h('button', {type: 'button', class: 'link-button', 'data-testid': 'zoom-reset', onclick: () => zoom(lo, hi)},
        'Reset zoom')]);
  }

  return () => {
    controller.abort();
    chart?.destroy();
  };
}
