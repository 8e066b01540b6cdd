// The dashboard's shell: hash routes, sign-in state, the page being shown.
//
// Routes (after '#'): /runs, /range-tests/<id>, /trainings/<id>, /sweeps/<id>,
// /overlay?ids=<id>,<id>, /submit/<range-tests|trainings|sweeps>, /signin.
// Each page is a module in pages/ exporting render(root, params, ctx), which may
// return a cleanup function (called when the user leaves the page: it stops
// the page's streams and timers).

import {api, clearToken, getToken} from './api.js';
import {h, replace, notice} from './dom.js';

const ID = '([0-9a-fA-F-]{36})';
const ROUTES = [
  [/^\/?$/, 'runs'],
  [/^\/runs$/, 'runs'],
  [new RegExp(`^/range-tests/${ID}$`), 'rangetest'],
  [new RegExp(`^/trainings/${ID}$`), 'training'],
  [new RegExp(`^/sweeps/${ID}$`), 'sweep'],
  [/^\/overlay$/, 'overlay'],
  [/^\/submit\/(range-tests|trainings|sweeps)$/, 'submit'],
  [/^\/signin$/, 'signin'],
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const signOut = document.getElementById('sign-out');
const flashBox = document.getElementById('flash');
let cleanup = null;
let generation = 0;

/** Show a short message above the page (kind: info | error). */
function flash(message, kind = 'info') {
  flashBox.className = `flash ${kind}`;
  replace(flashBox, message);
  flashBox.hidden = !message;
}

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function parse() {
  const raw = location.hash.replace(/^#/, '') || '/runs';
  const [path, search] = raw.split('?', 2);
  return {path, query: new URLSearchParams(search || '')};
}

async function route() {
  const mine = ++generation;
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.warn('cleanup failed', err);
    }
    cleanup = null;
  }
  const {path, query} = parse();
  const signedIn = Boolean(getToken());
  nav.hidden = !signedIn;
  signOut.hidden = !signedIn;
  let name = null;
  let match = null;
  for (const [pattern, page] of ROUTES) {
    match = pattern.exec(path);
    if (match) {
      name = page;
      break;
    }
  }
  if (!signedIn && name !== 'signin') {
    const next = location.hash && location.hash !== '#/signin' ? location.hash : '#/runs';
    sessionStorage.setItem('clr-sweep.next', next);
    navigate('#/signin');
    return;
  }
  if (name === null) {
    replace(main, notice('error', `No page at ${path}. `, h('a', {href: '#/runs'}, 'See the runs.')));
    return;
  }
  for (const link of nav.querySelectorAll('a')) {
    link.classList.toggle('active', link.getAttribute('href') === `#${path}`);
  }
  replace(main, h('p', {class: 'loading'}, 'Loading…'));
  try {
    const page = await import(`./pages/${name}.js`);
    if (mine !== generation) return;
    main.replaceChildren();
    const ctx = {api, navigate, flash, query, match, isCurrent: () => mine === generation};
    const done = await page.render(main, {match, query}, ctx);
    if (mine !== generation) {
      if (typeof done === 'function') done();
      return;
    }
    cleanup = typeof done === 'function' ? done : null;
  } catch (err) {
    if (mine !== generation || err.name === 'AbortError') return;
    console.warn(err);
    if (err.status === 401) return; // the unauthorized handler took over
    if (err.status === undefined && err instanceof TypeError) {
      // the page's module could not be fetched (the service is down or restarting)
      replace(main, notice('error', h('strong', {}, 'This page could not be loaded: '),
        'cannot reach the service. ',
        h('button', {type: 'button', class: 'retry', 'data-testid': 'retry', onclick: route}, 'Try again')));
      return;
    }
    const retry = err.status === 0 || err.status === 503 || err.status === 502 || err.status === 429;
    replace(main, notice('error', h('strong', {}, 'This page could not be shown: '), err.message,
      err.status === 404 ? [' ', h('a', {href: '#/runs'}, 'Back to the runs.')] : null,
      retry ? [' ', h('button', {type: 'button', class: 'retry', 'data-testid': 'retry', onclick: route}, 'Try again')]
        : null));
  }
}

signOut.addEventListener('click', () => {
  clearToken();
  flash('Signed out: this browser tab no longer holds the token.');
  navigate('#/signin');
});

window.addEventListener('clr:unauthorized', (e) => {
  if (!getToken()) return;
  clearToken();
  flash(`The service refused the token (${e.detail.message}). Sign in again.`, 'error');
  navigate('#/signin');
});

window.addEventListener('hashchange', () => {
  if (parse().path !== '/signin') flash('');
  route();
});
route();
