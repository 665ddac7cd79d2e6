// Browser scenarios of the debug loop on the canvas (issue #15), run by pytest (tests/ui)
// against a live JupyterLab: `node debug.mjs <scenario>`. Prints `RESULT <json>`.
import {
  FILE, MAIN, cellSources, main, nodeState, openFlow, openedNotebook, runCells, shot, withDoc
} from './common.mjs';

const TIMEOUT = 60000;
const VIEWPORT = { width: 1500, height: 900 }; // the notebook opens beside the canvas

function runStatus(page, status) {
  return page.waitForFunction(
    s => document.querySelector('[data-run-status]')?.getAttribute('data-run-status') === s,
    status,
    { timeout: TIMEOUT }
  );
}

async function currentRun(page) {
  return (
    await page.waitForFunction(() => document.querySelector('[data-nexusflow-editor]')?.dataset.runId || false, null, {
      timeout: 10000
    })
  ).jsonValue();
}

/** Click a node of the canvas (selects it: the inspector; with a run shown: its details). */
async function clickNode(page, id) {
  await page.click(`${MAIN} .react-flow__node[data-id="${id}"] .nf-node-title`);
  await page.waitForSelector(`[data-inspector-node="${id}"]`, { timeout: 10000 });
}

/** Make the flow's tab the current one again. */
async function showFlow(page) {
  await page.evaluate(() => {
    const widget = Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.hasClass('nf-document'));
    window.jupyterapp.shell.activateById(widget.id);
  });
  await page.waitForSelector('[data-nexusflow-editor] [data-node-id]', { state: 'visible', timeout: TIMEOUT });
}

