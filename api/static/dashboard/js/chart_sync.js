// Charts stacked on one x axis: a training's loss and accuracy over its LR and
// momentum. The charts of a ChartGroup share their cursor (uPlot's cursor.sync:
// hovering one shows the values of every chart at that iteration) and their x
// range: a drag-zoom on any chart zooms them all, a double click shows the whole
// run again on all of them, and the group asks its owner once per zoom for the
// data of the new range (at full resolution when it is short enough).
//
// Their left and right axes have the same fixed widths, so the plot areas line up
// and one iteration is at the same pixel column on every chart.
//
// Also here: merging series with different x values into uPlot's one x array,
// thinning points kept in the browser (a live run) the way the API does, a ±std
// band and horizontal reference lines.

import {uPlot} from './charts.js';
import {num} from './format.js';

/** Width in CSS pixels of every left and right axis of stacked charts (they line up). */
export const AXIS_SIZE = 64;

let groups = 0;

/**
 * Charts that share their cursor and x range.
 *
 * `home(u)` is the range shown when not zoomed, as [min, max] (a running job's
 * whole planned length, so the chart does not rescale as points arrive).
 * `onZoom(view)` is called (debounced) after the user zoomed to `view` =
 * {min, max}, or reset the zoom (`view` null): the owner then gives the charts
 * the data of that range with `setData`.
 */
export class ChartGroup {
  constructor({name = 'charts', home, onZoom, debounceMs = 200}) {
    groups += 1;
    this.key = `${name}-${groups}`;
    this.home = home;
    this.onZoom = onZoom;
    this.debounceMs = debounceMs;
    this.charts = [];
    this.view = null;
    this.quietDepth = 0;
    this.explicit = false;
    this.timer = null;
  }

  /** uPlot `cursor` options: synced with the group, drag zooms x only. */
  cursor(extra = {}) {
    return {
      sync: {key: this.key, setSeries: false},
      drag: {x: true, y: false, setScale: true},
      y: false, // a horizontal hair means nothing on the other charts' scales
      ...extra,
    };
  }

  /** uPlot options of the x scale: the home range unless zoomed. */
  xScale() {
    return {time: false, range: (u, min, max) => this.range(u, min, max)};
  }

  /** The plugin every chart of the group needs (zoom together, x range on the container). */
  plugin() {
    return {
      hooks: {
        ready: [(u) => {
          u.groupReady = true;
          markRange(u);
        }],
        setScale: [(u, key) => {
          if (key !== 'x') return;
          markRange(u);
          if (!u.groupReady || this.quietDepth) return;
          this.userScaled(u);
        }],
        destroy: [(u) => {
          this.charts = this.charts.filter((c) => c !== u);
        }],
      },
    };
  }

  /** Add a chart built with cursor(), xScale() and plugin(). */
  add(u) {
    this.charts.push(u);
    return u;
  }

  /** Destroy every chart of the group and stop a pending zoom. */
  destroy() {
    clearTimeout(this.timer);
    for (const u of [...this.charts]) u.destroy();
    this.charts = [];
  }

  /** Replace a chart's data, keeping the group's zoom (or its home range). */
  setData(u, data) {
    this.quiet(() => u.batch(() => {
      u.setData(data, true);
      const [min, max] = this.view ? [this.view.min, this.view.max] : this.homeRange(u);
      this.explicit = true;
      try {
        u.setScale('x', {min, max});
      } finally {
        this.explicit = false;
      }
    }));
  }

  /** Show the home range again on every chart (e.g. when the run got longer). */
  rehome() {
    if (this.view) return;
    for (const u of this.charts) {
      const [min, max] = this.homeRange(u);
      if (u.scales.x.min === min && u.scales.x.max === max) continue;
      this.quiet(() => u.batch(() => {
        this.explicit = true;
        try {
          u.setScale('x', {min, max});
        } finally {
          this.explicit = false;
        }
      }));
    }
  }

  /** Run fn with the group's own hooks off (a change made here is not the user's). */
  quiet(fn) {
    this.quietDepth += 1;
    try {
      return fn();
    } finally {
      this.quietDepth -= 1;
    }
  }

  homeRange(u) {
    const [lo, hi] = this.home(u) || [0, 1];
    return hi > lo ? [lo, hi] : [lo, lo + 1];
  }

