// Browser scenarios of the runs a canvas shows (issue #19, items 1, 6, 7): a run started
// anywhere glows on every open canvas, a node nobody can take says so, the run history grid.
// `node follow.mjs <scenario>`, run by pytest (tests/ui/test_canvas_runs.py).
import {
  FILE, log, main, openPage, rest, shot, states, waitFinal, waitForNodes, waitRunShown
} from './common.mjs';

/** Record every data-state each node shows from now on (window.__seen). */
async function recordStates(page) {
  await page.evaluate(() => {
    const seen = {};
    const note = el => {
      const id = el.getAttribute('data-node-id');
      const st = el.getAttribute('data-state');
      seen[id] = seen[id] || [];
      if (seen[id][seen[id].length - 1] !== st) {
        seen[id].push(st);
      }
    };
    document.querySelectorAll('[data-node-id]').forEach(note);
    new MutationObserver(records => {
      for (const r of records) {
        if (r.target.hasAttribute && r.target.hasAttribute('data-node-id')) {
          note(r.target);
        }
      }
    }).observe(document.body, { attributes: true, subtree: true, attributeFilter: ['data-state'] });
    window.__seen = seen;
  });
}

/** Wait until the page listens to the runs' own events (its `events?level=run` socket). */
async function runsFeed(page) {
  const deadline = Date.now() + 30000;
  while (!page.sockets.some(u => u.includes('/nexusflow/api/events?level=run'))) {
    if (Date.now() > deadline) {
      throw new Error(`no runs socket; sockets: ${page.sockets.join(', ')}`);
    }
    await page.waitForTimeout(100);
  }
  await page.waitForTimeout(1000); // the server's first blocking read is under way
}

const scenarios = {
  /** A run started over REST glows on an open canvas; a canvas opened later shows the newest
   *  run; a run pinned in the history stays until "Follow newest". */
  async rest(browser) {
    const a = await openPage(browser, 'follow-a');
    await waitForNodes(a, 2);
    await runsFeed(a);
    await recordStates(a);
    const t0 = Date.now();
    const run1 = (await rest('POST', 'runs', { path: FILE })).run_id;
    log('started', run1, 'over REST');
    await waitRunShown(a, run1);
    const followMs = Date.now() - t0;
    const final1 = await waitFinal(a);
    const seen = await a.evaluate(() => window.__seen);
    await shot(a, 'follow-rest-run');

    const b = await openPage(browser, 'follow-b');
    await waitForNodes(b, 2);
    const openedShows = await waitRunShown(b, null);
    const finalB = await waitFinal(b);

    // Pin run 1 on A; a second REST run then shows on B, not on A, until A follows again.
    await a.focus('select.nf-history'); // loads the history
    await a.waitForFunction(
      r => Array.from(document.querySelectorAll('select.nf-history option')).some(o => o.value === r),
      run1,
      { timeout: 10000 }
    );
    await a.selectOption('select.nf-history', run1);
    await a.waitForSelector('[data-action="follow-newest"]', { timeout: 10000 });
    const pinned = await a.$eval('[data-nexusflow-editor]', e => e.getAttribute('data-pinned-run'));
    const run2 = (await rest('POST', 'runs', { path: FILE })).run_id;
    await waitRunShown(b, run2);
    await waitFinal(b);
    await a.waitForTimeout(1000);
    const pinnedShows = await a.$eval('[data-nexusflow-editor]', e => e.getAttribute('data-run-id'));
    await a.click('[data-action="follow-newest"]');
    const afterFollow = await waitRunShown(a, run2);
    await shot(b, 'follow-newest-on-open');
    return {
      run1, run2, followMs, final1, seen, openedShows, finalB, pinned, pinnedShows, afterFollow,
      errors: [...a.errors, ...b.errors]
    };
  },

  /** A node queued where no live worker serves its queue carries the server's sentence. */
  async waiting(browser) {
    const page = await openPage(browser, 'waiting');
    await waitForNodes(page, 2);
    const t0 = Date.now();
    const runId = (await rest('POST', 'runs', { path: FILE })).run_id;
    const banner = await page.waitForSelector(`[data-node-id="${process.env.WAITING_NODE}"] [data-waiting]`, {
      timeout: 40000
    });
    const text = (await banner.textContent()).trim();
    const shownMs = Date.now() - t0;
    const nodeStates = await states(page);
    await shot(page, 'waiting-banner');
    await rest('POST', `runs/${runId}/cancel`);
    await page.waitForFunction(
      id => !document.querySelector(`[data-node-id="${id}"] [data-waiting]`),
      process.env.WAITING_NODE,
      { timeout: 30000 }
    );
    return { runId, text, shownMs, nodeStates, errors: page.errors };
  },

  /** The run history grid: a column per run, a cell per node, filters, a cell's details. */
  async grid(browser) {
    const expected = JSON.parse(process.env.EXPECT_RUNS); // [{run_id, status, trigger}]
    const page = await openPage(browser, 'grid');
    await waitForNodes(page, 2);
    await page.click('[data-action="history-grid"]');
    const count = () => page.$eval('[data-run-grid]', e => Number(e.getAttribute('data-grid-runs')));
    const columns = () => page.$$eval('[data-grid-run]', els => els.map(e => e.getAttribute('data-grid-run')));
    await page.waitForFunction(
      n => Number(document.querySelector('[data-run-grid]')?.getAttribute('data-grid-runs')) >= n &&
        Array.from(document.querySelectorAll('[data-grid-run]')).every(e => ['succeeded', 'failed'].includes(e.getAttribute('data-status'))),
      expected.length,
      { timeout: 30000 }
    );
    const order = await columns();
    const cells = await page.$$eval('.nf-grid-cell', els =>
      els.map(e => [e.getAttribute('data-run'), e.getAttribute('data-node'), e.getAttribute('data-state'), getComputedStyle(e).backgroundColor])
    );
    await shot(page, 'grid');
    await page.selectOption('select[aria-label="Filter by status"]', 'failed');
    await page.waitForFunction(() => Number(document.querySelector('[data-run-grid]').getAttribute('data-grid-runs')) === 1);
    const failedOnly = await columns();
    await page.selectOption('select[aria-label="Filter by status"]', '');
    await page.selectOption('select[aria-label="Filter by trigger"]', 'notebook');
    await page.waitForFunction(() => Number(document.querySelector('[data-run-grid]').getAttribute('data-grid-runs')) === 1);
    const notebookOnly = await columns();
    await page.selectOption('select[aria-label="Filter by trigger"]', '');
    await page.waitForFunction(n => Number(document.querySelector('[data-run-grid]').getAttribute('data-grid-runs')) === n, await count());
    // A cell: that node's details in that run (and the canvas shows that run).
    const failed = expected.find(r => r.status === 'failed').run_id;
    const node = process.env.FAILING_NODE;
    await page.click(`.nf-grid-cell[data-run="${failed}"][data-node="${node}"]`);
    await waitRunShown(page, failed);
    const error = (await (await page.waitForSelector('.nf-logs .nf-error-text', { timeout: 15000 })).textContent()).trim();
    const logsTitle = await page.$eval('.nf-logs', e => e.textContent.slice(0, 200));
    const canvasStates = await states(page);
    await shot(page, 'grid-cell-details');
    return { order, cells, failedOnly, notebookOnly, shownAfterClick: failed, error, logsTitle, canvasStates, errors: page.errors };
  }
};

await main(scenarios);
