// A training: loss and accuracy against iteration with the LR and momentum
// underneath on the same x axis (one cursor, one zoom), cycle ends marked on
// both; how it ended (final and best accuracy, the snapshot ensemble); its
// schedule and where the bounds came from; its model to download. While it is
// queued or running the page follows its events: points are appended as they
// arrive and the final state is shown when it ends.
//
// The iterations series is read thinned to the chart's width (the API keeps each
// bucket's extremes); a drag-zoom reads the zoomed range again, at full
// resolution when it is short enough. Points that arrive live are kept and
// thinned in the browser the same way.

import {h, replace, facts, notice, badge} from '../dom.js';
import {
  age, duration, jobSeconds, jobSubject, num, pct, shortId, when, FINAL,
} from '../format.js';
import {PALETTE, fetchSeries, makeChart, markerPlugin, pointsFor} from '../charts.js';
import {
  ChartGroup, legendValue, mergeX, plural, stackedAxes, thinMinMax,
} from '../chart_sync.js';
import {cancelJob, followJob} from '../jobs.js';

const FIELDS = ['lr', 'momentum', 'loss'];
const EPOCH_FIELDS = ['epoch', 'iteration', 'train_loss', 'train_accuracy', 'val_loss', 'val_accuracy'];
const COLOURS = {
  loss: 'rgba(0, 114, 178, 0.45)', epochLoss: PALETTE[0], valLoss: PALETTE[3],
  valAcc: PALETTE[2], trainAcc: PALETTE[4], lr: PALETTE[1], momentum: PALETTE[5], cycle: '#667085',
};
const SCHEDULE_LABELS = {
  lr: 'LR', base_lr: 'base LR', max_lr: 'max LR', step_size_up: 'step size up',
  step_size_down: 'step size down', step_size: 'step size', gamma: 'gamma', shape: 'shape',
  base_momentum: 'base momentum', max_momentum: 'max momentum', total_steps: 'total steps',
  pct_start: 'warm-up fraction', anneal_strategy: 'anneal', div_factor: 'div factor',
  final_div_factor: 'final div factor', three_phase: 'three phase', T_0: 'T₀', T_mult: 'T_mult',
  eta_min: 'η min', decay: 'decay',
};

/** The iterations where the schedule's cycles end within `total` (a running job's). */
export function plannedCycleEnds(schedule, total) {
  if (!schedule || !total) return [];
  const ends = [];
  const policy = schedule.policy;
  if (['triangular', 'triangular2', 'exp_range'].includes(policy)) {
    const up = schedule.step_size_up;
    if (!up) return [];
    const length = up + (schedule.step_size_down || up);
    for (let end = length; end <= total && ends.length < 10000; end += length) ends.push(end);
  } else if (policy === 'one_cycle') {
    const steps = schedule.total_steps || total;
    if (steps <= total) ends.push(steps);
  } else if (policy === 'cosine_restarts' && schedule.T_0) {
    let period = schedule.T_0;
    for (let end = period; end <= total && ends.length < 10000; end += period) {
      ends.push(end);
      period *= schedule.T_mult || 1;
    }
  }
  return ends;
}

/** The policy a training follows (null: a run of the team's own loop that named none). */
function policyOf(job) {
  const spec = job.spec || {};
  if (spec.schedule && spec.schedule.policy) return spec.schedule.policy;
  return spec.source === 'client' ? null : (job.result && job.result.policy) || null;
}

/** Points of a series kept in the browser: thinned reads plus live points. */
class Held {
  constructor(fields) {
    this.fields = fields;
    this.clear();
  }

  clear() {
    this.index = [];
    this.columns = Object.fromEntries(this.fields.map((f) => [f, []]));
    this.have = 0; // points of the series up to which we hold what the chart needs
    this.attempt = null;
  }

  /** Replace with a read ({index, values, nextAfter, attempt}) of the whole series. */
  load(read) {
    this.clear();
    this.index = read.index.slice();
    for (const f of this.fields) {
      const col = read.values[f];
      this.columns[f] = col ? col.slice() : new Array(this.index.length).fill(null);
    }
    this.have = read.nextAfter;
    this.attempt = read.attempt;
  }

