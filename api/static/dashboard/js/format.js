// Numbers, times and durations as the dashboard shows them.

/** A learning rate or other value to 3 significant digits (1.03e-5, 0.0258, 1.5). */
export function num(x, digits = 3) {
  if (x === null || x === undefined) return '–';
  if (typeof x !== 'number' || !Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1e-3 && a < 1e5) return String(Number(x.toPrecision(digits)));
  return x.toExponential(digits - 1).replace('e+', 'e');
}

/** A fraction as a percentage with one decimal. */
export function pct(x) {
  return x === null || x === undefined ? '–' : `${(100 * x).toFixed(1)}%`;
}

/** Seconds as "850 ms", "12.3 s", "4 min 05 s", "2 h 03 min". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '–';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${String(Math.floor(seconds % 60)).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

/** How long ago an ISO time was: "just now", "5 min ago", "3 h ago", "2 d ago". */
export function age(iso, now = Date.now()) {
  if (!iso) return '–';
  const s = (now - Date.parse(iso)) / 1000;
  if (s < 45) return 'just now';
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** An ISO time in the browser's locale (for a title attribute). */
export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : '–';
}

/** A job's running time: finished - started, or now - started while it runs. */
export function jobSeconds(job, now = Date.now()) {
  if (!job.started_at) return null;
  const end = job.finished_at ? Date.parse(job.finished_at) : now;
  return (end - Date.parse(job.started_at)) / 1000;
}

/** The first 8 characters of a job id. */
export function shortId(id) {
  return id ? String(id).slice(0, 8) : '–';
}

export const FINAL = new Set(['succeeded', 'failed', 'cancelled']);

/** Where a job's page is. */
export function jobHref(job) {
  const noun = {range_test: 'range-tests', training: 'trainings', sweep: 'sweeps'}[job.kind];
  return noun ? `#/${noun}/${job.id}` : '#/runs';
}

/** What a job runs: its workload, or the model a team's own loop named. */
export function jobSubject(job) {
  const spec = job.spec || {};
  if (spec.workload) return spec.workload;
  if (spec.model) return `${spec.model}${spec.dataset ? ` / ${spec.dataset}` : ''}`;
  return '–';
}

/**
 * What a page's live tag says about its event stream: `state` is api.stream's
 * onState ('live' | 'reconnecting'), `err` the refusal that made it reconnect
 * (a 429 of the team's stream cap, a 503, the service unreachable), so the page
 * says why it is not live instead of only spinning; it retries on its own.
 */
export function liveText(state, err) {
  if (state === 'live') return '\u25CF live';
  if (!err) return '\u25CB reconnecting\u2026';
  return `\u25CB not live (retrying): ${err.message}`;
}

/**
 * Show a stream's state in a page's live tag `el`: 'live' and 'reconnecting' (as
 * liveText says them), 'failed' (the stream was refused for good: `err` says why)
 * or 'ended' (the job finished: the tag empties).
 */
export function showLive(el, state, err = null) {
  el.className = state === 'live' ? 'live' : 'live off';
  if (state === 'ended') el.textContent = '';
  else if (state === 'failed') el.textContent = `not live: ${err ? err.message : ''}`;
  else el.textContent = liveText(state, err);
}
