// Sign in with a team token. It is checked against the API (GET /jobs?limit=1,
// the token in that request's Authorization header only) before it is kept, in
// sessionStorage only. A token the service refuses is never stored, so a wrong
// paste does not sign anyone out or leave a bad token behind.

import {ApiError, clearToken, setToken} from '../api.js';
import {h, replace} from '../dom.js';

export async function render(root, _params, ctx) {
  const input = h('input', {
    id: 'token', type: 'password', name: 'token', autocomplete: 'off', required: true,
    placeholder: 'clr_…', spellcheck: 'false', 'data-testid': 'token-input', 'aria-describedby': 'token-help',
  });
  const message = h('div', {'data-testid': 'sign-in-error', class: 'field-error', 'aria-live': 'polite'});
  const button = h('button', {type: 'submit', class: 'primary', 'data-testid': 'sign-in'}, 'Sign in');
  const form = h('form', {class: 'card signin', novalidate: true},
    h('h1', {}, 'Sign in'),
    h('label', {for: 'token'}, 'Team token'),
    input,
    h('p', {id: 'token-help', class: 'help'},
      'An API token of your team (', h('code', {}, 'clr-sweep login'), ' writes one to your config; ',
      h('code', {}, 'clr-sweep serve'), ' prints the embedded service\u2019s). It is kept in this browser tab ',
      'only, sent only as an Authorization header, and forgotten when you sign out or close the tab.'),
    message,
    button);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    replace(message);
    input.removeAttribute('aria-invalid');
    if (!token) {
      replace(message, 'Paste a token first.');
      input.focus();
      return;
    }
    button.disabled = true;
    // signing in again replaces the tab's token, whatever the check says
    clearToken();
    try {
      await ctx.api.get('/jobs', {limit: 1}, {headers: {Authorization: `Bearer ${token}`}});
      setToken(token);
      const next = sessionStorage.getItem('clr-sweep.next') || '#/runs';
      sessionStorage.removeItem('clr-sweep.next');
      ctx.flash('');
      ctx.navigate(next);
    } catch (err) {
      if (!form.isConnected) return;
      const why = err instanceof ApiError && err.status === 401
        ? `The service refused this token: ${err.message}.`
        : `Could not check the token: ${err.message}.`;
      replace(message, why);
      input.setAttribute('aria-invalid', 'true');
      input.select();
    } finally {
      button.disabled = false;
    }
  });
  replace(root, form);
  if (!form.isConnected) return;
  input.focus();
  return null;
}
