// Charts on uPlot (vendored, api/static/vendor/uplot-1.6.32): a canvas chart that
// draws hundreds of thousands of points without lag, with a log axis, a live
// legend of the values under the cursor, drag-to-zoom and double-click to reset.
//
// The series come thinned by the API (`?max_points=`: each field's extremes per
// bucket, so a spike survives); when the user zooms, `zoomable` asks for the
// visible range again, at full resolution when it is short enough.

import uPlot from '../vendor/uplot-1.6.32/uPlot.esm.js';
import {num} from './format.js';

export {uPlot};

/** Colours for series and for the tests of an overlay (colour-blind safe: Okabe–Ito + more). */
export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000',
  '#F0E442', '#7F3C8D', '#11A579', '#3969AC', '#E73F74'];

/** Points asked for per chart pixel column: two keep a column's min and max. */
export const POINTS_PER_PIXEL = 2;

/** A colour (#rrggbb) with an alpha, as rgba(): a shade of a series' own colour. */
export function alpha(hex, a) {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  if (!m) return hex;
  return `rgba(${parseInt(m[1], 16)}, ${parseInt(m[2], 16)}, ${parseInt(m[3], 16)}, ${a})`;
}

/** Ticks of a log axis as 1e-5, 2e-5, 1e-4, 0.001, 0.01, 0.1, 1, 10. */
export function logTicks(_u, splits) {
  return splits.map((v) => (v === null ? '' : num(v, 2).replace(/\.0+e/, 'e')));
}

/** Ticks as plain numbers. */
export function numTicks(_u, splits) {
  return splits.map((v) => (v === null ? '' : num(v, 3)));
}

/** Ticks of a 0..1 scale as percentages. */
export function pctTicks(_u, splits) {
  return splits.map((v) => (v === null ? '' : `${Math.round(v * 100)}%`));
}

/**
 * The splits of a log axis: the powers of ten in range, plus 2x and 5x when
 * the range spans few decades, every 1..9x in a decade or less, and five
 * values rounded to two digits in a narrow zoom (uPlot's own log splits label
 * every 1..9 x 10^k, which crowds a wide axis). Use as an axis' `splits`.
 */
export function logSplits(_u, _axis, min, max) {
  if (!(min > 0) || !(max > min)) return [];
  const lo = Math.floor(Math.log10(min));
  const hi = Math.ceil(Math.log10(max));
  const inRange = (v) => v >= min * (1 - 1e-9) && v <= max * (1 + 1e-9);
  const make = (steps, every) => {
    const out = [];
    for (let e = lo; e <= hi; e += 1) {
      if ((e - lo) % every) continue;
      for (const m of steps) {
        const v = Number((m * 10 ** e).toPrecision(12));
        if (inRange(v)) out.push(v);
      }
    }
    return out;
  };
  const decades = Math.log10(max / min);
  let out = make(decades <= 3 ? [1, 2, 5] : [1], Math.max(1, Math.ceil((hi - lo) / 10)));
  if (out.length < 3) out = make([1, 2, 3, 4, 5, 6, 7, 8, 9], 1);
  if (out.length < 3) {
    const picked = Array.from({length: 5}, (_, i) => Number((min * (max / min) ** (i / 4)).toPrecision(2)));
    out = [...new Set(picked)].filter(inRange);
  }
  return out;
}

/**
 * An axis `filter` that labels every split: with `logSplits` the splits are
 * already as sparse as the labels need (uPlot's own filter of a horizontal log
 * axis labels only the powers of ten).
 */
export function keepSplits(_u, splits) {
  return splits;
}

/**
 * The y range of a loss chart that keeps a divergence spike from squashing the
 * curve (as the CLI's plot, clr.plots._y_limits): the top is the highest point
 * of the smoothed curve up to its minimum (about the start loss) times 1.5,
 * unless the data stay below that; the bottom is the lowest value; 5 % margins.
 * `smooth` is the smoothed loss, `others` more arrays whose values count (the raw
 * loss); only indices i0..i1 (the visible window) are read.
 */