  /**
   * Add a series event's points ({start, next_after, values, attempt}). The stream
   * starts at point 0: points of the same attempt already held are skipped; a
   * later attempt's points replace those from its `start` on (a resumed training).
   * Returns whether anything changed.
   */
  add(read) {
    let start = read.start;
    const n = read.next_after - read.start;
    let skip = 0;
    if (read.start < this.have) {
      if (read.attempt === this.attempt) {
        skip = this.have - read.start;
        if (skip >= n) return false;
        start = this.have;
      } else {
        this.truncate(read.start);
      }
    }
    for (let i = skip; i < n; i++) {
      this.index.push(read.start + i);
      for (const f of this.fields) {
        const col = read.values[f];
        this.columns[f].push(col ? (col[i] ?? null) : null);
      }
    }
    this.have = start + (n - skip);
    this.attempt = read.attempt;
    return true;
  }

  truncate(at) {
    let keep = this.index.length;
    while (keep > 0 && this.index[keep - 1] >= at) keep--;
    this.index.length = keep;
    for (const f of this.fields) this.columns[f].length = keep;
    this.have = Math.min(this.have, at);
  }

  /** Keep about `maxPoints` points (each field's extremes per bucket) once there are many more. */
  thin(maxPoints) {
    if (this.index.length <= 3 * maxPoints) return;
    const {index, columns} = thinMinMax(this.index, this.columns, maxPoints);
    this.index = index;
    this.columns = columns;
    for (const f of this.fields) if (!this.columns[f]) this.columns[f] = new Array(index.length).fill(null);
  }

  has(field) {
    return this.columns[field].some((v) => v !== null && v !== undefined);
  }
}

function scheduleFacts(job) {
  const spec = job.spec || {};
  const result = job.result;
  const schedule = (result && result.schedule) || spec.schedule || {};
  const policy = policyOf(job);
  const pairs = [['Policy', policy ? h('strong', {}, policy) : h('span', {class: 'muted'}, 'not given')]];
  if (schedule.base_lr !== undefined && schedule.base_lr !== null
      && schedule.max_lr !== undefined && schedule.max_lr !== null) {
    pairs.push(['LR bounds', h('span', {class: 'bounds'}, `${num(schedule.base_lr)} – ${num(schedule.max_lr)}`)]);
  }
  // in the order of make_schedule's arguments, the unknown ones last
  const order = Object.keys(SCHEDULE_LABELS);
  const keys = Object.keys(schedule).sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99));
  for (const key of keys) {
    const value = schedule[key];
    if (key === 'policy' || value === null || value === undefined) continue;
    if ((key === 'base_lr' || key === 'max_lr') && schedule.base_lr !== null && schedule.base_lr !== undefined
        && schedule.max_lr !== null && schedule.max_lr !== undefined) continue;
    pairs.push([SCHEDULE_LABELS[key] || key, typeof value === 'number' ? num(value, 4) : String(value)]);
  }
  const length = spec.cycles ? plural(spec.cycles, 'cycle') : spec.iterations ? plural(spec.iterations, 'iteration')
    : spec.epochs ? plural(spec.epochs, 'epoch') : null;
  if (length) {
    const inIterations = job.total && !spec.iterations ? ` (${job.total.toLocaleString()} iterations)` : '';
    pairs.push(['Length', `${length}${inIterations}`]);
  }
  const opt = spec.optimizer;
  if (opt) {
    const bits = [opt.name];
    if (opt.momentum) bits.push(`momentum ${num(opt.momentum)}`);
    if (opt.nesterov) bits.push('Nesterov');
    if (opt.betas) bits.push(`betas ${opt.betas.map((b) => num(b)).join(', ')}`);
    if (opt.weight_decay) bits.push(`weight decay ${num(opt.weight_decay)}`);
    pairs.push(['Optimizer', bits.join(' · ')]);
  }
  if (spec.batch_size) pairs.push(['Batch size', String(spec.batch_size)]);
  if (spec.model) pairs.push(['Model', `${spec.model}${spec.dataset ? ` / ${spec.dataset}` : ''}`]);
  const tags = Object.entries(spec.tags || {});
  if (tags.length) {
    pairs.push(['Tags', h('span', {class: 'tags', 'data-testid': 'tags'},
      tags.map(([k, v]) => h('span', {class: 'tag'}, `${k}=${v}`)))]);
  }
  const source = spec.bounds_source;
  const from = spec.bounds_from;
  const rangeTest = (source && source.range_test) || (from && from.range_test) || spec.range_test;
  if (rangeTest) {
    const method = (source && source.method) || (from && from.method);
    pairs.push(['Bounds from', h('span', {'data-testid': 'bounds-source'},
      h('a', {href: `#/range-tests/${rangeTest}`, class: 'mono'}, `range test ${shortId(rangeTest)}`),
      method ? ` (${method})` : '',
      source && source.base_lr !== undefined ? h('span', {class: 'muted'},
        ` ${num(source.base_lr)} – ${num(source.max_lr)}`) : null)]);
  } else if (schedule.base_lr !== undefined || schedule.lr !== undefined) {
    pairs.push(['Bounds from', h('span', {class: 'muted'}, 'given in the spec')]);
  }
  return pairs;
}

