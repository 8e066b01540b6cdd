// Building the page without HTML strings: every text from the API goes through
// textContent or setAttribute, never innerHTML, so a workload name, a tag or an
// error text is shown as text and cannot become markup or script.

/**
 * An element: h('a', {href: '#/runs', class: 'x', onclick: fn}, 'text', child, [more]).
 * Attributes: `class`, `text`, `value`, `checked`, `disabled`, `hidden`, `selected`,
 * `on<event>` (a listener), `dataset` (an object), anything else by setAttribute.
 * Children: strings and numbers (as text), nodes, arrays; null, undefined and false skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (key === 'text') {
      el.textContent = String(value);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (['value', 'checked', 'disabled', 'hidden', 'selected', 'multiple'].includes(key)) {
      el[key] = value;
    } else if (key === 'style') {
      throw new Error('no inline style attribute (CSP): use a class or el.style');
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Append children (strings as text nodes, arrays flattened, nullish skipped). */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A definition list from [label, value] pairs (value: text or node). */
export function facts(pairs, attrs = {}) {
  return h('dl', {class: 'facts', ...attrs},
    pairs.filter(Boolean).map(([label, value]) => [h('dt', {}, label), h('dd', {}, value)]));
}

/** A message box: kind 'error' | 'warning' | 'info'. */
export function notice(kind, ...children) {
  return h('div', {class: ['notice', kind], role: kind === 'error' ? 'alert' : 'status'}, ...children);
}

/** A status badge. */
export function badge(status) {
  return h('span', {class: ['badge', `status-${status}`], 'data-testid': 'status'}, status);
}
