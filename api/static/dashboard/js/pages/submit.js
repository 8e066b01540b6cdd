// Submit a range test, a training or a sweep: #/submit/<range-tests|trainings|sweeps>.
//
// The forms are not written by hand: they are built (js/forms.js) from the
// request body of `POST /<noun>` in the API's OpenAPI document (the service's
// variant: the one with a `workload`) and, for `params`, from the selected
// workload's parameter schema in `GET /workloads`. A field added to a spec shows
// up here without a change. Only what the user filled in is sent; the API fills
// in its defaults, judges every value and names each refused field, and its
// reasons are shown next to the fields.
//
// A query prefills the form by field path: #/submit/trainings?workload=digits_mlp
// &bounds_from.range_test=<id> (a link from a range test's page).

import {h, replace} from '../dom.js';
import {age, jobHref, jobSubject, num} from '../format.js';
import {focusField, humanize, requestBodySchema, schemaForm} from '../forms.js';

// `skip`: fields not shown. The top-level batch_size is the workload's
// params.batch_size under another name (the API takes either, not both), and
// every workload has that parameter: one input for it, in the parameters.
const FORMS = {
  'range-tests': {
    title: 'New range test',
    noun: 'range test',
    kind: 'range_test',
    button: 'Queue range test',
    intro: 'Sweeps the learning rate from start LR to end LR over a number of mini-batches and '
      + 'suggests the bounds (base LR, max LR) of a cyclical schedule from the loss curve.',
    // shown at once, in this order; the rest is under "More settings"
    common: ['workload', 'params', 'num_iter', 'start_lr', 'end_lr', 'optimizer.name'],
    skip: ['batch_size'],
  },
  trainings: {
    title: 'New training',
    noun: 'training',
    kind: 'training',
    button: 'Queue training',
    intro: 'Trains the workload with a learning-rate schedule: give the bounds yourself, or take '
      + 'them from one of your finished range tests (bounds from).',
    common: ['workload', 'params', 'bounds_from', 'schedule.policy', 'schedule.base_lr', 'schedule.max_lr',
      'schedule.lr', 'schedule.step_size_up', 'cycles', 'iterations', 'epochs', 'optimizer.name'],
    // bounds_source: set by the service from bounds_from; a request may not give it
    skip: ['batch_size', 'bounds_source'],
  },
  sweeps: {
    title: 'New sweep',
    noun: 'sweep',
    kind: 'sweep',
    button: 'Queue sweep',
    intro: 'Compares learning-rate policies on one workload: a range test finds the bounds, then '
      + 'every policy trains for the same budget over several seeds, and the sweep tabulates '
      + 'their accuracy and the iterations each needs to reach the fixed policy\u2019s.',
    common: ['workload', 'params', 'policies', 'seeds', 'cycles', 'optimizer.name'],
    skip: ['batch_size'],
  },
};

// fetched once per page load (the API does not change under an open tab); a
// failed fetch is asked again on the next visit
const cache = new Map();

function once(key, get) {
  if (!cache.has(key)) {
    cache.set(key, get().catch((err) => {
      cache.delete(key);
      throw err;
    }));
  }
  return cache.get(key);
}

/** The body schema of POST /<noun> for a job a worker runs (the variant with a workload). */
function serviceBody(openapi, noun) {
  return requestBodySchema(openapi, `/${noun}`, (variant) =>
    Boolean(variant.properties && variant.properties.workload));
}

/** Swagger UI's deep link to the operation (`docs#/<tag>/<operationId>`). */
function docsLink(openapi, noun) {
  const op = openapi.paths?.[`/${noun}`]?.post;
  if (!op || !op.operationId) return 'docs';
  const tag = (op.tags && op.tags[0]) || 'default';
  return `docs#/${tag.trim().replace(/\s/g, '%20')}/${op.operationId}`;
}

function retryText(err) {
  return err.retryAfter ? ` Try again in ${err.retryAfter} s.` : '';
}

