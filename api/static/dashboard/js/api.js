// The API client: fetch with the team token in the Authorization header.
//
// The token lives in sessionStorage (this browser tab's session; signing out or
// closing the tab forgets it) and goes only into the Authorization header, never
// into a URL: URLs land in access logs and browser history. Live updates use the
// API's Server-Sent Events read through fetch() for the same reason: an
// EventSource cannot send an Authorization header.

const TOKEN_KEY = 'clr-sweep.token';

/** An answer other than 2xx: `status` (0: unreachable) and the API's problem document. */
export class ApiError extends Error {
  constructor(status, problem, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.problem = problem;
  }

  /** The field errors: [{field, reason}] (the API names each rejected input). */
  get fieldErrors() {
    return (this.problem && Array.isArray(this.problem.errors)) ? this.problem.errors : [];
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The URL of an API path, relative to the page (so it works behind a path prefix). */
export function apiUrl(path, query) {
  const url = new URL(path.replace(/^\//, ''), document.baseURI);
  for (const [key, value] of Object.entries(query || {})) {
    if (value === null || value === undefined || value === '') continue;
    for (const v of Array.isArray(value) ? value : [value]) url.searchParams.append(key, String(v));
  }
  return url;
}

function describe(status, problem, fallback) {
  if (problem && typeof problem === 'object') {
    const detail = problem.detail || problem.title;
    if (detail) return String(detail);
  }
  return fallback || `HTTP ${status}`;
}

async function request(method, path, {query, body, headers, signal, accept} = {}) {
  const h = {Accept: accept || 'application/json', ...(headers || {})};
  const token = getToken();
  if (token) h.Authorization = `Bearer ${token}`;
  const init = {method, headers: h, signal, credentials: 'omit', cache: 'no-store'};
  if (body !== undefined) {
    h['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(apiUrl(path, query), init);
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, null, `cannot reach the service (${err.message})`);
  }
  if (!response.ok) {
    let problem = null;
    try {
      problem = await response.json();
    } catch {
      problem = null;
    }
    const error = new ApiError(response.status, problem,
      describe(response.status, problem, response.statusText));
    error.retryAfter = Number(response.headers.get('Retry-After')) || null;
    if (response.status === 401) window.dispatchEvent(new CustomEvent('clr:unauthorized', {detail: error}));
    throw error;
  }
  return response;
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(new DOMException('aborted', 'AbortError'));
    }, {once: true});
  });
}

/**
 * Follow a job's Server-Sent Events through fetch(), resuming with Last-Event-ID
 * after a dropped connection, until the `end` event or `signal` aborts. Start
 * after `lastEventId` (`<attempt>:<points of each series>`) when the page has
 * read those points already.
 * `onEvent(name, data, id)` gets each event with its data parsed from JSON.
 * Resolves when the stream ended (`end`), rejects with the ApiError of a refusal
 * other than 429/503 (those are retried after their Retry-After).
 */
async function stream(path, {onEvent, signal, onState, lastEventId} = {}) {
  let lastId = lastEventId || null;
  let delay = 500;
  for (;;) {
    const headers = {};
    if (lastId) headers['Last-Event-ID'] = lastId;
    let response;
    try {
      response = await request('GET', path, {headers, signal, accept: 'text/event-stream'});
    } catch (err) {
      if (err.name === 'AbortError') return;
      if (err.status === 0 || err.status === 429 || err.status === 503 || err.status === 502) {
        onState?.('reconnecting', err);
        await sleep(err.retryAfter ? err.retryAfter * 1000 : delay, signal).catch(() => null);
        if (signal?.aborted) return;
        delay = Math.min(delay * 2, 10000);
        continue;
      }
      throw err;
    }
    onState?.('live');
    delay = 500;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let event = {name: '', data: [], id: null};
    let ended = false;
    try {
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += value;
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === '') {
            if (event.data.length) {
              const text = event.data.join('\n');
              let data = text;
              try {
                data = JSON.parse(text);
              } catch {
                data = text;
              }
              if (event.id !== null) lastId = event.id;
              const name = event.name || 'message';
              onEvent?.(name, data, event.id);
              if (name === 'end') ended = true;
            }
            event = {name: '', data: [], id: null};
            continue;
          }
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? '' : line.slice(colon + 1);
          if (val.startsWith(' ')) val = val.slice(1);
          if (field === 'event') event.name = val;
          else if (field === 'data') event.data.push(val);
          else if (field === 'id') event.id = val;
        }
        if (ended) break;
      }
    } catch (err) {
      if (err.name === 'AbortError' || signal?.aborted) return;
    } finally {
      reader.cancel().catch(() => null);
    }
    if (ended || signal?.aborted) return;
    onState?.('reconnecting');
    await sleep(delay, signal).catch(() => null);
    if (signal?.aborted) return;
  }
}

export const api = {
  /** GET a JSON document. */
  async get(path, query, opts = {}) {
    return (await request('GET', path, {query, ...opts})).json();
  },
  /** POST a JSON body; the JSON answer. */
  async post(path, body, opts = {}) {
    const response = await request('POST', path, {body, ...opts});
    return response.status === 204 ? null : response.json();
  },
  /** GET a file as a Blob (a plot, a model) with its file name from Content-Disposition. */
  async blob(path, query, opts = {}) {
    const response = await request('GET', path, {query, accept: '*/*', ...opts});
    const disposition = response.headers.get('Content-Disposition') || '';
    const match = /filename="?([^";]+)"?/.exec(disposition);
    return {blob: await response.blob(), filename: match ? match[1] : null};
  },
  stream,
};
