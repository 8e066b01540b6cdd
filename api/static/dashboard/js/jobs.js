// What the job pages do the same way.

import {showLive} from './format.js';

/**
 * Ask the API to cancel a job (POST /<noun>/{id}/cancel) and say so above the page:
 * `stops` tells what happens next ("the training stops at its next step."). Returns
 * the job's read, or null when the request failed (the message says why) or was
 * aborted (the user left the page).
 */
export async function cancelJob(ctx, noun, id, {signal, title, stops}) {
  try {
    const job = await ctx.api.post(`/${noun}/${id}/cancel`, {}, {signal});
    ctx.flash(`Cancel requested: ${stops}`);
    return job;
  } catch (err) {
    if (err.name !== 'AbortError') ctx.flash(`The ${title} could not be cancelled: ${err.message}`, 'error');
    return null;
  }
}

/**
 * Follow a running job's events (GET /jobs/{id}/events) with the page's live tag
 * `live` saying how the stream is, until the job ends; then `ended()` (the page
 * reads the final state), and the tag empties. `onEvent(name, data)` gets each
 * event while `isStopped()` is false; `lastEventId` starts the stream after what the
 * page has read already. A stream refused for good leaves the reason in the tag.
 */
export async function followJob(ctx, id, live, {signal, isStopped, lastEventId = null, onEvent, ended}) {
  showLive(live, 'live');
  try {
    await ctx.api.stream(`/jobs/${id}/events`, {
      signal,
      lastEventId,
      onState: (state, err) => {
        if (!isStopped()) showLive(live, state, err);
      },
      onEvent: (name, data) => {
        if (!isStopped()) onEvent(name, data);
      },
    });
    if (isStopped()) return;
    await ended();
  } catch (err) {
    if (err.name === 'AbortError' || isStopped()) return;
    showLive(live, 'failed', err);
    return;
  }
  showLive(live, 'ended');
}