function outcomeFacts(job) {
  const r = job.result;
  if (!r) return null;
  const ensemble = r.ensemble_size
    ? [h('strong', {}, pct(r.ensemble_val_accuracy)),
      h('span', {class: 'muted'}, ` of ${r.ensemble_size} cycle-end snapshots`
        + `${r.ensemble_val_loss !== null && r.ensemble_val_loss !== undefined ? `, val loss ${num(r.ensemble_val_loss)}` : ''}`)]
    : [h('span', {class: 'muted'}, 'no snapshot ensemble')];
  const pairs = [
    ['Final val accuracy', h('strong', {'data-testid': 'final-accuracy'}, pct(r.final_val_accuracy))],
    ['Best val accuracy', h('span', {'data-testid': 'best-accuracy'}, pct(r.best_val_accuracy),
      r.best_val_iteration !== null && r.best_val_iteration !== undefined
        ? h('span', {class: 'muted'}, ` at iteration ${r.best_val_iteration.toLocaleString()}`) : null)],
    ['Snapshot ensemble', h('span', {'data-testid': 'ensemble-accuracy',
      dataset: {value: r.ensemble_val_accuracy ?? '', size: r.ensemble_size}}, ensemble)],
    ['Final loss', `train ${num(r.final_train_loss)} · val ${num(r.final_val_loss)}`],
    ['Length', h('span', {'data-testid': 'outcome-length'},
      `${plural(r.iterations, 'iteration')} · ${plural(r.epochs, 'epoch')} · ${plural(r.cycles, 'cycle')}`)],
    ['Stopped', r.stop_reason],
    ['Time', `${duration(r.seconds)} on ${r.device}`],
  ];
  if (r.resumed_from !== null && r.resumed_from !== undefined) {
    pairs.push(['Resumed from', `iteration ${r.resumed_from.toLocaleString()}`]);
  }
  const fusion = r.fusion;
  if (fusion) {
    // how a parent's training ran: fused with its siblings (links to them) or alone, and why
    const others = (fusion.jobs || []).slice(0, 8).map((id) =>
      h('a', {href: `#/trainings/${id}`, class: 'mono'}, shortId(id)));
    const more = (fusion.jobs || []).length - others.length;
    pairs.push(['Fused run', h('span', {'data-testid': 'fusion', dataset: {fused: String(fusion.fused), members: fusion.members}},
      h('strong', {}, fusion.fused ? `${plural(fusion.members, 'member')}${fusion.path ? ` (${fusion.path})` : ''}` : 'ran alone'),
      h('span', {class: 'muted'}, ` · ${fusion.reason}`),
      others.length ? h('span', {}, ' · with ', ...others.flatMap((a, i) => (i ? [', ', a] : [a])),
        more > 0 ? h('span', {class: 'muted'}, ` and ${more} more`) : null) : null)]);
  }
  return pairs;
}