  range(u, min, max) {
    if (this.explicit) return [min, max];
    const xs = u.data && u.data[0];
    if (min === null || max === null || !xs || !xs.length) return this.homeRange(u);
    // uPlot's own autoscale (a new chart, new data, a double click) asks for the
    // data's extent: show the home range instead
    if (min === xs[0] && max === xs[xs.length - 1]) return this.homeRange(u);
    return [min, max];
  }

  userScaled(u) {
    const {min, max} = u.scales.x;
    if (min === null || max === null) return;
    this.quiet(() => {
      for (const other of this.charts) {
        if (other === u || (other.scales.x.min === min && other.scales.x.max === max)) continue;
        other.batch(() => {
          this.explicit = true;
          try {
            other.setScale('x', {min, max});
          } finally {
            this.explicit = false;
          }
        });
      }
    });
    const [lo, hi] = this.homeRange(u);
    const slack = (hi - lo) * 1e-9;
    const next = min <= lo + slack && max >= hi - slack ? null : {min, max};
    const same = next === null ? this.view === null
      : this.view !== null && this.view.min === next.min && this.view.max === next.max;
    if (same) return;
    this.view = next;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.onZoom(this.view), this.debounceMs);
  }
}

/** The x range on the chart's container (data-x-min, data-x-max): tests compare charts by it. */
function markRange(u) {
  const box = u.root.parentElement;
  if (!box) return;
  const {min, max} = u.scales.x;
  if (min === null || max === null || min === undefined) return;
  box.dataset.xMin = String(min);
  box.dataset.xMax = String(max);
}

/** An iteration axis' tick: whole numbers as 100,000, fractions of a zoomed axis as 12.5. */
export function iterationTick(v) {
  return Number.isInteger(v) ? v.toLocaleString() : num(v, 4);
}

/**
 * Axes of a stacked chart: x (iterations) and a left and a right y axis of the
 * same width on every chart, so the plot areas line up. `right` null: an empty
 * right axis keeps the space.
 */
export function stackedAxes({xLabel = 'iteration', left, right = null, showX = true}) {
  const axes = [{
    label: showX ? xLabel : null,
    labelSize: showX ? 20 : 0,
    size: showX ? 36 : 8,
    values: (u, splits) => splits.map((v) => (v === null || !showX ? '' : iterationTick(v))),
    ticks: {show: showX},
    grid: {stroke: '#eef0f4'},
  }, {
    size: AXIS_SIZE,
    grid: {stroke: '#eef0f4'},
    ...left,
  }];
  axes.push(right ? {side: 1, size: AXIS_SIZE, grid: {show: false}, ...right} : {
    side: 1, size: AXIS_SIZE, scale: left.scale, grid: {show: false}, ticks: {show: false},
    values: (u, splits) => splits.map(() => ''),
  });
  return axes;
}

/**
 * One x array for series sampled at different x values (per-iteration points and
 * per-epoch points): `parts` = [{x: [...], ys: [[...], ...]}] each sorted by x.
 * Returns uPlot data [x, ...every part's ys], null where a part has no point.
 */