export function lossRange(smooth, others = [], i0 = 0, i1 = null) {
  const ok = (v) => typeof v === 'number' && Number.isFinite(v);
  const end = Math.min(i1 === null ? Infinity : i1, smooth.length - 1);
  let lo = Infinity;
  let hi = -Infinity;
  for (const arr of [smooth, ...others]) {
    if (!arr) continue;
    for (let i = i0; i <= Math.min(end, arr.length - 1); i += 1) {
      if (!ok(arr[i])) continue;
      lo = Math.min(lo, arr[i]);
      hi = Math.max(hi, arr[i]);
    }
  }
  if (!Number.isFinite(lo)) return [0, 1];
  let iBest = -1;
  for (let i = i0; i <= end; i += 1) {
    if (ok(smooth[i]) && (iBest < 0 || smooth[i] < smooth[iBest])) iBest = i;
  }
  let headMax = 0;
  for (let i = i0; i <= iBest; i += 1) if (ok(smooth[i])) headMax = Math.max(headMax, Math.abs(smooth[i]));
  const cap = 1.5 * headMax;
  let top = cap > 0 ? Math.min(hi, cap) : hi;
  // a flat curve (every loss the same, up to rounding): a span of a few ulps makes
  // uPlot's tick search allocate without end (RangeError: Invalid array length)
  if (!(top - lo > Math.max(Math.abs(lo), Math.abs(top), 1e-12) * 1e-9)) {
    top = lo + Math.max(Math.abs(lo), 1) * 0.1;
  }
  const margin = 0.05 * (top - lo);
  return [lo - margin, top + margin];
}

/**
 * Shade x ranges behind the series: getRanges(u) -> [{from, to, fill}] in x values.
 */
export function shadePlugin(getRanges) {
  return {
    hooks: {
      drawClear: [(u) => {
        const {ctx} = u;
        const {top, height} = u.bbox;
        ctx.save();
        for (const r of getRanges(u) || []) {
          const x0 = u.valToPos(r.from, 'x', true);
          const x1 = u.valToPos(r.to, 'x', true);
          if (!Number.isFinite(x0) || !Number.isFinite(x1)) continue;
          ctx.fillStyle = r.fill || 'rgba(37, 99, 235, 0.12)';
          ctx.fillRect(Math.min(x0, x1), top, Math.abs(x1 - x0), height);
        }
        ctx.restore();
      }],
    },
  };
}

const LABEL_FONT_PX = 11;
const LABEL_ROW_PX = 15;
const LABEL_GAP_PX = 8;

/**
 * Place labels of vertical lines in rows so that none overlaps another: each
 * label sits right of its line (left when it would leave the plot), in the
 * first row where it clears the labels already there. `items` are
 * [{x (px), w (px)}] in any order; returns [{tx, row}] in the same order.
 */
export function stagger(items, left, right, gap = LABEL_GAP_PX) {
  const order = items.map((it, i) => [it, i]).sort((a, b) => a[0].x - b[0].x);
  const rowsEnd = [];
  const out = new Array(items.length);
  for (const [it, i] of order) {
    let tx = it.x + 4;
    if (tx + it.w > right) tx = it.x - 4 - it.w;
    if (tx < left) tx = left;
    let row = rowsEnd.findIndex((end) => end + gap <= tx);
    if (row < 0) {
      row = rowsEnd.length;
      rowsEnd.push(-Infinity);
    }
    rowsEnd[row] = tx + it.w;
    out[i] = {tx, row};
  }
  return out;
}

/**
 * Vertical marker lines with labels: getMarkers(u) -> [{x, color, label, dash, width, row, at}].
 * Labels without a `row` are staggered (see `stagger`) so they do not overlap:
 * from the top of the plot, or from its bottom with `at: 'bottom'`; each on a
 * light backdrop so it reads over the curves. The labels drawn are kept in the
 * chart root's `data-markers` (JSON), which tests and tools can read.
 */
export function markerPlugin(getMarkers) {
  return {
    hooks: {
      draw: [(u) => {
        const {ctx} = u;
        const {top, height, left, width} = u.bbox;
        const pr = uPlot.pxRatio;
        const markers = [];
        for (const m of getMarkers(u) || []) {
          const x = u.valToPos(m.x, 'x', true);
          if (!Number.isFinite(x) || x < left - 0.5 || x > left + width + 0.5) continue;
          markers.push({...m, px: x});
        }
        ctx.save();
        for (const m of markers) {
          ctx.strokeStyle = m.color || '#444';
          ctx.lineWidth = (m.width || 1.5) * pr;
          ctx.setLineDash((m.dash || [4, 3]).map((d) => d * pr));
          ctx.beginPath();
          ctx.moveTo(m.px, top);
          ctx.lineTo(m.px, top + height);
          ctx.stroke();
        }
        ctx.setLineDash([]);
        ctx.font = `${LABEL_FONT_PX * pr}px system-ui, sans-serif`;
        ctx.textBaseline = 'top';
        ctx.textAlign = 'left';
        const rowPx = LABEL_ROW_PX * pr;
        const drawn = [];
        for (const at of ['top', 'bottom']) {
          const labelled = markers.filter((m) => m.label && (m.at === 'bottom') === (at === 'bottom'));
          const widths = labelled.map((m) => ctx.measureText(m.label).width);
          const placed = stagger(labelled.map((m, i) => ({x: m.px, w: widths[i]})),
            left, left + width, LABEL_GAP_PX * pr);
          labelled.forEach((m, i) => {
            const w = widths[i];
            let {tx, row} = placed[i];
            if (m.row !== undefined) {
              row = m.row;
              tx = m.px + 3 * pr + w > left + width ? m.px - 3 * pr - w : m.px + 3 * pr;
            }
            const y = at === 'bottom'
              ? top + height - (row + 1) * rowPx
              : top + 3 * pr + row * rowPx;
            ctx.fillStyle = 'rgba(255, 255, 255, 0.85)';
            ctx.fillRect(tx - 2 * pr, y - 1 * pr, w + 4 * pr, (LABEL_FONT_PX + 2) * pr);
            ctx.fillStyle = m.color || '#444';
            ctx.fillText(m.label, tx, y);
            drawn.push(m.label);
          });
        }
        ctx.restore();
        u.root.dataset.markers = JSON.stringify(drawn);
      }],
    },
  };
}

