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

/** Ticks of a log axis as 1e-4, 0.001, 0.01, 0.1, 1, 10. */
export function logTicks(_u, splits) {
  return splits.map((v) => (v === null ? '' : num(v, 2)));
}

/** Ticks as plain numbers. */
export function numTicks(_u, splits) {
  return splits.map((v) => (v === null ? '' : num(v, 3)));
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

/**
 * Vertical marker lines with labels: getMarkers(u) -> [{x, color, label, dash, row}]
 * (`row` staggers labels that would overlap: 0, 1, 2 … from the top).
 */
export function markerPlugin(getMarkers) {
  return {
    hooks: {
      draw: [(u) => {
        const {ctx} = u;
        const {top, height, left, width} = u.bbox;
        const pr = uPlot.pxRatio;
        ctx.save();
        ctx.font = `${11 * pr}px system-ui, sans-serif`;
        ctx.textBaseline = 'top';
        for (const m of getMarkers(u) || []) {
          const x = u.valToPos(m.x, 'x', true);
          if (!Number.isFinite(x) || x < left || x > left + width) continue;
          ctx.strokeStyle = m.color || '#444';
          ctx.lineWidth = (m.width || 1.5) * pr;
          ctx.setLineDash((m.dash || [4, 3]).map((d) => d * pr));
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
          if (m.label) {
            ctx.fillStyle = m.color || '#444';
            const y = top + 2 * pr + (m.row || 0) * 13 * pr;
            const w = ctx.measureText(m.label).width;
            const tx = x + 3 * pr + w > left + width ? x - 3 * pr - w : x + 3 * pr;
            ctx.fillText(m.label, tx, y);
          }
        }
        ctx.restore();
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
 * Refetch on zoom. After the user zooms x to [min, max], `reload(after, limit)` is
 * called with the range of point indices that covers it (found in `indexOf(u)`,
 * the index array behind the chart's current data), to replace the data at a
 * resolution fitting the zoom; a reset (double click) calls `reload(0, null)`.
 */
export function zoomable(reload, indexOf) {
  let timer = null;
  return {
    hooks: {
      setScale: [(u, key) => {
        if (key !== 'x' || u._refetching) return;
        clearTimeout(timer);
        timer = setTimeout(() => {
          const xs = u.data[0];
          const index = indexOf(u);
          if (!xs.length || !index || !index.length) return;
          const {min, max} = u.scales.x;
          const full = min <= xs[0] && max >= xs[xs.length - 1];
          if (full) {
            reload(0, null);
            return;
          }
          let lo = 0;
          while (lo < xs.length - 1 && xs[lo + 1] < min) lo++;
          let hi = xs.length - 1;
          while (hi > 0 && xs[hi - 1] > max) hi--;
          const after = index[lo];
          reload(after, index[hi] - after + 1);
        }, 150);
      }],
    },
  };
}