/** What went wrong, for the summary above the form. */
function refusal(err, kind) {
  const p = err.problem || {};
  switch (err.status) {
    case 0:
      return {title: 'The service could not be reached', detail: `${err.message}. Nothing was queued.`};
    case 422:
      return {title: 'The service did not accept these values', detail: 'Nothing was queued. Fix the fields marked below.'};
    case 429:
      return {title: p.title || 'Too many jobs', detail: `${p.detail || err.message}. Nothing was queued: wait for `
        + `some of your team's jobs to end, or cancel some.${retryText(err)}`};
    case 409:
      return {title: p.title || 'Not possible now', detail: `${p.detail || err.message}. Nothing was queued.`};
    case 503:
      return {title: p.title || 'The service is busy', detail: `${p.detail || err.message}. Nothing was queued.${retryText(err)}`};
    default:
      return {title: p.title || `The ${kind} was not queued`, detail: `${p.detail || err.message}${retryText(err)}`};
  }
}

/** The team's recent finished range tests with bounds, offered under a range-test id input. */
async function suggestRangeTests(node, ctx) {
  let page;
  try {
    page = await ctx.api.get('/jobs', {kind: 'range_test', status: 'succeeded', limit: 50});
  } catch (err) {
    return; // only a convenience: the id can still be typed
  }
  // a workload's tests with bounds (an own-loop test's model is not a workload)
  const usable = page.items.filter((job) => job.spec && job.spec.workload && job.result && job.result.bounds);
  const options = usable.map((job) => {
    const b = job.result.bounds;
    return h('option', {value: job.id},
      `${jobSubject(job)}: ${num(b.base_lr)} – ${num(b.max_lr)} (${b.method}), ${age(job.created_at)}`);
  });
  if (!options.length || !node.input.isConnected) return;
  const list = h('datalist', {id: `${node.input.id}-choices`}, options);
  node.input.after(list);
  node.input.setAttribute('list', list.id);
  node.input.placeholder = 'pick one, or paste a job id';
}

