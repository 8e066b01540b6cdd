// One range test: its loss (raw and smoothed) and accuracy against the learning
// rate on a log axis, the default bounds shaded and every method's base and max
// marked; the methods side by side; the CyclicLR line to copy; its facts; cancel.
//
// While the test is queued or running the page follows the job's events
// (GET /jobs/{id}/events through fetch, with the token in the Authorization
// header): `status` events update the facts, `curve` events append their points
// to the chart, `end` loads the bounds. A finished test's curve is read once,
// thinned on the server to the chart's width, and again at full resolution for
// the range the user zooms to.

import {h, replace, facts, notice, badge} from '../dom.js';
import {duration, jobSeconds, liveText, num, pct, shortId, when, age, FINAL} from '../format.js';
import {
  alpha, fetchSeries, keepSplits, logSplits, logTicks, lossRange, makeChart, markerPlugin, numTicks, pctTicks,
  pointsFor, shadePlugin, zoomable,
} from '../charts.js';

/** Each method's colour, the same on every page (none is the curves' blue). */
const METHOD_COLORS = {
  paper: '#D55E00',
  max_fraction: '#009E73',
  steepest: '#E69F00',
  valley: '#CC79A7',
  min_div_10: '#56B4E9',
  verified: '#7F3C8D',
};
const SPARE_COLORS = ['#E73F74', '#11A579', '#3969AC', '#000000'];
const CURVE_COLORS = {raw: 'rgba(11, 61, 145, 0.28)', smooth: '#0b3d91', accuracy: 'rgba(127, 60, 141, 0.45)'};

export function methodColor(method, i = 0) {
  return METHOD_COLORS[method] || SPARE_COLORS[i % SPARE_COLORS.length];
}

/**
 * A number as Python's format(x, '.4g') writes it (0.0713, 1e-05, 1.5e+03), so
 * the CyclicLR line is the one the CLI prints, character for character: rounded
 * from the double's exact decimal digits, half to even as Python does
 * (toPrecision and toFixed round half up).
 */
export function pyG(x, precision = 4) {
  if (x === 0) return Object.is(x, -0) ? '-0' : '0';
  if (!Number.isFinite(x)) return Number.isNaN(x) ? 'nan' : (x > 0 ? 'inf' : '-inf');
  const sign = x < 0 ? '-' : '';
  let digits;
  let exp;
  const exact = Math.abs(x) < 1e21 ? Math.abs(x).toFixed(100) : null;
  if (exact === null) {
    const [m, e] = Math.abs(x).toExponential(precision - 1).split('e');
    digits = m.replace('.', '');
    exp = Number(e);
  } else {
    // every digit of the double (toFixed(100) is exact for the values a bound takes)
    const [whole, frac] = exact.split('.');
    const all = (whole + frac).replace(/^0+/, '');
    exp = whole === '0' ? -(frac.length - frac.replace(/^0+/, '').length) - 1 : whole.length - 1;
    const kept = all.slice(0, precision).padEnd(precision, '0');
    const rest = all.slice(precision);
    let up = rest[0] > '5' || (rest[0] === '5' && (/[1-9]/.test(rest.slice(1)) || Number(kept.at(-1)) % 2 === 1));
    if (!rest.length) up = false;
    digits = up ? String(BigInt(kept) + 1n) : kept;
    if (digits.length > precision) {
      digits = digits.slice(0, precision);
      exp += 1;
    }
  }
  const strip = (t) => (t.includes('.') ? t.replace(/0+$/, '').replace(/\.$/, '') : t);
  if (exp < -4 || exp >= precision) {
    const mantissa = strip(`${digits[0]}.${digits.slice(1)}`);
    return `${sign}${mantissa}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  const text = exp >= 0
    ? `${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`
    : `0.${'0'.repeat(-exp - 1)}${digits}`;
  return sign + strip(text);
}

/**
 * The lines to train with one suggestion of a BoundsRead document, as
 * `clr-sweep range-test show` prints them (cli/render.py: cyclic_lr_code).
 */
export function cyclicCode(bounds, suggestion = bounds) {
  const step = bounds.step_size;
  let args = `base_lr=${pyG(suggestion.base_lr)}, max_lr=${pyG(suggestion.max_lr)}`;
  if (step !== null && step !== undefined) args += `, step_size_up=${step}`;
  let line = `sched = CyclicLR(opt, ${args}, mode="triangular2")`;
  if (step === null || step === undefined) line += '  # and step_size_up: 2 to 8 epochs of iterations';
  const lines = ['from clr import CyclicLR', line];
  if (bounds.stop_iteration !== null && bounds.stop_iteration !== undefined) {
    const cycles = bounds.cycles === null || bounds.cycles === undefined ? 'None' : bounds.cycles;
    lines.push(`# sched.step() after every batch; stop after iteration ${bounds.stop_iteration} `
      + `(the end of cycle ${cycles})`);
  }
  return lines.join('\n');
}