export function mergeX(parts) {
  const xs = [...new Set(parts.flatMap((p) => p.x))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const out = [xs];
  for (const part of parts) {
    for (const y of part.ys) {
      const col = new Array(xs.length).fill(null);
      if (y) part.x.forEach((x, i) => { col[at.get(x)] = y[i] ?? null; });
      out.push(col);
    }
  }
  return out;
}

/**
 * Thin points kept in the browser to about `maxPoints`, as the API thins a series:
 * in equal buckets of points, each field's lowest and highest point, plus the first
 * and the last. `index` is each point's index; `columns` maps a field to its values
 * (null: no values). Returns {index, columns} of the points kept.
 */
export function thinMinMax(index, columns, maxPoints) {
  const size = index.length;
  if (size <= maxPoints) return {index, columns};
  const fields = Object.keys(columns).filter((k) => columns[k]);
  const perBucket = 2 * Math.max(1, fields.length);
  let buckets = Math.max(1, Math.floor((maxPoints - 2) / perBucket));
  const width = Math.ceil(size / buckets);
  buckets = Math.ceil(size / width);
  const keep = new Uint8Array(size);
  keep[0] = 1;
  keep[size - 1] = 1;
  for (const field of fields) {
    const col = columns[field];
    for (let b = 0; b < buckets; b++) {
      const lo = b * width;
      const hi = Math.min(size, lo + width);
      let iMin = -1;
      let iMax = -1;
      for (let i = lo; i < hi; i++) {
        const v = col[i];
        if (v === null || v === undefined || Number.isNaN(v)) continue;
        if (iMin < 0 || v < col[iMin]) iMin = i;
        if (iMax < 0 || v > col[iMax]) iMax = i;
      }
      keep[iMin < 0 ? lo : iMin] = 1;
      if (iMax >= 0) keep[iMax] = 1;
    }
  }
  const picked = [];
  for (let i = 0; i < size; i++) if (keep[i]) picked.push(i);
  const out = {};
  for (const [field, col] of Object.entries(columns)) out[field] = col ? picked.map((i) => col[i]) : null;
  return {index: picked.map((i) => index[i]), columns: out};
}

/**
 * A band between two values per x behind the series (a mean ± its standard
 * deviation): getBands(u) -> [{x: [...], lo: [...], hi: [...], scale, fill}].
 */
export function bandPlugin(getBands) {
  return {
    hooks: {
      drawClear: [(u) => {
        const {ctx} = u;
        ctx.save();
        ctx.beginPath();
        ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
        ctx.clip();
        for (const band of getBands(u) || []) {
          const n = band.x.length;
          if (n < 2) continue;
          ctx.beginPath();
          for (let i = 0; i < n; i++) {
            const x = u.valToPos(band.x[i], 'x', true);
            const y = u.valToPos(band.hi[i], band.scale, true);
            if (i === 0) ctx.moveTo(x, y);
            else ctx.lineTo(x, y);
          }
          for (let i = n - 1; i >= 0; i--) {
            ctx.lineTo(u.valToPos(band.x[i], 'x', true), u.valToPos(band.lo[i], band.scale, true));
          }
          ctx.closePath();
          ctx.fillStyle = band.fill;
          ctx.fill();
        }
        ctx.restore();
      }],
    },
  };
}

/**
 * Horizontal reference lines with a label at their left end:
 * getLines(u) -> [{y, scale, color, label, dash}].
 */
export function levelPlugin(getLines) {
  return {
    hooks: {
      draw: [(u) => {
        const {ctx} = u;
        const {left, top, width, height} = u.bbox;
        const pr = uPlot.pxRatio;
        ctx.save();
        ctx.font = `${11 * pr}px system-ui, sans-serif`;
        ctx.textBaseline = 'bottom';
        ctx.textAlign = 'left';
        for (const line of getLines(u) || []) {
          const y = u.valToPos(line.y, line.scale, true);
          if (!Number.isFinite(y) || y < top || y > top + height) continue;
          ctx.strokeStyle = line.color || '#444';
          ctx.lineWidth = pr;
          ctx.setLineDash((line.dash || [6, 4]).map((d) => d * pr));
          ctx.beginPath();
          ctx.moveTo(left, y);
          ctx.lineTo(left + width, y);
          ctx.stroke();
          if (line.label) {
            ctx.fillStyle = line.color || '#444';
            ctx.fillText(line.label, left + 4 * pr, y - 2 * pr);
          }
        }
        ctx.restore();
      }],
    },
  };
}

/**
 * A legend value: '–' for a missing one, else `fmt(v)`. With `carry`, a series
 * sampled more sparsely than the x axis (one point per epoch) shows its last
 * value at or before the cursor instead of '–'.
 */
export function legendValue(fmt, carry = false) {
  return (u, v, seriesIdx, idx) => {
    if ((v === null || v === undefined) && carry && idx !== null && idx !== undefined) {
      const col = u.data[seriesIdx];
      for (let i = Math.min(idx, col.length - 1); i >= 0; i--) {
        if (col[i] !== null && col[i] !== undefined) return fmt(col[i]);
      }
    }
    return v === null || v === undefined ? '–' : fmt(v);
  };
}

/** "1 epoch", "2 epochs" (numbers in the browser's locale). */
export function plural(n, word, many = `${word}s`) {
  return `${typeof n === 'number' ? n.toLocaleString() : n} ${n === 1 ? word : many}`;
}