/**
 * A uPlot chart that fills `container`'s width and follows its resizes.
 * `opts` are uPlot's options (width is set here); `data` its data.
 * Returns the uPlot instance; `chart.destroy()` also stops following resizes.
 */
export function makeChart(container, opts, data) {
  const width = Math.max(320, container.clientWidth || 800);
  const plot = new uPlot({...opts, width, height: opts.height || 320}, data, container);
  const observer = new ResizeObserver(() => {
    const w = Math.max(320, container.clientWidth);
    if (Math.abs(w - plot.width) > 1) plot.setSize({width: w, height: plot.height});
  });
  observer.observe(container);
  const destroy = plot.destroy.bind(plot);
  plot.destroy = () => {
    observer.disconnect();
    destroy();
  };
  return plot;
}

/**
 * Read a series for a chart: GET /jobs/{id}/series/{name} thinned to `maxPoints`.
 * Returns {index, values, points, nextAfter, attempt, status, thinned}: `index` is
 * each point's index (every point from `after` on when the API did not thin).
 */
export async function fetchSeries(api, jobId, name, {maxPoints, after = 0, limit, signal} = {}) {
  const read = await api.get(`/jobs/${jobId}/series/${name}`,
    {after, limit, max_points: maxPoints}, {signal});
  let index = read.index;
  if (!index) {
    const n = read.next_after - read.start;
    index = Array.from({length: n}, (_, i) => read.start + i);
  }
  return {
    index, values: read.values, points: read.points, nextAfter: read.next_after,
    attempt: read.attempt, status: read.status, thinned: Boolean(read.index),
  };
}

/** The chart's plot width in CSS pixels, times POINTS_PER_PIXEL: the points worth drawing. */
export function pointsFor(container) {
  return Math.max(200, Math.round((container.clientWidth || 800) * POINTS_PER_PIXEL));
}

/**
 * The user's zooms, told apart from the chart's own rescaling: `onZoom(min, max)`
 * after a drag selected an x range (uPlot has zoomed the scale to it already),
 * `onReset()` after a double click. `u.zoomed` says whether a zoom is in effect
 * (a page appending live points keeps the scale while it is).
 */
export function zoomHooks({onZoom, onReset}) {
  return {
    hooks: {
      init: [(u) => {
        u.zoomed = false;
        u.over.addEventListener('dblclick', () => {
          u.zoomed = false;
          onReset?.(u);
        });
      }],
      setSelect: [(u) => {
        const {left, width} = u.select;
        if (width < 2) return;
        const min = u.posToVal(left, 'x');
        const max = u.posToVal(left + width, 'x');
        u.zoomed = true;
        // after uPlot applied the zoom to the scale: it sets the scale after this hook
        // and commits it in a microtask queued after any queued here, so wait a task
        // (a microtask here saw the old scale: the note said "zoomed to" the whole range)
        setTimeout(() => onZoom?.(min, max, u), 0);
      }],
    },
  };
}

/**
 * Refetch on zoom. After the user zooms x to [min, max], `reload(after, limit)` is
 * called with the range of point indices that covers it (found in `indexOf(u)`,
 * the index array behind the chart's current data), to replace the data at a
 * resolution fitting the zoom; a reset (double click) calls `reload(0, null)`.
 * The page's setData after a reload does not count as a zoom (only a drag does).
 */
export function zoomable(reload, indexOf) {
  return zoomHooks({
    onZoom: (min, max, u) => {
      const xs = u.data[0];
      const index = indexOf(u);
      if (!xs.length || !index || !index.length) return;
      let lo = 0;
      while (lo < xs.length - 1 && xs[lo + 1] < min) lo += 1;
      let hi = xs.length - 1;
      while (hi > 0 && xs[hi - 1] > max) hi -= 1;
      const after = index[lo];
      reload(after, index[hi] - after + 1);
    },
    onReset: () => reload(0, null),
  });
}