const scenarios = {
  /**
   * A run fails in node `bad`. Retry with the current flow after removing a node that
   * succeeded: refused, with the reason. Undo. Open `bad` in a notebook from its details: the
   * debug notebook opens in Lab; its cells attach to the run, show what `bad` saw and run it
   * here (the same error). A fix written in the notebook reaches the canvas through the live
   * link; Retry with the current flow ends the same run succeeded.
   */
  async notebook(browser) {
    const page = await openFlow(browser, 'debug-notebook', FILE, { viewport: VIEWPORT });
    await page.click('[data-action="run"]');
    await nodeState(page, 'bad', 'failed');
    await runStatus(page, 'failed');
    const runId = await currentRun(page);

    // A node that succeeded removed: the retry with the current flow is refused, saying why.
    await withDoc(page, doc => doc.removeElements(['src'], ['src-bad']));
    await page.waitForSelector(`${MAIN} .react-flow__node[data-id="src"]`, { state: 'detached', timeout: 10000 });
    await page.check('[data-action="retry-current"]');
    await page.click('[data-action="retry"]');
    const refusal = await (await page.waitForSelector('[data-retry-refusal]', { timeout: TIMEOUT })).textContent();
    await shot(page, 'debug-retry-refused');
    await page.click('[data-action="undo"]');
    await page.waitForSelector(`${MAIN} .react-flow__node[data-id="src"]`, { timeout: 10000 });
    const statusAfterRefusal = await page.$eval('[data-run-status]', e => e.getAttribute('data-run-status'));

    // Open the failed node in a notebook from its details.
    await clickNode(page, 'bad');
    await page.waitForSelector('.nf-logs[data-logs-node="bad"] [data-attempt-status="failed"]', { timeout: TIMEOUT });
    await page.click('.nf-logs[data-logs-node="bad"] [data-action="open-notebook"]');
    const notebookPath = await openedNotebook(page, TIMEOUT);
    const kernel = await page.evaluate(async () => {
      const panel = window.jupyterapp.shell.currentWidget;
      await panel.sessionContext.ready;
      const k = panel.sessionContext.session.kernel;
      const t0 = Date.now();
      while (k.status !== 'idle' && Date.now() - t0 < 60000) {
        await new Promise(r => setTimeout(r, 100));
      }
      return { name: k.name, status: k.status, cells: panel.content.widgets.length };
    });
    const sources = await cellSources(page);
    const setup = sources.findIndex(s => s.includes('run.debug('));
    const here = sources.findIndex(s => s.trim() === 'ctx.run_here()');
    const outputs = await runCells(page, setup, here + 1);
    await shot(page, 'debug-notebook');

    // The fix, written into the flow from the kernel: the open canvas gets it (live link).
    const fix = await page.evaluate(async () => {
      const panel = window.jupyterapp.shell.currentWidget;
      panel.content.activeCellIndex = panel.content.widgets.length - 1;
      await window.jupyterapp.commands.execute('notebook:insert-cell-below');
      const cell = panel.content.activeCell;
      cell.model.sharedModel.setSource("f['bad'].set(expression=\"inputs['src']['n'] * 2\")\nprint('fixed')");
      await window.jupyterapp.commands.execute('notebook:run-cell');
      const outputs = cell.model.outputs.toJSON();
      return outputs.map(o => (o.text ?? '') + (o.data?.['text/plain'] ?? '') + (o.ename ? `${o.ename}: ${o.evalue}` : '')).join('\n');
    });
    await page.waitForFunction(
      () => {
        const widget = Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.hasClass('nf-document'));
        return widget.context.model.sharedModel.node('bad')?.config?.expression === "inputs['src']['n'] * 2";
      },
      null,
      { timeout: TIMEOUT }
    );

    // Retry with the current flow: the same run ends succeeded.
    await showFlow(page);
    const checked = await page.isChecked('[data-action="retry-current"]');
    await page.click('[data-action="retry"]');
    await nodeState(page, 'bad', 'succeeded');
    await runStatus(page, 'succeeded');
    const retriedRun = await currentRun(page);
    const states = await page.$$eval(`${MAIN} [data-node-id]`, els =>
      Object.fromEntries(els.map(e => [e.getAttribute('data-node-id'), e.getAttribute('data-state')]))
    );
    await shot(page, 'debug-retried');
    return {
      runId, refusal, statusAfterRefusal, notebookPath, kernel, sources, outputs, fix, checked,
      retriedRun, states, errors: page.errors
    };
  },

  /** "Test node" in the inspector: with the inputs of the latest run, with typed inputs, and
   *  a failing one; output, log and error shown in place, no run started. */
  async testnode(browser) {
    const page = await openFlow(browser, 'debug-testnode', FILE, { viewport: VIEWPORT });
    await page.click('[data-action="run"]');
    await runStatus(page, 'succeeded');
    const runId = await currentRun(page);
    await clickNode(page, 'double');
    const panel = '[data-test-node="double"]';
    const test = async inputs => {
      await page.fill(`${panel} textarea[aria-label="Test inputs"]`, inputs);
      await page.click(`${panel} [data-action="test-node"]`);
      await page.waitForFunction(
        p => ['succeeded', 'failed'].includes(document.querySelector(p)?.getAttribute('data-test-status')),
        panel,
        { timeout: TIMEOUT }
      );
      return page.$eval(panel, e => ({
        status: e.getAttribute('data-test-status'),
        output: e.querySelector('[data-test-detail="output"]')?.textContent ?? null,
        error: e.querySelector('[data-test-detail="error"]')?.textContent ?? null,
        inputs: e.querySelector('[data-test-detail="inputs"]')?.textContent ?? null,
        log: e.querySelector('[data-test-detail="log"]')?.textContent ?? null
      }));
    };
    const latest = await test('');
    await shot(page, 'debug-test-latest');
    const typed = await test('{"src": {"n": 21}}');
    const failing = await test('{"src": {}}');
    await shot(page, 'debug-test-failed');
    const bad = await page.fill(`${panel} textarea[aria-label="Test inputs"]`, '{"src": ').then(async () => {
      await page.click(`${panel} [data-action="test-node"]`);
      return (await page.waitForSelector(`${panel} [data-test-error]`, { timeout: 10000 })).textContent();
    });
    const runAfter = await currentRun(page);
    return { runId, runAfter, latest, typed, failing, bad, errors: page.errors };
  },

  /**
   * A node with a pinned output shows a pin badge; the inspector sets another node's cache
   * TTL; runs started with "use pins" use the pin (the badge says so), and the second one
   * serves the cached node from the first (cache badge). From the node details of a run, pin
   * its output on the node, then unpin it.
   */
  async badges(browser) {
    const page = await openFlow(browser, 'debug-badges', FILE, { viewport: VIEWPORT });
    await page.waitForSelector(`${MAIN} [data-node-id="P"] [data-badge="pin"]`, { timeout: TIMEOUT });
    const pinBadges = await page.$$eval(`${MAIN} [data-badge="pin"]`, els =>
      els.map(e => e.closest('[data-node-id]').getAttribute('data-node-id'))
    );
    await clickNode(page, 'C');
    await page.fill('[data-inspector-node="C"] input[aria-label="Cache results (s)"]', '600');
    await page.waitForFunction(
      () => {
        const widget = Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.hasClass('nf-document'));
        return widget.context.model.sharedModel.node('C')?.cache?.ttl_s === 600;
      },
      null,
      { timeout: 10000 }
    );
    await page.check('[data-action="use-pins"]');
    const runs = [];
    for (let i = 0; i < 2; i++) {
      const before = i ? runs[0] : '';
      await page.click('[data-action="run"]');
      const runId = await (
        await page.waitForFunction(
          b => {
            const r = document.querySelector('[data-nexusflow-editor]')?.dataset.runId;
            return r && r !== b ? r : false;
          },
          before,
          { timeout: TIMEOUT }
        )
      ).jsonValue();
      runs.push(runId);
      await runStatus(page, 'succeeded');
    }
    await page.waitForSelector(`${MAIN} [data-node-id="C"] [data-badge="cache"]`, { timeout: TIMEOUT });
    await page.waitForSelector(`${MAIN} [data-node-id="P"] [data-badge="pin"][data-pin-used="true"]`, {
      timeout: TIMEOUT
    });
    const cachedFrom = await page.$eval(`${MAIN} [data-node-id="C"] [data-badge="cache"]`, e =>
      e.getAttribute('data-cached-from')
    );
    await shot(page, 'debug-badges');
    // Pin C's output from its details in this run, then unpin it.
    await clickNode(page, 'C');
    await page.waitForSelector('.nf-logs[data-logs-node="C"] [data-attempt-status="succeeded"]', { timeout: TIMEOUT });
    const detailCached = await page.$eval('.nf-logs[data-logs-node="C"]', e => !!e.querySelector('[data-detail="cached-from"]'));
    await page.click('.nf-logs[data-logs-node="C"] [data-action="pin-output"]');
    await page.waitForSelector(`${MAIN} [data-node-id="C"] [data-badge="pin"]`, { timeout: 10000 });
    const pinned = await withDoc(page, doc => doc.node('C').pin);
    const inspectorPin = await page.$eval('[data-pinned-node="C"] pre', e => e.textContent);
    await shot(page, 'debug-pinned');
    await page.click('.nf-logs[data-logs-node="C"] [data-action="unpin"]');
    await page.waitForSelector(`${MAIN} [data-node-id="C"] [data-badge="pin"]`, { state: 'detached', timeout: 10000 });
    const unpinned = await withDoc(page, doc => doc.node('C').pin ?? null);
    return { pinBadges, runs, cachedFrom, detailCached, pinned, inspectorPin, unpinned, errors: page.errors };
  }
};

await main(scenarios, { timeoutMs: 270000 });