/** What a range test trains: its workload, or the team's model / dataset. */
export function subjectText(spec) {
  if (spec.workload) return spec.workload;
  if (spec.model) return `${spec.model} / ${spec.dataset || '?'}`;
  return '–';
}

/** The batch size in use (folded into params by the service; a client spec's own). */
export function batchSize(spec) {
  return spec.batch_size ?? (spec.params || {}).batch_size ?? null;
}

/** The optimizer's hyperparameters that are in effect: [[name, text]]. */
export function optimizerSettings(opt) {
  if (!opt) return [];
  const out = [];
  if (opt.momentum !== undefined) out.push(['momentum', String(opt.momentum)]);
  if (opt.nesterov) out.push(['nesterov', 'yes']);
  if (opt.betas !== undefined) out.push(['betas', (opt.betas || []).join(', ')]);
  if (opt.eps !== undefined) out.push(['eps', num(opt.eps)]);
  if (opt.weight_decay !== undefined) out.push(['weight decay', String(opt.weight_decay)]);
  return out;
}

/** `sgd (momentum 0.9, weight decay 0)` */
export function optimizerText(opt) {
  if (!opt) return '–';
  const settings = optimizerSettings(opt).map(([k, v]) => (v === 'yes' ? k : `${k} ${v}`));
  return settings.length ? `${opt.name} (${settings.join(', ')})` : opt.name;
}

/** The model's parameters (a workload's params less the batch size, or a client's tags). */
export function modelParams(spec) {
  const out = [];
  for (const [k, v] of Object.entries(spec.params || {})) {
    if (k !== 'batch_size') out.push([k, typeof v === 'object' ? JSON.stringify(v) : String(v)]);
  }
  for (const [k, v] of Object.entries(spec.tags || {})) out.push([k, String(v)]);
  return out;
}

const STOP_REASONS = {
  completed: 'swept the whole range',
  diverged: 'the loss diverged',
  nan: 'the loss became NaN',
};

function flatten(obj, prefix = '', out = []) {
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === 'object' && !Array.isArray(v)) flatten(v, key, out);
    else out.push([key, Array.isArray(v) ? v.map((x) => (typeof x === 'number' ? num(x, 4) : String(x))).join(', ')
      : typeof v === 'number' ? num(v, 4) : String(v)]);
  }
  return out;
}

/** Colour the swatches from their data-color (set from JS: the CSP allows no style attribute). */
export function paintSwatches(el) {
  for (const swatch of el.querySelectorAll('[data-color]')) swatch.style.background = swatch.dataset.color;
}