function runFacts(job) {
  const pairs = [
    ['Status', h('span', {}, h('span', {class: ['badge', `status-${job.status}`]}, job.status),
      job.cancel_requested && !FINAL.has(job.status) ? h('span', {class: 'muted'}, ' cancelling') : null)],
    ['Attempt', `${job.attempt} of ${job.max_attempts}`],
    ['Runs on', job.spec && job.spec.source === 'client'
      ? 'the team\u2019s own loop (uploaded points)' : `${job.device || job.spec?.device || '–'}${job.worker ? ` · ${job.worker}` : ''}`],
    ['Created', h('span', {title: when(job.created_at)}, age(job.created_at))],
    ['Started', job.started_at ? h('span', {title: when(job.started_at)}, age(job.started_at)) : '–'],
    ['Duration', duration(jobSeconds(job))],
    ['Job', h('span', {class: 'mono'}, job.id)],
  ];
  if (job.parent_id) {
    const role = job.role || {};
    pairs.push(['Part of', h('span', {}, h('a', {href: `#/sweeps/${job.parent_id}`, class: 'mono'},
      `sweep ${shortId(job.parent_id)}`),
    h('span', {class: 'muted'}, ` ${[role.policy, role.seed !== undefined ? `seed ${role.seed}` : null]
      .filter(Boolean).join(', ')}`))]);
  }
  return pairs;
}

function statusNotices(job) {
  if (job.status === 'queued') {
    return notice('info', h('strong', {}, 'Queued'),
      job.queue_position ? ` (#${job.queue_position} in its queue)` : '',
      job.waiting_reason ? [': ', h('span', {'data-testid': 'waiting-reason'}, job.waiting_reason)] : '.');
  }
  if (job.status === 'failed') {
    return notice('error', h('strong', {}, 'Failed: '), h('span', {'data-testid': 'error'}, job.error || 'no reason given'));
  }
  if (job.status === 'cancelled') return notice('warning', 'Cancelled: the points up to then are kept.');
  if (job.cancel_requested) return notice('warning', 'Cancelling: the run stops at its next step.');
  return null;
}

