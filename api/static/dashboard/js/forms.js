// A form built from a JSON schema (the API's OpenAPI components, a workload's
// parameters), so the dashboard's forms follow the API without a copy of it.
//
// Each property becomes one input by its schema: an enum a select, a boolean a
// checkbox, an integer or number a number input, a string a text input, an
// object with properties a fieldset, a list of scalars a comma-separated input
// (a list of enum values: one checkbox each), `anyOf [X, null]` an optional X,
// and anything else (a union, a list of objects, a free-form map) a JSON text
// area. Only what the user filled in is read back: an empty input is left out of
// the body, so the API applies its own default (shown as the placeholder).
//
// The browser's own constraint checks are not used (the form is `novalidate`):
// minimum, maximum and required only guide the user; the API judges the values
// and its field errors (`[{field: "optimizer.momentum", reason}]`) are shown
// next to the inputs by `showErrors`.
//
// Test hooks: each input has data-testid="field-<path>" (a fieldset: the
// fieldset), each error slot data-testid="error-<path>".

import {h, replace} from './dom.js';

let uid = 0;

/** The schema a `{$ref: '#/components/schemas/X'}` names, followed until no $ref is left. */
export function resolve(schema, root) {
  let s = schema || {};
  for (let hops = 0; s.$ref && hops < 32; hops++) {
    const path = s.$ref.replace(/^#\//, '').split('/');
    let target = root;
    for (const part of path) target = target ? target[decodeURIComponent(part)] : undefined;
    if (!target) throw new Error(`the schema refers to ${s.$ref}, which the document lacks`);
    const {$ref: _ref, ...rest} = s;
    s = {...target, ...rest};
  }
  return s;
}

/**
 * The JSON body schema of `POST path` in an OpenAPI document. When the body is a
 * union (`oneOf`/`anyOf`), the variant `pick(variant)` accepts (default: the first).
 */
export function requestBodySchema(openapi, path, pick = () => true) {
  const operation = openapi.paths?.[path]?.post;
  const content = operation?.requestBody?.content?.['application/json'];
  if (!content) throw new Error(`the API documents no JSON body for POST ${path}`);
  const body = resolve(content.schema, openapi);
  const variants = body.oneOf || body.anyOf;
  if (!variants) return body;
  const resolved = variants.map((v) => resolve(v, openapi));
  const chosen = resolved.find(pick);
  if (!chosen) throw new Error(`no variant of the body of POST ${path} fits this form`);
  return chosen;
}

const WORDS = {lr: 'LR', num: 'number of', iter: 'iterations', th: 'threshold', pct: 'fraction', div: 'division'};

/** A field's label from its name: `num_iter` -> "Number of iterations", `start_lr` -> "Start LR". */
export function humanize(name) {
  const words = String(name).split('_').filter(Boolean).map((w) => WORDS[w] || w);
  if (!words.length) return String(name);
  const [first, ...rest] = words;
  return [first.charAt(0).toUpperCase() + first.slice(1), ...rest].join(' ');
}

/** The field's name in the API next to its label, unless the label just spells it out. */
function apiName(label, name) {
  const spelled = String(label).toLowerCase().replace(/\s+/g, '_');
  return spelled === String(name).toLowerCase() ? null : h('code', {class: 'sf-name'}, name);
}

/** A docstring's first sentence and the rest ('' when it is one sentence). */
function firstSentence(text) {
  const m = /^([\s\S]+?[.!?])\s+(?=[A-Z`(:])/.exec(text);
  return m ? [m[1], text.slice(m[0].length)] : [text, ''];
}

/**
 * Per-field help from a model's docstring (``Attributes:`` with ``name: text``
 * lines, as the API's models have): {name: text}.
 */
export function attributeDocs(description) {
  const docs = {};
  if (!description) return docs;
  const lines = description.split('\n');
  const start = lines.findIndex((l) => /^\s*Attributes:\s*$/.test(l));
  if (start < 0) return docs;
  let current = null;
  let indent = null;
  for (const line of lines.slice(start + 1)) {
    if (!line.trim()) {
      current = null;
      continue;
    }
    const depth = line.length - line.trimStart().length;
    const m = /^\s*([A-Za-z_][\w]*(?:\s*,\s*[A-Za-z_][\w]*)*)\s*:\s*(.*)$/.exec(line);
    if (m && (indent === null || depth <= indent)) {
      indent = depth;
      current = m[1].split(',').map((n) => n.trim());
      for (const n of current) docs[n] = m[2];
    } else if (current && indent !== null && depth > indent) {
      for (const n of current) docs[n] = `${docs[n]} ${line.trim()}`;
    } else {
      break;
    }
  }
  return docs;
}

/** The part of a model's docstring before its ``Attributes:`` / ``Args:`` sections. */
function summary(description) {
  if (!description) return '';
  return description.split(/\n\s*(?:Attributes|Args|Example|Examples):\s*\n/)[0].trim();
}

/**
 * Docstring text as nodes: ``code`` and `code` as <code>, Sphinx roles
 * (:class:`X`, :func:`Y`) as their target, paragraphs kept.
 */
export function richText(text) {
  const cleaned = String(text || '').replace(/:[a-z]+:`~?([^`]+)`/g, '``$1``');
  const nodes = [];
  const re = /``([^`]+)``|`([^`]+)`/g;
  let last = 0;
  for (let m = re.exec(cleaned); m; m = re.exec(cleaned)) {
    if (m.index > last) nodes.push(cleaned.slice(last, m.index));
    nodes.push(h('code', {}, m[1] || m[2]));
    last = m.index + m[0].length;
  }
  if (last < cleaned.length) nodes.push(cleaned.slice(last));
  return nodes.map((n) => (typeof n === 'string' ? n.replace(/\s*\n\s*/g, ' ') : n));
}

function nonNull(schema) {
  const options = schema.anyOf || schema.oneOf;
  if (!options) return {schema, nullable: schema.type === 'null'};
  const rest = options.filter((o) => o.type !== 'null');
  if (rest.length === 1 && rest.length < options.length) {
    const {anyOf: _a, oneOf: _o, ...outer} = schema;
    return {schema: {...rest[0], ...outer}, nullable: true};
  }
  return {schema, nullable: false};
}

function scalarType(schema) {
  if (schema.enum) return 'enum';
  if (['string', 'integer', 'number', 'boolean'].includes(schema.type)) return schema.type;
  return null;
}

/** "an integer from 2 to 100000", "a number > 0 and ≤ 10", for the help line. */
function constraint(schema, type) {
  const parts = [];
  if (schema.minimum !== undefined) parts.push(`≥ ${schema.minimum}`);
  if (schema.exclusiveMinimum !== undefined) parts.push(`> ${schema.exclusiveMinimum}`);
  if (schema.maximum !== undefined) parts.push(`≤ ${schema.maximum}`);
  if (schema.exclusiveMaximum !== undefined) parts.push(`< ${schema.exclusiveMaximum}`);
  const noun = type === 'integer' ? 'an integer' : 'a number';
  if (schema.minimum !== undefined && schema.maximum !== undefined) {
    return `${noun} from ${schema.minimum} to ${schema.maximum}`;
  }
  return parts.length ? `${noun} ${parts.join(' and ')}` : '';
}

const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i;

/** A comma-separated item as the type the list holds (text the API will refuse stays text). */
function listItem(text, itemSchema) {
  const type = itemSchema && itemSchema.type;
  if ((type === 'integer' || type === 'number') && NUMBER.test(text)) return Number(text);
  if (type === 'boolean' && (text === 'true' || text === 'false')) return text === 'true';
  return text;
}

function display(value) {
  if (value === undefined) return '';
  if (Array.isArray(value)) return value.map((v) => (typeof v === 'object' ? JSON.stringify(v) : String(v))).join(', ');
  if (value !== null && typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/**
 * A form for an object schema.
 *
 * options:
 * - `root`: the OpenAPI document the $refs point into.
 * - `common`: paths shown at once, in this order; the others go under "More
 *   settings" (an object path listed alone shows all of its fields; a field
 *   listed shows its object too).
 * - `skip`: paths not rendered at all (read-only ones, those the page renders itself).
 * - `override(path, schema)`: a replacement schema for a path (a workload's params), or undefined.
 * - `title(path, name, schema)`: a label, or undefined for the default.
 *
 * Returns {element, field(path), read(), replace(path, schema), showErrors(errors), clearErrors(), set(path, text)}.
 */
export function schemaForm(schema, options = {}) {
  const opts = {root: {}, common: [], skip: [], override: () => undefined, title: () => undefined, ...options};
  const common = new Set(opts.common);
  const skip = new Set(opts.skip);
  const fields = new Map();

  // a field is shown at once when it is listed, holds a listed field, or sits
  // in an object listed without any of its own fields
  function isCommon(path) {
    if (common.has(path)) return true;
    for (const c of common) if (c.startsWith(`${path}.`)) return true;
    const parts = path.split('.');
    for (let i = parts.length - 1; i > 0; i--) {
      const ancestor = parts.slice(0, i).join('.');
      if (common.has(ancestor)) {
        return ![...common].some((c) => c.startsWith(`${ancestor}.`));
      }
    }
    return false;
  }

  function shell(path, label, required, help, input, testid) {
    const id = `f${++uid}`;
    const helpId = `${id}-help`;
    const errorId = `${id}-error`;
    input.id = id;
    input.setAttribute('data-testid', testid || `field-${path}`);
    input.setAttribute('aria-describedby', `${helpId} ${errorId}`);
    if (required) input.setAttribute('aria-required', 'true');
    const error = h('div', {id: errorId, class: 'sf-error', 'data-testid': `error-${path}`, hidden: true});
    const labelEl = h('label', {id: `${id}-label`, for: id, class: 'sf-label', title: `${path} in the request`},
      label, required ? h('span', {class: 'sf-required', title: 'required'}, ' *') : null,
      apiName(label, path.split('.').pop()));
    const helpEl = h('div', {id: helpId, class: 'sf-help'}, help);
    return {element: h('div', {class: 'sf-field', dataset: {path}}, labelEl, input, helpEl, error), error, label};
  }

  function helpLine(schema, doc, type) {
    const bits = [];
    const text = schema.description || doc;
    if (text) bits.push(...richText(text));
    const range = type === 'integer' || type === 'number' ? constraint(schema, type) : '';
    if (range) bits.push(bits.length ? ` (${range})` : `${range.charAt(0).toUpperCase()}${range.slice(1)}`);
    return bits;
  }

  function scalarField(path, name, schema, {required, nullable, doc}) {
    const type = scalarType(schema);
    const label = opts.title(path, name, schema) || humanize(name);
    const help = helpLine(schema, doc, type);
    const hasDefault = schema.default !== undefined && schema.default !== null;
    let input;
    let read;
    let set;
    if (type === 'enum' || (type === 'boolean' && (nullable || !hasDefault))) {
      const values = type === 'enum' ? schema.enum : [true, false];
      const empty = required && !nullable ? null
        : h('option', {value: ''}, hasDefault ? `default (${display(schema.default)})` : '–');
      input = h('select', {name: path},
        empty, values.map((v) => h('option', {value: display(v)}, display(v))));
      read = () => {
        const i = values.findIndex((v) => display(v) === input.value);
        return i < 0 ? {set: false} : {set: true, value: values[i]};
      };
      set = (text) => {
        if (values.some((v) => display(v) === text)) input.value = text;
      };
    } else if (type === 'boolean') {
      // a checkbox starts at the default and is sent only when it differs from it
      input = h('input', {type: 'checkbox', name: path, checked: schema.default === true});
      read = () => (input.checked === (schema.default === true) ? {set: false} : {set: true, value: input.checked});
      set = (text) => {
        input.checked = text === 'true' || text === '1' || text === 'on';
      };
      const f = shell(path, label, required, help, input);
      f.element.classList.add('sf-check');
      return {path, kind: 'scalar', element: f.element, input, error: f.error, label: f.label, read, set};
    } else if (type === 'integer' || type === 'number') {
      input = h('input', {
        type: 'number', name: path, inputmode: type === 'integer' ? 'numeric' : 'decimal',
        step: type === 'integer' ? '1' : 'any',
        min: schema.minimum ?? schema.exclusiveMinimum, max: schema.maximum ?? schema.exclusiveMaximum,
        placeholder: hasDefault ? display(schema.default) : '',
      });
      read = () => {
        if (input.validity.badInput) return {set: false, error: 'not a number'};
        const raw = input.value.trim();
        return raw === '' ? {set: false} : {set: true, value: Number(raw)};
      };
      set = (text) => {
        input.value = text;
      };
    } else {
      input = h('input', {
        type: 'text', name: path, autocomplete: 'off', spellcheck: 'false',
        placeholder: hasDefault ? display(schema.default) : (schema.format === 'uuid' ? 'a job id' : ''),
      });
      read = () => {
        const raw = input.value.trim();
        return raw === '' ? {set: false} : {set: true, value: raw};
      };
      set = (text) => {
        input.value = text;
      };
    }
    const f = shell(path, label, required, help, input);
    return {path, kind: 'scalar', element: f.element, input, error: f.error, label: f.label, read, set};
  }

  function enumListField(path, name, schema, {required, doc}) {
    const values = schema.items.enum;
    const label = opts.title(path, name, schema) || humanize(name);
    const boxes = values.map((v) => h('input', {
      type: 'checkbox', name: path, value: display(v), 'data-testid': `field-${path}-${display(v)}`,
      checked: Array.isArray(schema.default) && schema.default.includes(v),
    }));
    const group = h('div', {class: 'sf-choices', role: 'group', tabindex: '-1', 'aria-labelledby': 'pending'},
      boxes.map((box, i) => h('label', {class: 'sf-choice'}, box, display(values[i]))));
    const help = [...helpLine(schema, doc, null)];
    if (schema.default === undefined) help.push(help.length ? ' ' : '', 'None ticked: the service\u2019s default.');
    const f = shell(path, label, required, help, group);
    group.setAttribute('aria-labelledby', `${group.id}-label`);
    f.element.classList.add('sf-span2');
    const initial = () => boxes.map((b) => b.defaultChecked);
    const read = () => {
      const picked = values.filter((_v, i) => boxes[i].checked);
      const unchanged = boxes.every((b, i) => b.checked === initial()[i]);
      return unchanged ? {set: false} : {set: true, value: picked};
    };
    const set = (text) => {
      const wanted = new Set(text.split(',').map((t) => t.trim()));
      boxes.forEach((b, i) => {
        b.checked = wanted.has(display(values[i]));
      });
    };
    return {path, kind: 'scalar', element: f.element, input: group, focusTarget: boxes[0], error: f.error,
      label: f.label, read, set};
  }

  function listField(path, name, schema, {required, doc}) {
    const items = schema.prefixItems || null;
    const label = opts.title(path, name, schema) || humanize(name);
    const input = h('input', {
      type: 'text', name: path, autocomplete: 'off', spellcheck: 'false',
      placeholder: schema.default !== undefined ? display(schema.default) : 'comma-separated',
    });
    const itemType = items ? items[0].type : schema.items?.type;
    const bits = [...helpLine(schema, doc, null)];
    bits.push(bits.length ? ' ' : '', `A comma-separated list${itemType ? ` of ${itemType === 'integer' ? 'integers' : `${itemType}s`}` : ''}`,
      schema.minItems !== undefined && schema.minItems === schema.maxItems ? ` (${schema.minItems} values)` : '', '.');
    const f = shell(path, label, required, bits, input);
    const read = () => {
      const raw = input.value.trim();
      if (raw === '') return {set: false};
      const parts = raw.split(',').map((p) => p.trim()).filter((p) => p !== '');
      return {set: true, value: parts.map((p, i) => listItem(p, items ? items[i] || items[0] : schema.items))};
    };
    const set = (text) => {
      input.value = text;
    };
    return {path, kind: 'scalar', element: f.element, input, error: f.error, label: f.label, read, set};
  }

  function jsonField(path, name, schema, {required, doc}) {
    const label = opts.title(path, name, schema) || humanize(name);
    const input = h('textarea', {
      name: path, rows: 3, spellcheck: 'false', class: 'sf-json',
      placeholder: schema.default !== undefined ? JSON.stringify(schema.default) : example(schema),
    });
    const bits = [...helpLine(schema, doc, null)];
    bits.push(bits.length ? ' ' : '', 'As JSON.');
    const f = shell(path, label, required, bits, input);
    const read = () => {
      const raw = input.value.trim();
      if (raw === '') return {set: false};
      try {
        return {set: true, value: JSON.parse(raw)};
      } catch (err) {
        return {set: false, error: `not valid JSON (${err.message})`};
      }
    };
    const set = (text) => {
      input.value = text;
    };
    return {path, kind: 'scalar', element: f.element, input, error: f.error, label: f.label, read, set};
  }

  // a JSON placeholder: a list of objects as one object with its first field's default
  function example(schema) {
    const item = schema.type === 'array' && schema.items ? resolve(schema.items, opts.root) : null;
    const [name, prop] = Object.entries((item && item.properties) || {})[0] || [];
    if (!name) return 'JSON';
    const value = prop.default !== undefined ? prop.default : (prop.enum ? prop.enum[0] : null);
    return `e.g. ${JSON.stringify([{[name]: value}])}`;
  }

  function objectField(path, name, schema, {required, doc, legend}) {
    const props = schema.properties || {};
    const requiredSet = new Set(schema.required || []);
    const docs = attributeDocs(schema.description);
    const children = [];
    const shown = [];
    const more = [];
    for (const [key, raw] of Object.entries(props)) {
      const childPath = path ? `${path}.${key}` : key;
      if (skip.has(childPath)) continue;
      const child = build(childPath, key, raw, {required: requiredSet.has(key), doc: docs[key]});
      if (!child) continue;
      children.push(child);
      // inside a group that is itself under "More settings", everything shows
      const split = path === '' || isCommon(path);
      (!split || isCommon(childPath) || requiredSet.has(key) ? shown : more).push(child);
    }
    const error = h('div', {class: 'sf-error', 'data-testid': path ? `error-${path}` : null, hidden: true});
    const title = legend || opts.title(path, name, schema) || humanize(name);
    const intro = summary(schema.description) || doc;
    // the shown fields in the order of `common`; runs of inputs share a grid row
    const rank = (p) => {
      const i = opts.common.findIndex((c) => c === p || c.startsWith(`${p}.`));
      return i < 0 ? opts.common.length : i;
    };
    shown.sort((a, b) => rank(a.path) - rank(b.path));
    const layout = (list) => {
      const out = [];
      let run = null;
      for (const c of list) {
        if (c.kind === 'object') {
          run = null;
          out.push(c.element);
        } else {
          if (!run) out.push(run = h('div', {class: 'sf-grid'}));
          run.append(c.element);
        }
      }
      return out;
    };
    const moreBox = more.length
      ? h('details', {class: 'sf-more', 'data-testid': path ? `more-${path}` : 'more-settings'},
        h('summary', {}, path ? `More ${title.toLowerCase()} settings` : 'More settings',
          h('span', {class: 'sf-count'}, ` (${more.length})`)),
        layout(more))
      : null;
    const body = [layout(shown), moreBox];
    let element;
    if (path === '') {
      element = h('div', {class: 'sf-root'}, error, body);
    } else {
      element = h('fieldset', {class: 'sf-group', 'data-testid': `field-${path}`, name: path, tabindex: '-1'},
        h('legend', {title: `${path} in the request`}, title,
          required ? h('span', {class: 'sf-required', title: 'required'}, ' *') : null, apiName(title, name)),
        intro ? introduction(intro) : null,
        error, body);
    }
    const read = () => {
      const value = {};
      let any = false;
      const errors = [];
      for (const child of children) {
        const r = child.read();
        if (r.errors) errors.push(...r.errors);
        if (r.error) errors.push({node: child, reason: r.error});
        if (r.set) {
          value[child.path.split('.').pop()] = r.value;
          any = true;
        }
      }
      return {set: any, value, errors};
    };
    return {path, kind: 'object', element, input: element, error, children, read, set: () => null,
      label: title};
  }

  // a fieldset's docstring: its first sentence, the rest behind "more"
  function introduction(text) {
    const [head, rest] = firstSentence(text);
    return h('div', {class: 'sf-help sf-intro'}, richText(head),
      rest ? h('details', {class: 'sf-about'}, h('summary', {}, 'more'), richText(rest)) : null);
  }

  function build(path, name, rawSchema, ctx) {
    const replaced = opts.override(path, rawSchema);
    const resolved = resolve(replaced === undefined ? rawSchema : replaced, opts.root);
    if (resolved.readOnly || resolved.const !== undefined) return null;
    const {schema: inner, nullable} = nonNull(resolved);
    const schema = resolve(inner, opts.root);
    const info = {...ctx, nullable, required: ctx.required && !nullable};
    let node;
    if (schema.type === 'object' && schema.properties && Object.keys(schema.properties).length) {
      node = objectField(path, name, schema, info);
    } else if (scalarType(schema)) {
      node = scalarField(path, name, schema, info);
    } else if (schema.type === 'array' && schema.items && schema.items.enum && !schema.prefixItems) {
      node = enumListField(path, name, schema, info);
    } else if (schema.type === 'array' && (schema.prefixItems || schema.items)
        && (schema.prefixItems || [resolve(schema.items, opts.root)]).every((i) => scalarType(resolve(i, opts.root)))) {
      node = listField(path, name, {...schema, items: schema.items && resolve(schema.items, opts.root)}, info);
    } else {
      node = jsonField(path, name, schema, info);
    }
    node.schema = schema;
    register(node);
    return node;
  }

  function register(node) {
    fields.set(node.path, node);
    for (const child of node.children || []) register(child);
  }

  function unregister(node) {
    fields.delete(node.path);
    for (const child of node.children || []) unregister(child);
  }

  const root = objectField('', '', resolve(schema, opts.root), {required: true});
  fields.set('', root);

  const form = {
    element: root.element,
    fields,
    field: (path) => fields.get(path),

    /** The body: {value, errors: [{node, reason}]} (errors: inputs that cannot be read, e.g. bad JSON). */
    read() {
      const r = root.read();
      return {value: r.value, errors: r.errors};
    },

    /** Render `path` again from another schema (the workload's params when the workload changes). */
    replace(path, newSchema) {
      const old = fields.get(path);
      if (!old) return null;
      const parentPath = path.includes('.') ? path.slice(0, path.lastIndexOf('.')) : '';
      const parent = fields.get(parentPath);
      const name = path.split('.').pop();
      unregister(old);
      const node = build(path, name, newSchema, {required: false});
      if (!node) return null;
      old.element.replaceWith(node.element);
      const i = parent.children.indexOf(old);
      if (i >= 0) parent.children[i] = node;
      return node;
    },

    /** Prefill an input from text (a link's query: `?params.width=32`). */
    set(path, text) {
      const node = fields.get(path);
      if (node && node.kind !== 'object') node.set(text);
      return Boolean(node && node.kind !== 'object');
    },

    clearErrors() {
      for (const node of fields.values()) {
        node.error.hidden = true;
        replace(node.error);
        if (node.kind !== 'object') node.input.removeAttribute('aria-invalid');
        node.element.classList.remove('sf-invalid');
      }
    },

    /**
     * Show each {field, reason} next to the input it names (or the nearest
     * enclosing one: `seeds.1` -> seeds). Returns [{field, reason, node}] in page
     * order, node null for an error no input matches (for the summary).
     */
    showErrors(errors) {
      const placed = [];
      for (const e of errors) {
        const field = String(e.field ?? e.loc ?? '');
        const reason = String(e.reason ?? e.msg ?? 'invalid');
        let node = null;
        let at = field;
        for (;;) {
          if (at !== '' && fields.has(at)) {
            node = fields.get(at);
            break;
          }
          if (!at.includes('.')) break;
          at = at.slice(0, at.lastIndexOf('.'));
        }
        if (node) {
          const rest = field.slice(node.path.length + 1);
          const where = rest === '' ? '' : (/^\d+$/.test(rest) ? `item ${Number(rest) + 1}: ` : `${rest}: `);
          node.error.hidden = false;
          if (node.error.childNodes.length) node.error.append(h('br'));
          node.error.append(`${where}${reason}`);
          node.element.classList.add('sf-invalid');
          if (node.kind !== 'object') node.input.setAttribute('aria-invalid', 'true');
          for (let d = node.element.closest('details'); d; d = d.parentElement?.closest('details')) d.open = true;
        }
        placed.push({field, reason, node});
      }
      const position = (p) => (p.node ? p.node.element : null);
      return placed.sort((a, b) => {
        const x = position(a);
        const y = position(b);
        if (!x || !y) return x ? -1 : (y ? 1 : 0);
        return x.compareDocumentPosition(y) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1;
      });
    },
  };
  return form;
}

/** Focus a field's input (its first checkbox for a group) and bring it into view. */
export function focusField(node) {
  if (!node) return;
  for (let d = node.element.closest('details'); d; d = d.parentElement?.closest('details')) d.open = true;
  const target = node.focusTarget || node.input;
  target.focus({preventScroll: true});
  node.element.scrollIntoView({block: 'center'});
}