export async function render(root, {match}, ctx) {
  const id = match[1];
  const controller = new AbortController();
  const {signal} = controller;
  const state = {
    job: await ctx.api.get(`/range-tests/${id}`, null, {signal}),
    bounds: null,
    boundsError: null,
    use: null, // the method whose bounds the CyclicLR line shows (default: the default)
    live: false,
    streamState: '',
    streamError: null,
    cancelError: null,
    copied: false,
  };
  // the curve: every point received (live), or the thinned read (finished)
  const curve = {index: [], lr: [], loss: [], smooth: [], acc: [], hasAcc: false, thinned: false, points: 0};
  let zoomData = null; // the zoomed range at full resolution (finished, thinned tests)
  let chart = null;
  let chartHasAcc = false;
  let frame = null;
  let factsAt = 0;

  const head = h('div', {class: 'page-head rt-head'});
  const progress = h('div', {class: 'rt-progress'});
  const alerts = h('div', {class: 'rt-alerts'});
  const chartBox = h('div', {class: 'chart rt-chart', 'data-testid': 'curve-chart'});
  const chartNote = h('div', {class: 'rt-chart-note'});
  const side = h('div', {class: 'rt-side'});
  const methodsCard = h('section', {class: 'card rt-methods-card'});
  const verificationCard = h('section', {class: 'card', hidden: true});
  const factsCard = h('section', {class: 'card'});
  replace(root, head, progress, alerts,
    h('div', {class: 'grid2 rt-top'},
      h('section', {class: 'card rt-chart-card'}, chartNote, chartBox,
        h('p', {class: 'legend-note'},
          'Drag across the chart to zoom (read again at full resolution); double-click to reset. ',
          'Shaded: the default bounds; dashed lines mark each method\u2019s base, solid lines its max.')),
      side),
    methodsCard, verificationCard, factsCard);

  // ------------------------------------------------------------------ the chart

  function chartData() {
    if (zoomData) return [zoomData.lr, zoomData.loss, zoomData.smooth, zoomData.acc];
    return [curve.lr, curve.loss, curve.smooth, curve.acc];
  }

  function suggestions() {
    return state.bounds ? state.bounds.suggestions : [];
  }

  function markers() {
    const out = [];
    suggestions().forEach((s, i) => {
      const color = methodColor(s.method, i);
      const main = s.method === state.bounds.default_method;
      out.push({x: s.base_lr, color, width: main ? 2 : 1.2, dash: [5, 4], at: 'bottom',
        label: `${s.method} base ${num(s.base_lr)}`});
      out.push({x: s.max_lr, color, width: main ? 2.2 : 1.2, dash: [1, 0], label: `${s.method} max ${num(s.max_lr)}`});
    });
    return out;
  }

  function shaded() {
    const b = state.bounds;
    if (!b) return [];
    const def = b.suggestions.find((s) => s.method === b.default_method) || b;
    return [{from: def.base_lr, to: def.max_lr, fill: alpha(methodColor(b.default_method), 0.14)}];
  }

  function buildChart() {
    chart?.destroy();
    chartHasAcc = curve.hasAcc;
    chartBox.replaceChildren();
    const series = [
      {label: 'learning rate', value: (_u, v) => (v === null || v === undefined ? '–' : num(v))},
      {label: 'loss', stroke: CURVE_COLORS.raw, width: 1, value: (_u, v) => (v === null || v === undefined ? '–' : num(v, 4))},
      {label: 'smoothed loss', stroke: CURVE_COLORS.smooth, width: 2.5,
        value: (_u, v) => (v === null || v === undefined ? '–' : num(v, 4))},
      {label: 'accuracy', stroke: CURVE_COLORS.accuracy, width: 1, scale: 'acc', show: chartHasAcc,
        spanGaps: true, value: (_u, v) => (v === null || v === undefined ? '–' : pct(v))},
    ];
    const axes = [
      {label: 'learning rate', splits: logSplits, filter: keepSplits, values: logTicks, grid: {stroke: '#eef0f3'}},
      {label: 'loss', values: numTicks, grid: {stroke: '#eef0f3'}, size: 60},
    ];
    if (chartHasAcc) {
      axes.push({label: 'accuracy', scale: 'acc', side: 1, values: pctTicks, grid: {show: false}, size: 55,
        stroke: CURVE_COLORS.accuracy});
    }
    chart = makeChart(chartBox, {
      height: 440,
      scales: {
        x: {time: false, distr: 3, log: 10, range: xRange},
        y: {range: (u) => {
          const [i0, i1] = u.series[0].idxs || [0, null];
          return lossRange(u.data[2], [u.data[1]], i0 ?? 0, i1);
        }},
        acc: {range: [0, 1]},
      },
      series,
      axes,
      cursor: {drag: {x: true, y: false}},
      legend: {live: true},
      plugins: [
        shadePlugin(shaded),
        markerPlugin(markers),
        zoomable(reload, () => (zoomData ? zoomData.index : curve.index)),
      ],
    }, chartData());
  }

  /** The LR axis: the points' range; while live, the whole swept range (points fill it in). */
  function xRange(u, min, max) {
    const spec = state.job.spec || {};
    let lo = min;
    let hi = max;
    if (state.live && !u.zoomed && spec.start_lr > 0 && spec.end_lr > spec.start_lr) {
      lo = Math.min(lo ?? spec.start_lr, spec.start_lr);
      hi = Math.max(hi ?? spec.end_lr, spec.end_lr);
    }
    if (!(lo > 0) || !(hi > 0)) return [1e-5, 10];
    return hi > lo ? [lo, hi] : [lo / 2, hi * 2];
  }

  /** After a zoom, the zoomed range read again (thinned tests: at full resolution); a reset the whole. */
  async function reload(after, limit) {
    try {
      if (limit === null) {
        zoomData = null;
        chart?.setData(chartData());
      } else if (curve.thinned) {
        const read = await fetchSeries(ctx.api, id, 'curve', {maxPoints: pointsFor(chartBox), after, limit, signal});
        zoomData = toArrays(read);
        zoomData.points = limit;
        chart?.setData(chartData());
      }
    } catch (err) {
      if (err.name !== 'AbortError') ctx.flash(`Could not read the zoomed range: ${err.message}`, 'error');
    }
    renderNote();
  }

  function resetZoom() {
    if (chart) chart.zoomed = false;
    reload(0, null);
  }

  /** Redraw on the next frame (many curve events in a burst draw once). */
  function draw() {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = null;
      if (!curve.lr.length) {
        if (!chart) replace(chartBox, h('p', {class: 'rt-empty'}, emptyText()));
        return;
      }
      if (state.live) {
        renderProgress();
        // the facts (steps, time) at most once a second: a text being selected there survives
        if (Date.now() - factsAt > 1000) renderFacts();
      }
      if (!chart || curve.hasAcc !== chartHasAcc) buildChart();
      else chart.setData(chartData(), !chart.zoomed);
    });
  }

  function emptyText() {
    const s = state.job.status;
    if (s === 'queued') return 'No points yet: the test is queued.';
    if (s === 'running') return 'No points yet: waiting for the first steps\u2026';
    return 'This test has no curve points.';
  }

  function toArrays(read) {
    const v = read.values;
    const n = read.index.length;
    const col = (name) => (v[name] ? v[name].map((x) => (x === undefined ? null : x)) : new Array(n).fill(null));
    return {index: read.index, lr: col('lr'), loss: col('loss'), smooth: col('smoothed_loss'), acc: col('accuracy')};
  }

  /** A `curve` event: its points from `start` on (replacing any from there: a new attempt). */
  function addPoints(data) {
    const start = data.start;
    // the points held may begin with a thinned read: compare indices, not counts
    const end = curve.index.length ? curve.index[curve.index.length - 1] + 1 : 0;
    const replaced = start < end;
    if (replaced) {
      let keep = curve.index.findIndex((i) => i >= start);
      if (keep < 0) keep = curve.index.length;
      for (const key of ['index', 'lr', 'loss', 'smooth', 'acc']) curve[key].length = keep;
    }
    const v = data.values || {};
    const n = (v.lr || []).length;
    for (let i = 0; i < n; i += 1) {
      curve.index.push(start + i);
      curve.lr.push(v.lr[i]);
      curve.loss.push(v.loss ? v.loss[i] : null);
      curve.smooth.push(v.smoothed_loss ? v.smoothed_loss[i] : null);
      curve.acc.push(v.accuracy ? v.accuracy[i] : null);
    }
    const some = (xs) => (xs || []).some((x) => x !== null && x !== undefined);
    curve.hasAcc = replaced ? some(curve.acc) : curve.hasAcc || some(v.accuracy);
    curve.points = start + n;
    // status events come only when the status changes: the progress comes with the points
    state.job = {...state.job, progress: Math.max(data.points ?? curve.points, 0), total: data.total ?? state.job.total};
    // the count alone: the note's Reset zoom button stays put under the mouse
    const count = chartNote.querySelector('[data-testid=point-count]');
    if (count && curve.points > 1 && data.start > 1) count.textContent = String(curve.points);
    else renderNote();
    draw();
  }

  // ------------------------------------------------------------------ the sections

  function renderHead() {
    const job = state.job;
    const spec = job.spec || {};
    const done = FINAL.has(job.status);
    const cancel = done ? null : h('button', {
      type: 'button', class: 'danger', 'data-testid': 'cancel', disabled: job.cancel_requested,
      onclick: onCancel,
    }, job.cancel_requested ? 'Cancelling\u2026' : 'Cancel');
    const liveTag = state.live
      ? h('span', {class: ['live', state.streamState === 'reconnecting' ? 'off' : null], 'data-testid': 'live'},
        liveText(state.streamState, state.streamRefusal))
      : null;
    replace(head,
      h('h1', {}, 'Range test ', h('span', {class: 'mono', title: job.id}, shortId(job.id))),
      h('span', {class: 'rt-subject'}, subjectText(spec),
        spec.source === 'client' ? h('span', {class: 'muted'}, ' (own loop)') : null),
      badge(job.status),
      job.cancel_requested && !done ? h('span', {class: 'muted'}, 'cancel requested') : null,
      liveTag,
      h('span', {class: 'spacer'}),
      h('a', {href: `#/overlay?ids=${job.id}`, class: 'rt-link'}, 'Overlay with others'),
      cancel);
    renderProgress();
  }

  /** The progress bar alone (redrawn with the points: the head's buttons stay put under the mouse). */
  function renderProgress() {
    const job = state.job;
    const done = FINAL.has(job.status);
    const total = job.total || 0;
    if (!done && total) {
      const bar = h('span');
      bar.style.width = `${Math.min(100, (100 * job.progress) / total)}%`;
      replace(progress, h('div', {class: 'progress'}, bar),
        h('span', {class: 'muted', 'data-testid': 'progress'}, `${job.progress} / ${total} steps`));
      progress.hidden = false;
    } else {
      progress.hidden = true;
    }
  }

  function renderAlerts() {
    const job = state.job;
    const result = job.result || {};
    const items = [];
    if (job.status === 'failed') {
      items.push(notice('error', h('strong', {}, 'The range test failed: '),
        h('span', {'data-testid': 'job-error'}, job.error || 'no reason given')));
    }
    if (job.status === 'cancelled') items.push(notice('info', 'The range test was cancelled; the points it had are kept.'));
    if (job.status === 'queued') {
      items.push(notice('info', h('strong', {}, 'Queued'),
        job.queue_position ? ` (#${job.queue_position} in line)` : '',
        h('span', {'data-testid': 'waiting-reason'}, job.waiting_reason ? `: ${job.waiting_reason}` : ': waiting for a worker.')));
    }
    if (job.status === 'running' && job.waiting) {
      items.push(notice('info', 'The curve is done; its bounds are being verified by training (see below).'));
    }
    if (job.status === 'succeeded' && result.no_bounds_reason) {
      items.push(notice('warning', h('strong', {}, 'No bounds: '), result.no_bounds_reason));
    }
    if (state.cancelError) items.push(notice('error', `Cancel failed: ${state.cancelError}`));
    if (state.streamError) items.push(notice('warning', `Live updates stopped: ${state.streamError}. Reload the page to try again.`));
    replace(alerts, items);
  }

  function renderNote() {
    const count = h('span', {'data-testid': 'point-count'}, String(curve.points));
    const parts = [h('strong', {}, 'Loss vs learning rate'), ' ',
      h('span', {class: 'muted'}, '(', count, curve.points === 1 ? ' point' : ' points',
        state.live ? ' received' : '', curve.thinned ? `, ${curve.lr.length} drawn` : '', ')')];
    if (state.live && state.streamState !== 'reconnecting') parts.push(' ', h('span', {class: 'live'}, '\u25CF live'));
    if (chart && chart.zoomed) {
      const {min, max} = chart.scales.x;
      parts.push(h('span', {class: 'spacer'}), h('span', {class: 'rt-zoom', 'data-testid': 'zoom-state'},
        `zoomed to ${num(min)} \u2013 ${num(max)}`,
        !zoomData ? '' : zoomData.lr.length >= zoomData.points
          ? ` (${zoomData.lr.length} points, full resolution)`
          : ` (${zoomData.lr.length} of its ${zoomData.points} points)`),
      h('button', {type: 'button', class: 'link-button', 'data-testid': 'zoom-reset', onclick: resetZoom}, 'Reset zoom'));
    }
    replace(chartNote, parts);
  }

  function chosen() {
    const b = state.bounds;
    return b.suggestions.find((s) => s.method === (state.use || b.default_method)) || b.suggestions[0] || b;
  }

  function renderSide() {
    const job = state.job;
    const b = state.bounds;
    const parts = [];
    if (b) {
      const def = b.suggestions.find((s) => s.method === b.default_method) || b;
      parts.push(h('section', {class: 'card rt-bounds-card'},
        h('div', {class: 'rt-kicker'}, 'Suggested bounds'),
        h('div', {class: 'rt-bounds', 'data-testid': 'bounds', dataset: {method: b.default_method,
          baseLr: String(def.base_lr), maxLr: String(def.max_lr)}},
        h('span', {class: 'rt-lr'}, num(def.base_lr)), h('span', {class: 'rt-dash'}, ' \u2013 '),
        h('span', {class: 'rt-lr'}, num(def.max_lr))),
        h('div', {class: 'rt-method-line'},
          h('span', {class: 'rt-swatch', dataset: {color: methodColor(b.default_method)}}),
          h('span', {}, b.default_method), h('span', {class: 'muted'}, ' (default method)')),
        facts([
          ['confidence', h('span', {'data-testid': 'confidence'}, h('meter', {min: 0, max: 1, low: 0.34, high: 0.67,
            optimum: 1, value: b.confidence}), ` ${num(b.confidence, 2)}`)],
          ['noise', h('span', {'data-testid': 'noise'}, pct(b.noise))],
          b.step_size !== null ? ['step size', `${b.step_size} iterations (half a cycle)`] : null,
          b.stop_iteration !== null ? ['stop after', `iteration ${b.stop_iteration} (${b.cycles} cycles)`] : null,
        ], {class: 'facts rt-bounds-facts'}),
        (b.warnings || []).map((w) => {
          const n = notice('warning', w);
          n.dataset.testid = 'warning';
          return n;
        })));
      const use = chosen();
      const pre = h('pre', {class: 'copy', 'data-testid': 'cyclic-line'}, cyclicCode(b, use));
      const copy = h('button', {type: 'button', 'data-testid': 'copy', onclick: () => onCopy(pre.textContent)},
        state.copied ? 'copied' : 'Copy');
      parts.push(h('section', {class: 'card'},
        h('div', {class: 'rt-copy-head'}, h('span', {class: 'rt-kicker'}, 'Train with the ',
          h('strong', {}, use.method), ' bounds', use.method === b.default_method ? ' (default)' : ''),
        h('span', {class: 'spacer'}), copy),
        pre,
        h('p', {class: 'help'}, 'Pick another method\u2019s bounds in the table below.')));
    } else if (job.status === 'succeeded' && (job.result || {}).no_bounds_reason) {
      parts.push(h('section', {class: 'card'}, h('div', {class: 'rt-kicker'}, 'Suggested bounds'),
        h('div', {class: 'rt-bounds muted', 'data-testid': 'bounds'}, 'none'),
        h('p', {class: 'help'}, job.result.no_bounds_reason)));
    } else if (state.boundsError) {
      parts.push(notice('error', `The bounds could not be read: ${state.boundsError}`));
    } else {
      parts.push(h('section', {class: 'card'}, h('div', {class: 'rt-kicker'}, 'Suggested bounds'),
        h('p', {class: 'muted'}, FINAL.has(job.status)
          ? `None: the test ${job.status === 'failed' ? 'failed' : 'was cancelled'}.`
          : 'Suggested once the test has finished; the curve fills in live.')));
    }
    replace(side, parts);
    paintSwatches(side);
  }

  function renderMethods() {
    const b = state.bounds;
    if (!b) {
      methodsCard.hidden = true;
      return;
    }
    methodsCard.hidden = false;
    const use = chosen().method;
    const rows = b.suggestions.map((s, i) => {
      const isDefault = s.method === b.default_method;
      const evidence = flatten(s.evidence);
      return h('tr', {dataset: {method: s.method, baseLr: String(s.base_lr), maxLr: String(s.max_lr)},
        class: isDefault ? 'rt-default' : null},
      h('td', {class: 'rt-method'},
        h('span', {class: 'rt-swatch', dataset: {color: methodColor(s.method, i)}}),
        h('strong', {}, s.method),
        isDefault ? h('span', {class: 'rt-tag', 'data-testid': 'default-method'}, 'default') : null),
      h('td', {class: 'num', title: String(s.base_lr), 'data-testid': 'base-lr'}, num(s.base_lr)),
      h('td', {class: 'num', title: String(s.max_lr), 'data-testid': 'max-lr'}, num(s.max_lr)),
      h('td', {class: 'num muted'}, `\u00D7${num(s.max_lr / s.base_lr, 2)}`),
      h('td', {class: 'rt-rationale'}, s.rationale,
        evidence.length ? h('details', {class: 'rt-evidence'}, h('summary', {}, 'evidence'),
          facts(evidence.map(([k, v]) => [k, v]), {class: 'facts rt-evidence-facts'})) : null),
      h('td', {}, h('label', {class: 'rt-use'}, h('input', {type: 'radio', name: `use-${id}`, value: s.method,
        checked: s.method === use, onchange: () => {
          state.use = s.method;
          renderSide();
        }}), ' use')));
    });
    const failed = Object.entries(b.failed || {}).map(([method, why]) => h('tr', {dataset: {method, failed: 'true'},
      class: 'rt-failed'},
    h('td', {class: 'rt-method'}, h('strong', {}, method), h('span', {class: 'rt-tag bad'}, 'failed')),
    h('td', {class: 'num'}, '–'), h('td', {class: 'num'}, '–'), h('td', {}, ''),
    h('td', {class: 'rt-rationale', 'data-testid': 'failed-reason'}, why), h('td', {}, '')));
    replace(methodsCard,
      h('h2', {}, 'The methods side by side'),
      h('table', {class: 'rt-methods', 'data-testid': 'methods'},
        h('thead', {}, h('tr', {}, ['method', 'base_lr', 'max_lr', 'ratio', 'rationale', 'CyclicLR']
          .map((c, i) => h('th', {scope: 'col', class: i >= 1 && i <= 3 ? 'num' : null}, c)))),
        h('tbody', {}, rows, failed)));
    paintSwatches(methodsCard);
  }

  function renderVerification() {
    const v = (state.job.result || {}).verification;
    if (!v) {
      verificationCard.hidden = true;
      return;
    }
    verificationCard.hidden = false;
    const candidates = v.candidates || [];
    const winner = v.winner;
    const last = (arr) => {
      const xs = (arr || []).filter((x) => x !== null && x !== undefined);
      return xs.length ? xs[xs.length - 1] : null;
    };
    replace(verificationCard,
      h('h2', {}, 'Verification ', h('span', {class: ['badge', `status-${v.status}`], 'data-testid': 'verification-status'}, v.status)),
      h('p', {}, winner
        ? ['Winner: ', h('strong', {'data-testid': 'verification-winner'}, `${winner.source} ${num(winner.base_lr)} \u2013 ${num(winner.max_lr)}`),
          winner.val_loss !== null && winner.val_loss !== undefined ? ` (validation loss ${num(winner.val_loss, 4)}` : ' (',
          winner.val_accuracy !== null && winner.val_accuracy !== undefined ? `, accuracy ${pct(winner.val_accuracy)})` : ')']
        : (v.reason || 'No winner yet.'),
      h('span', {class: 'muted'}, ` \u00B7 ${candidates.length} candidates, ${(v.rounds || []).length} rounds, `
          + `${num(v.spent_iterations / Math.max(1, v.full_run_iterations), 2)} of ${num(v.budget_runs, 2)} full runs spent`)),
      candidates.length ? h('table', {class: 'rt-candidates'},
        h('thead', {}, h('tr', {}, ['candidate', 'base_lr', 'max_lr', 'validation loss', 'accuracy', '']
          .map((c, i) => h('th', {scope: 'col', class: i >= 1 && i <= 4 ? 'num' : null}, c)))),
        h('tbody', {}, candidates.map((c) => h('tr', {class: winner && c.source === winner.source
          && c.max_lr === winner.max_lr ? 'rt-default' : null},
        h('td', {}, c.source), h('td', {class: 'num'}, num(c.base_lr)), h('td', {class: 'num'}, num(c.max_lr)),
        h('td', {class: 'num'}, num(last(c.val_loss), 4)), h('td', {class: 'num'}, pct(last(c.val_accuracy))),
        h('td', {class: 'muted'}, c.failed || ''))))) : null);
  }

  function renderFacts() {
    factsAt = Date.now();
    const job = state.job;
    const spec = job.spec || {};
    const result = job.result || {};
    const summary = result.summary || {};
    const params = modelParams(spec);
    const client = spec.source === 'client';
    const stop = summary.stop_reason
      ? [h('strong', {}, summary.stop_reason), ` \u2013 ${summary.stop_detail || STOP_REASONS[summary.stop_reason] || ''}`]
      : null;
    const left = [
      [client ? 'model / dataset' : 'workload', subjectText(spec)],
      [client ? 'tags' : 'params', params.length ? params.map(([k, v]) => `${k} ${v}`).join(', ') : '–'],
      ['batch size', String(batchSize(spec) ?? '–')],
      ['optimizer', optimizerText(spec.optimizer)],
      ['LR range', `${num(spec.start_lr)} \u2192 ${num(spec.end_lr)} over ${spec.num_iter} steps (${spec.sweep})`],
      ['smoothing', `${spec.smoothing}; divergence at ${spec.diverge_th}\u00D7 the best; bounds read from the ${spec.metric}`],
      spec.seeds ? ['seeds', `${spec.seeds.join(', ')} (the curve is seed ${spec.seed}'s)`]
        : spec.seed !== undefined ? ['seed', String(spec.seed)] : null,
      ['device', job.device || summary.device || spec.device || '–'],
      client ? ['run by', 'the team\u2019s own loop (uploaded)'] : null,
    ];
    const right = [
      ['status', job.status + (job.cancel_requested && !FINAL.has(job.status) ? ' (cancel requested)' : '')],
      ['attempt', `${job.attempt} of ${job.max_attempts}`],
      job.worker ? ['worker', job.worker] : null,
      stop ? ['stopped', stop] : null,
      summary.steps_run !== undefined ? ['steps', `${summary.steps_run}${summary.skipped_steps ? ` (${summary.skipped_steps} skipped)` : ''}`]
        : ['steps', `${job.progress} of ${job.total}`],
      ['time', summary.seconds !== undefined ? duration(summary.seconds) : duration(jobSeconds(job))],
      ['created', h('span', {title: when(job.created_at)}, `${when(job.created_at)} (${age(job.created_at)})`)],
      ['started', job.started_at ? when(job.started_at) : '–'],
      ['finished', job.finished_at ? when(job.finished_at) : '–'],
    ];
    const band = (job.result || {}).seed_band;
    if (band) {
      // a range test under several seeds: how they ran, and the bounds across them
      const across = band.default
        ? `${band.default.method} ${num(band.default.base_lr)} – ${num(band.default.max_lr)} (max_lr from ${num(band.max_lr_band[0])} to ${num(band.max_lr_band[1])}, ${band.seed_spread.toFixed(2)}×), confidence ${band.confidence.toFixed(2)}`
        : `no bounds: ${band.no_bounds_reason}`;
      right.push(['across seeds', h('span', {'data-testid': 'seed-band', dataset: {fused: String(band.fused)}},
        h('strong', {}, across), h('span', {class: 'muted'}, ` · ${band.reason}`))]);
    }
    if (job.error) right.push(['error', h('span', {class: 'rt-error'}, job.error)]);
    replace(factsCard, h('h2', {}, 'Facts'),
      h('div', {class: 'rt-facts', 'data-testid': 'facts'}, facts(left), facts(right)));
  }

  function renderAll() {
    renderHead();
    renderAlerts();
    renderNote();
    renderSide();
    renderMethods();
    renderVerification();
    renderFacts();
  }

  // ------------------------------------------------------------------ actions

  async function onCancel(e) {
    e.target.disabled = true;
    e.target.textContent = 'Cancelling\u2026';
    state.cancelError = null;
    try {
      state.job = await ctx.api.post(`/range-tests/${id}/cancel`);
      if (!FINAL.has(state.job.status)) {
        ctx.flash('Cancel requested: the worker stops at its next step.');
        state.cancelFlashed = true;
      }
    } catch (err) {
      state.cancelError = err.message;
    }
    renderAll();
    if (FINAL.has(state.job.status) && !state.live) await loadFinal();
  }

  async function onCopy(text) {
    try {
      await navigator.clipboard.writeText(text);
      state.copied = true;
    } catch (err) {
      // a page over plain http on another host has no clipboard: select the text instead
      const pre = side.querySelector('[data-testid=cyclic-line]');
      const range = document.createRange();
      range.selectNodeContents(pre);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      ctx.flash(`Copy it by hand (${err.message}): the text is selected.`, 'error');
      return;
    }
    renderSide();
    setTimeout(() => {
      state.copied = false;
      if (!signal.aborted) renderSide();
    }, 2000);
  }

  async function loadBounds() {
    if (state.job.status !== 'succeeded' || (state.job.result || {}).no_bounds_reason) return;
    try {
      state.bounds = await ctx.api.get(`/range-tests/${id}/bounds`, null, {signal});
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      state.boundsError = err.message;
    }
  }

  /** The curve so far, thinned to the chart's width; the read (its attempt, nextAfter). */
  async function loadCurve() {
    const read = await fetchSeries(ctx.api, id, 'curve', {maxPoints: pointsFor(chartBox), signal});
    const arrays = toArrays(read);
    Object.assign(curve, arrays, {thinned: read.thinned, points: read.nextAfter,
      hasAcc: arrays.acc.some((x) => x !== null && x !== undefined)});
    return read;
  }

  async function loadFinal() {
    await Promise.all([loadBounds(), curve.points ? null : loadCurve()]);
    renderAll();
    draw();
    chart?.redraw();
  }

  /** A `status` event's job (a queued one with its place and why it waits). */
  function mergeStatus(job) {
    state.job = job;
  }

  // ------------------------------------------------------------------ start

  if (FINAL.has(state.job.status)) {
    await Promise.all([loadBounds(), loadCurve()]);
    renderAll();
    draw();
  } else {
    state.live = true;
    // the points so far in one thinned read (a long running test is not sent again
    // point by point), then the stream from right after them
    let after = null;
    if (state.job.progress > 0) {
      const read = await loadCurve();
      if (read.attempt) after = `${read.attempt}:${read.nextAfter}`;
    }
    renderAll();
    draw();
    ctx.api.stream(`/jobs/${id}/events`, {
      signal,
      lastEventId: after,
      onState: (s, err) => {
        state.streamState = s;
        state.streamRefusal = err || null;
        renderHead();
        renderNote();
      },
      onEvent: (name, data) => {
        if (name === 'status') {
          mergeStatus(data);
          renderHead();
          renderAlerts();
          renderFacts();
          renderVerification();
        } else if (name === 'curve') {
          addPoints(data);
          if (data.status && data.status !== state.job.status) renderHead();
        } else if (name === 'end') {
          state.live = false;
        }
      },
    }).then(async () => {
      if (signal.aborted) return;
      state.live = false;
      if (state.cancelFlashed) ctx.flash(''); // the page itself now says how it ended
      state.job = await ctx.api.get(`/range-tests/${id}`, null, {signal});
      await loadFinal();
    }).catch((err) => {
      if (err.name === 'AbortError' || signal.aborted) return;
      state.live = false;
      state.streamError = err.message;
      renderAll();
    });
  }

  return () => {
    controller.abort();
    if (frame) cancelAnimationFrame(frame);
    chart?.destroy();
    chart = null;
  };
}