export async function render(root, {match, query}, ctx) {
  const noun = match[1];
  const spec = FORMS[noun];
  const [openapi, workloads] = await Promise.all([
    once('openapi', () => ctx.api.get('/openapi.json')),
    once('workloads', () => ctx.api.get('/workloads').then((w) => w.items)),
  ]);
  if (!ctx.isCurrent()) return null;
  const byName = new Map(workloads.map((w) => [w.name, w]));
  const body = serviceBody(openapi, noun);
  const wanted = query.get('workload');
  let workload = byName.get(wanted) || byName.get('digits_mlp') || workloads[0];
  if (!workload) {
    replace(root, h('h1', {}, spec.title),
      h('div', {class: 'notice error', role: 'alert'}, 'The service has no workloads to run.'));
    return null;
  }

  const paramsSchema = (w) => ({
    ...w.params,
    title: `Parameters of ${w.name}`,
    description: undefined, // the workload's description is shown under its select
  });

  const preview = h('pre', {class: 'sf-preview', 'data-testid': 'body-preview'});
  const form = schemaForm(body, {
    root: openapi,
    common: spec.common,
    skip: spec.skip,
    override: (path, schema) => {
      if (path === 'workload') return {...schema, enum: workloads.map((w) => w.name), default: undefined};
      if (path === 'params') return paramsSchema(workload);
      return undefined;
    },
    title: (path) => (path === 'params' ? `Parameters of ${workload.name}` : undefined),
  });

  const workloadField = form.field('workload');
  const about = h('div', {class: 'sf-workload-about', 'data-testid': 'workload-description'});
  const showWorkload = () => {
    replace(about, workload.description,
      workload.task ? h('span', {class: 'sf-task'}, ` ${workload.task}`) : null);
  };
  workloadField.element.querySelector('.sf-help').replaceWith(about);
  workloadField.element.classList.add('sf-wide');
  workloadField.set(workload.name);
  showWorkload();
  workloadField.input.addEventListener('change', () => {
    const picked = form.read().value.workload;
    workload = byName.get(picked) || workload;
    form.replace('params', paramsSchema(workload));
    showWorkload();
    updatePreview();
  });

  const summary = h('div', {class: 'sf-summary', 'data-testid': 'form-errors', role: 'alert', hidden: true});
  const button = h('button', {type: 'submit', class: 'primary', 'data-testid': 'submit'}, spec.button);
  const status = h('span', {class: 'muted', 'data-testid': 'submit-status', 'aria-live': 'polite'});
  const formEl = h('form', {class: 'card sf-form', novalidate: true, 'data-testid': 'submit-form'},
    summary,
    form.element,
    h('details', {class: 'sf-body', 'data-testid': 'request'},
      h('summary', {}, `The request: POST /${noun}`),
      h('p', {class: 'sf-help'}, 'What this form sends (fields left empty are not sent: the service uses its defaults).'),
      preview),
    h('div', {class: 'sf-actions'}, button, status));

  function updatePreview() {
    const {value, errors} = form.read();
    replace(preview, JSON.stringify(value, null, 2), errors.length ? `\n(and ${errors.length} unreadable field${errors.length > 1 ? 's' : ''})` : '');
  }
  formEl.addEventListener('input', updatePreview);
  formEl.addEventListener('change', updatePreview);

  // a range test to take bounds from: offer the team's finished ones
  for (const node of form.fields.values()) {
    if (node.schema?.format === 'uuid' && node.path.split('.').pop() === 'range_test') {
      suggestRangeTests(node, ctx);
    }
  }

  // prefill from the query (field paths), after the workload's params exist
  for (const [key, value] of query.entries()) {
    if (key !== 'workload') form.set(key, value);
  }
  updatePreview();

  function showSummary(title, detail, placed) {
    const items = (placed || []).map(({field, reason, node}) => h('li', {},
      node
        ? [h('button', {type: 'button', class: 'sf-jump', onclick: () => focusField(node)},
          node.label || humanize(field)), ' ', h('code', {class: 'sf-name'}, field)]
        : h('code', {}, field || 'body'),
      `: ${reason}`));
    replace(summary, h('strong', {}, title), detail ? h('p', {}, detail) : null,
      items.length ? h('ul', {}, items) : null);
    summary.hidden = false;
  }

  let sending = false;
  formEl.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (sending) return;
    form.clearErrors();
    summary.hidden = true;
    replace(status);
    const {value, errors} = form.read();
    if (errors.length) {
      const placed = form.showErrors(errors.map((e) => ({field: e.node.path, reason: e.reason})));
      showSummary('Some fields cannot be read', 'Nothing was sent. Fix the fields marked below.', placed);
      focusField(placed[0].node);
      return;
    }
    sending = true;
    button.disabled = true;
    replace(status, 'Sending…');
    try {
      const job = await ctx.api.post(`/${noun}`, value, {headers: {'Idempotency-Key': crypto.randomUUID()}});
      if (!ctx.isCurrent()) return;
      ctx.navigate(jobHref({kind: job.kind || spec.kind, id: job.id}));
    } catch (err) {
      if (!ctx.isCurrent() || err.name === 'AbortError') return;
      if (err.status === 401) return; // the app signs out and says why
      const problems = err.fieldErrors || [];
      const placed = form.showErrors(problems);
      const {title, detail} = refusal(err, spec.noun);
      showSummary(title, detail, placed);
      const first = placed.find((p) => p.node);
      if (first) focusField(first.node);
      else summary.scrollIntoView({block: 'nearest'});
      replace(status);
    } finally {
      sending = false;
      button.disabled = false;
      if (status.textContent === 'Sending…') replace(status);
    }
  });

  replace(root,
    h('div', {class: 'page-head'},
      h('h1', {}, spec.title),
      h('span', {class: 'spacer'}),
      h('a', {href: docsLink(openapi, noun), target: '_blank', rel: 'noopener', class: 'muted'},
        `POST /${noun} in the API docs`)),
    h('p', {class: 'sf-lead'}, spec.intro, ' Fields left empty take the service\u2019s defaults (shown in grey).'),
    formEl);
  return null;
}
