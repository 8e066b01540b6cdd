// What the job pages do the same way.

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