function sizeText(bytes) {
  if (!Number.isFinite(bytes)) return '';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export async function render(root, {match}, ctx) {
  const id = match[1];
  const controller = new AbortController();
  const {signal} = controller;
  let stopped = false;
  let job = await ctx.api.get(`/trainings/${id}`, null, {signal});

  // ---------------------------------------------------------------- layout
  const title = h('h1', {}, 'Training ', h('span', {class: 'mono muted'}, shortId(id)));
  const statusBox = h('span', {class: 'head-status'});
  const subject = h('span', {class: 'muted'});
  const live = h('span', {class: 'live off', 'data-testid': 'live'});
  const actions = h('span', {class: 'actions'});
  const notices = h('div');
  const count = h('span', {class: 'count', 'data-testid': 'iteration-count'});
  const bar = h('span');
  const progress = h('div', {class: 'training-progress'},
    h('div', {class: 'progress', role: 'progressbar'}, bar), count);
  const lossBox = h('div', {class: 'chart stacked-top', 'data-testid': 'loss-chart'});
  const lrBox = h('div', {class: 'chart stacked-bottom', 'data-testid': 'lr-chart'});
  const empty = h('p', {class: 'muted chart-empty', hidden: true}, 'No iterations yet: the charts fill in as they arrive.');
  const cycleText = h('p', {class: 'legend-note', 'data-testid': 'cycle-ends'});
  const zoomNote = h('span', {class: 'legend-note zoom-note', 'data-testid': 'zoom-state'}, 'Drag to zoom, double-click to see the whole run.');
  const outcomeCard = h('section', {class: 'card', 'data-testid': 'outcome'});
  const scheduleCard = h('section', {class: 'card', 'data-testid': 'schedule'});
  const runCard = h('section', {class: 'card', 'data-testid': 'run'});
  const epochsBox = h('section', {class: 'card epochs-card'});
  replace(root, h('div', {class: 'run-page training-page'},
    h('div', {class: 'page-head'}, title, statusBox, subject, h('span', {class: 'spacer'}), live, actions),
    notices,
    progress,
    h('div', {class: 'grid2 training-grid'},
      h('section', {class: 'card charts-card'},
        h('div', {class: 'chart-head'}, h('p', {class: 'chart-title'}, 'Loss and accuracy'), zoomNote),
        empty, lossBox,
        h('p', {class: 'chart-title chart-title-lr'}, 'Learning rate and momentum'),
        lrBox, cycleText),
      h('div', {class: 'side'}, outcomeCard, scheduleCard, runCard)),
    epochsBox));

  // ---------------------------------------------------------------- data
  const its = new Held(FIELDS);
  const epochs = new Held(EPOCH_FIELDS);
  let zoomed = null; // {index, columns} of the zoomed range, read at its own resolution
  let zoomRead = 0;

  function cycleEnds() {
    if (job.result && Array.isArray(job.result.cycle_ends)) return job.result.cycle_ends;
    return plannedCycleEnds(job.spec && job.spec.schedule, job.total);
  }

  function lastX() {
    return its.index.length ? its.index[its.index.length - 1] : 0;
  }

  const group = new ChartGroup({
    name: `training-${id}`,
    home: () => [0, Math.max(job.total || 0, lastX(), 1)],
    onZoom: (view) => zoomTo(view),
  });
  let lossChart = null;
  let lrChart = null;
  let withMomentum = null;

  function lossData() {
    const src = zoomed || its;
    const ep = epochs.columns;
    return mergeX([
      {x: src.index, ys: [src.columns.loss]},
      {x: ep.iteration, ys: [ep.train_loss, ep.val_loss, ep.val_accuracy, ep.train_accuracy]},
    ]);
  }

  function lrData() {
    const src = zoomed || its;
    const data = [src.index, src.columns.lr];
    if (withMomentum) data.push(src.columns.momentum);
    return data;
  }

  /** Loss scale up to what matters: a diverged step's spike does not flatten the rest. */
  function lossRange(u, min, max) {
    if (min === null || max === null) return [0, 1];
    const values = [];
    for (let i = 1; i <= 3; i++) for (const v of u.data[i]) if (v !== null && Number.isFinite(v)) values.push(v);
    if (!values.length) return [0, 1];
    values.sort((a, b) => a - b);
    const p98 = values[Math.floor(0.98 * (values.length - 1))];
    const epochMax = Math.max(0, ...[...u.data[2], ...u.data[3]].filter((v) => v !== null && Number.isFinite(v)));
    const top = Math.min(max, Math.max(p98, epochMax) * 1.12);
    return [0, top > 0 ? top : 1];
  }

  function markers(withLabels) {
    return () => {
      const resumed = job.result && job.result.resumed_from;
      const ends = cycleEnds();
      // labelled while they fit; many cycles are dashed lines only (the text lists them)
      const labelled = withLabels && ends.length <= 8;
      const out = ends.map((x, i) => ({
        x, color: COLOURS.cycle, dash: [4, 4], width: 1, label: labelled ? `cycle ${i + 1}` : null,
      }));
      if (resumed !== null && resumed !== undefined) {
        out.push({x: resumed, color: PALETTE[6], dash: [2, 3], label: withLabels ? 'resumed' : null, row: 1});
      }
      return out;
    };
  }

  /** Each epoch's point is drawn while they are few enough to tell apart. */
  function epochPoints() {
    return epochs.index.length <= 40;
  }

  function buildCharts() {
    group.destroy();
    withMomentum = its.has('momentum') || Boolean(zoomed && zoomed.columns.momentum
      && zoomed.columns.momentum.some((v) => v !== null));
    const common = {
      cursor: group.cursor(),
      legend: {live: true},
    };
    lossChart = group.add(makeChart(lossBox, {
      ...common,
      height: 300,
      plugins: [group.plugin(), markerPlugin(markers(true))],
      scales: {x: group.xScale(), loss: {range: lossRange}, acc: {range: [0, 1]}},
      axes: stackedAxes({
        showX: false,
        left: {scale: 'loss', label: 'loss', labelSize: 18},
        right: {scale: 'acc', label: 'accuracy', labelSize: 18,
          values: (u, splits) => splits.map((v) => (v === null ? '' : `${Math.round(v * 100)}%`))},
      }),
      series: [
        {label: 'iteration', value: legendValue((v) => Math.round(v).toLocaleString())},
        {label: 'train loss', scale: 'loss', stroke: COLOURS.loss, width: 1, spanGaps: true,
          points: {show: false}, value: legendValue((v) => num(v, 4))},
        {label: 'epoch train loss', scale: 'loss', stroke: COLOURS.epochLoss, width: 2, spanGaps: true,
          points: {show: epochPoints, size: 5}, value: legendValue((v) => num(v, 4), true)},
        {label: 'val loss', scale: 'loss', stroke: COLOURS.valLoss, width: 2, spanGaps: true,
          points: {show: epochPoints, size: 6}, value: legendValue((v) => num(v, 4), true)},
        {label: 'val accuracy', scale: 'acc', stroke: COLOURS.valAcc, width: 2, spanGaps: true,
          points: {show: epochPoints, size: 6}, value: legendValue(pct, true)},
        {label: 'train accuracy', scale: 'acc', stroke: COLOURS.trainAcc, width: 1.5, dash: [6, 4],
          spanGaps: true, points: {show: epochPoints, size: 4}, value: legendValue(pct, true)},
      ],
    }, lossData()));
    const lrSeries = [
      {label: 'iteration', value: legendValue((v) => Math.round(v).toLocaleString())},
      {label: 'learning rate', scale: 'lr', stroke: COLOURS.lr, width: 1.5, spanGaps: true,
        points: {show: false}, value: legendValue((v) => num(v, 4))},
    ];
    if (withMomentum) {
      lrSeries.push({label: 'momentum', scale: 'mom', stroke: COLOURS.momentum, width: 1.5, dash: [5, 3],
        spanGaps: true, points: {show: false}, value: legendValue((v) => num(v, 4))});
    }
    lrChart = group.add(makeChart(lrBox, {
      ...common,
      height: 190,
      plugins: [group.plugin(), markerPlugin(markers(false))],
      scales: {
        x: group.xScale(),
        lr: {range: (u, min, max) => [0, max !== null && max > 0 ? max * 1.08 : 1]},
        mom: {range: (u, min, max) => (min === null ? [0, 1] : [min - (max - min || 0.1) * 0.1, max + (max - min || 0.1) * 0.1])},
      },
      axes: stackedAxes({
        left: {scale: 'lr', label: 'learning rate', labelSize: 18,
          values: (u, splits) => splits.map((v) => (v === null ? '' : num(v, 2)))},
        right: withMomentum ? {scale: 'mom', label: 'momentum', labelSize: 18,
          values: (u, splits) => splits.map((v) => (v === null ? '' : num(v, 3)))} : null,
      }),
      series: lrSeries,
    }, lrData()));
  }

  let drawQueued = false;
  let firstDraw = true;
  function draw() {
    drawQueued = false;
    if (stopped) return;
    empty.hidden = its.index.length > 0;
    const needMomentum = its.has('momentum');
    if (!lossChart || needMomentum !== withMomentum) {
      buildCharts();
    } else {
      group.setData(lossChart, lossData());
      group.setData(lrChart, lrData());
    }
    group.rehome();
    if (firstDraw) {
      firstDraw = false;
      requestAnimationFrame(() => performance.measure('series-drawn', 'series-fetch-start'));
    }
  }

  function redrawSoon() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(draw);
  }

  async function zoomTo(view) {
    const mine = ++zoomRead;
    if (!view) {
      zoomed = null;
      zoomNote.textContent = 'Drag to zoom, double-click to see the whole run.';
      redrawSoon();
      return;
    }
    const after = Math.max(0, Math.floor(view.min));
    const limit = Math.max(2, Math.ceil(view.max) - after + 1);
    zoomNote.textContent = 'Reading the zoomed range…';
    try {
      const read = await fetchSeries(ctx.api, id, 'iterations',
        {after, limit, maxPoints: pointsFor(lossBox), signal});
      if (mine !== zoomRead || stopped) return;
      const columns = {};
      for (const f of FIELDS) columns[f] = read.values[f] || new Array(read.index.length).fill(null);
      zoomed = {index: read.index, columns};
      zoomNote.textContent = `Iterations ${Math.max(0, Math.round(view.min)).toLocaleString()}–`
        + `${Math.round(view.max).toLocaleString()}, ${read.thinned ? 'thinned to the width' : 'every point'}`
        + ' · double-click to see the whole run';
      redrawSoon();
    } catch (err) {
      if (err.name === 'AbortError' || stopped) return;
      zoomNote.textContent = `The zoomed range could not be read: ${err.message}`;
    }
  }

  // ---------------------------------------------------------------- rendering the job
  function renderCount() {
    const total = job.total || 0;
    const have = its.have;
    count.dataset.count = String(have);
    count.textContent = total
      ? `${have.toLocaleString()} / ${total.toLocaleString()} iterations`
      : `${have.toLocaleString()} iterations`;
    const fraction = total ? Math.min(1, have / total) : 0;
    bar.style.width = `${(100 * fraction).toFixed(1)}%`;
    progress.hidden = FINAL.has(job.status) && have >= total;
  }

  function renderCycles() {
    const ends = cycleEnds();
    const planned = !(job.result && Array.isArray(job.result.cycle_ends));
    cycleText.dataset.ends = ends.join(',');
    if (!ends.length) {
      cycleText.textContent = policyOf(job) ? 'No cycle ends: this schedule has no cycles.'
        : 'No cycle ends to mark: the run named no schedule.';
      return;
    }
    const shown = ends.length > 12 ? [...ends.slice(0, 12).map((e) => e.toLocaleString()), '…'] : ends.map((e) => e.toLocaleString());
    cycleText.textContent = `Cycle ends${planned ? ' (planned)' : ''}, dashed: iterations ${shown.join(', ')}.`;
  }

  function renderActions() {
    const buttons = [];
    const artifacts = (job.result && job.result.artifacts) || [];
    const model = artifacts.find((a) => a.name === 'model');
    if (job.status === 'succeeded' && model) {
      buttons.push(h('button', {type: 'button', class: 'primary', 'data-testid': 'download-model',
        dataset: {size: model.size}, onclick: (e) => download(e.currentTarget, null)},
      `Download model${model.size ? ` (${sizeText(model.size)})` : ''}`));
      const snapshots = artifacts.filter((a) => /^snapshot-\d+$/.test(a.name));
      if (snapshots.length) {
        buttons.push(h('span', {class: 'snapshots muted'}, 'snapshots:',
          snapshots.map((a) => {
            const k = Number(a.name.split('-')[1]);
            return h('button', {type: 'button', class: 'small', 'data-testid': `download-snapshot-${k}`,
              title: `the ensemble's snapshot ${k} (${sizeText(a.size)})`,
              onclick: (e) => download(e.currentTarget, k)}, String(k));
          })));
      }
    }
    if (!FINAL.has(job.status)) {
      buttons.push(h('button', {type: 'button', class: 'danger', 'data-testid': 'cancel',
        disabled: job.cancel_requested, onclick: cancel}, job.cancel_requested ? 'Cancelling…' : 'Cancel'));
    }
    replace(actions, buttons);
  }

  function renderJob() {
    replace(statusBox, badge(job.status));
    replace(subject, jobSubject(job), job.spec && job.spec.source === 'client'
      ? ' (own loop)' : '', policyOf(job) ? ` · ${policyOf(job)}` : '');
    replace(notices, statusNotices(job));
    const outcome = outcomeFacts(job);
    replace(outcomeCard, h('h2', {}, 'Outcome'), outcome ? facts(outcome)
      : h('p', {class: 'muted'}, FINAL.has(job.status)
        ? `The training ${job.status} without an outcome.` : 'Shown when the training has finished.'));
    replace(scheduleCard, h('h2', {}, 'Schedule'), facts(scheduleFacts(job)));
    replace(runCard, h('h2', {}, 'Run'), facts(runFacts(job)));
    renderActions();
    renderCount();
    renderCycles();
  }

  function renderEpochs() {
    const ep = epochs.columns;
    const n = ep.epoch.length;
    if (!n) {
      epochsBox.hidden = true;
      return;
    }
    epochsBox.hidden = false;
    const cell = (v, fmt) => h('td', {class: 'num'}, v === null || v === undefined ? '–' : fmt(v));
    replace(epochsBox, h('details', {},
      h('summary', {}, `Epochs (${n})`),
      h('table', {class: 'epochs', 'data-testid': 'epochs-table'},
        h('thead', {}, h('tr', {}, ['epoch', 'iteration', 'train loss', 'train accuracy', 'val loss', 'val accuracy']
          .map((c) => h('th', {class: 'num', scope: 'col'}, c)))),
        h('tbody', {}, ep.epoch.map((_, i) => h('tr', {},
          cell(ep.epoch[i], (v) => String(v)), cell(ep.iteration[i], (v) => v.toLocaleString()),
          cell(ep.train_loss[i], (v) => num(v, 4)), cell(ep.train_accuracy[i], pct),
          cell(ep.val_loss[i], (v) => num(v, 4)), cell(ep.val_accuracy[i], pct)))))));
  }

  // ---------------------------------------------------------------- actions
  async function download(button, snapshot) {
    button.disabled = true;
    try {
      const {blob, filename} = await ctx.api.blob(`/trainings/${id}/model`, snapshot ? {snapshot} : null, {signal});
      const url = URL.createObjectURL(blob);
      const link = h('a', {href: url, download: filename || `training-${shortId(id)}${snapshot ? `-snapshot-${snapshot}` : ''}.pt`, hidden: true});
      document.body.append(link);
      link.click();
      link.remove();
      // the download has taken the blob by the time this runs
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      if (err.name !== 'AbortError') ctx.flash(`The model could not be downloaded: ${err.message}`, 'error');
    } finally {
      button.disabled = false;
    }
  }

  async function cancel(e) {
    e.currentTarget.disabled = true;
    const read = await cancelJob(ctx, 'trainings', id, {signal, title: 'training', stops: 'the training stops at its next step.'});
    if (read) {
      job = read;
      renderJob();
    } else if (!signal.aborted) {
      renderActions();
    }
  }

  // ---------------------------------------------------------------- first read
  renderJob();
  performance.mark('series-fetch-start');
  const [first, epochRead] = await Promise.all([
    fetchSeries(ctx.api, id, 'iterations', {maxPoints: pointsFor(lossBox), signal}),
    fetchSeries(ctx.api, id, 'epochs', {signal}),
  ]);
  if (stopped || !ctx.isCurrent()) return () => controller.abort();
  its.load(first);
  epochs.load(epochRead);
  draw();
  renderCount();
  renderEpochs();

  // ---------------------------------------------------------------- live
  async function reloadAll() {
    const [read, epochsNow] = await Promise.all([
      fetchSeries(ctx.api, id, 'iterations', {maxPoints: pointsFor(lossBox), signal}),
      fetchSeries(ctx.api, id, 'epochs', {signal}),
    ]);
    if (stopped) return;
    its.load(read);
    epochs.load(epochsNow);
    renderCount();
    renderEpochs();
    redrawSoon();
  }

  function follow() {
    return followJob(ctx, id, live, {
      signal,
      isStopped: () => stopped,
      // only what came after the first read (the stream's ids count each series' points)
      lastEventId: first.attempt ? `${first.attempt}:${first.nextAfter},${epochRead.nextAfter}` : null,
      onEvent: (name, data) => {
        if (name === 'status') {
          job = data;
          renderJob();
        } else if (name === 'iterations') {
          if (its.add(data)) {
            its.thin(pointsFor(lossBox));
            renderCount();
            if (!zoomed) redrawSoon();
          }
        } else if (name === 'epochs') {
          if (epochs.add(data)) {
            renderEpochs();
            redrawSoon();
          }
        }
      },
      // ended: the final state, and the whole series thinned afresh
      ended: async () => {
        job = await ctx.api.get(`/trainings/${id}`, null, {signal});
        renderJob();
        await reloadAll();
        renderJob();
      },
    });
  }

  if (!FINAL.has(job.status)) follow();

  return () => {
    stopped = true;
    controller.abort();
    group.destroy();
  };
}
