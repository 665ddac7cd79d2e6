// Browser scenarios of flow control on the canvas (issue #20), run by pytest (tests/ui)
// against a live JupyterLab: `node flowcontrol.mjs <scenario>`. Prints `RESULT <json>`.
import {
  MAIN, cellSources, kernelReady, main, nodeState, openFlow, openedNotebook, runCells, shot, statesIn
} from './common.mjs';

const TIMEOUT = 60000;

const scenarios = {
  /** Run a flow whose node S is a sub-flow; open S's child run from the node: its own graph,
   *  glowing live from the child's events; Back returns to the parent. */
  async drill(browser) {
    const page = await openFlow(browser, 'drill');
    await page.click('[data-action="run"]');
    // The child holds its middle node for a few seconds: drill in while it runs.
    await nodeState(page, 'S', 'waiting');
    const button = await page.waitForSelector(`${MAIN} [data-node-id="S"] [data-action="drill"]`, {
      timeout: TIMEOUT
    });
    const childRun = await button.getAttribute('data-child-run');
    await button.click();
    const drill = `.nf-drill[data-drill-run="${childRun}"]`;
    await page.waitForSelector(`${drill} [data-node-id]`, { timeout: TIMEOUT });
    const glowWhileRunning = await statesIn(page, drill);
    await shot(page, 'drill-running');
    // The child finishes: its nodes turn green in the drill-down, the parent's S after it.
    await page.waitForFunction(
      d => {
        const els = Array.from(document.querySelectorAll(`${d} [data-node-id]`));
        return els.length > 0 && els.every(e => e.getAttribute('data-state') === 'succeeded');
      },
      drill,
      { timeout: TIMEOUT }
    );
    const childStates = await statesIn(page, drill);
    const childStatus = await page.$eval(drill, e => e.getAttribute('data-drill-status'));
    // A node of the child: its details come from the child run.
    await page.click(`${drill} .react-flow__node[data-id="square"] .nf-node-title`);
    await page.waitForSelector(`${drill} .nf-logs pre`, { timeout: 10000 });
    const output = await page.$eval(`${drill} .nf-logs`, e => e.textContent);
    await shot(page, 'drill-done');
    await page.click('[data-action="drill-back"]');
    await page.waitForSelector('.nf-drill', { state: 'detached', timeout: 10000 });
    await nodeState(page, 'after', 'succeeded');
    const parentStates = await statesIn(page, MAIN);
    return { childRun, glowWhileRunning, childStates, childStatus, output, parentStates, errors: page.errors };
  },

  /** A node of the sub-flow fails (so the parent's S does). Drill into S's child run, click
   *  the failed node: "Open in notebook" writes the debug notebook next to the sub-flow's
   *  file and opens it, its cells attached to the child run; a fix is written from it into
   *  the sub-flow's file. Back on the flow, "Retry the run" in the drill-down retries the
   *  parent, which resumes the child run in place: with the version it ran (it fails again),
   *  then with "current flow" (the fixed sub-flow: the child and the parent succeed). */
  async drilldebug(browser) {
    const page = await openFlow(browser, 'drill-debug', undefined, { viewport: { width: 1500, height: 900 } });
    await page.click('[data-action="run"]');
    await nodeState(page, 'S', 'failed');
    const button = await page.waitForSelector(`${MAIN} [data-node-id="S"] [data-action="drill"]`, {
      timeout: TIMEOUT
    });
    const childRun = await button.getAttribute('data-child-run');
    await button.click();
    const drill = `.nf-drill[data-drill-run="${childRun}"]`;
    await page.waitForSelector(`${drill}[data-drill-status="failed"]`, { timeout: TIMEOUT });
    const childStates = await statesIn(page, drill);
    await page.click(`${drill} .react-flow__node[data-id="bad"] .nf-node-title`);
    const logs = `${drill} .nf-logs[data-logs-node="bad"]`;
    await page.waitForSelector(`${logs} [data-attempt-status="failed"]`, { timeout: TIMEOUT });
    const retry = await page.waitForSelector(`${drill} [data-action="drill-retry"]:not([disabled])`, {
      timeout: TIMEOUT
    });
    const retryTitle = await retry.getAttribute('title');
    await page.waitForSelector(`${logs} [data-action="open-notebook"]:not([disabled])`, { timeout: TIMEOUT });
    await shot(page, 'drill-debug-failed');
    await page.click(`${logs} [data-action="open-notebook"]`);
    const notebookPath = await openedNotebook(page, TIMEOUT);
    await kernelReady(page);
    const sources = await cellSources(page);
    const setup = sources.findIndex(s => s.includes('run.debug('));
    const inputs = sources.findIndex(s => s.trim() === 'ctx.inputs, ctx.params');
    const outputs = await runCells(page, setup, inputs + 1);
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
    await shot(page, 'drill-debug-notebook');

    // Back on the flow: the drill-down is still open; retry the parent from it.
    await page.evaluate(() => {
      const widget = Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.hasClass('nf-document'));
      window.jupyterapp.shell.activateById(widget.id);
    });
    await page.waitForSelector(`${drill} [data-action="drill-retry"]`, { state: 'visible', timeout: TIMEOUT });
    await page.click(`${drill} [data-action="drill-retry"]`);
    // The child run again, in place: its failed node runs a second attempt (and fails again).
    await page.waitForSelector(`${logs} select[aria-label="Attempt"]`, { timeout: TIMEOUT });
    await page.waitForSelector(`${drill}[data-drill-status="failed"]`, { timeout: TIMEOUT });
    await nodeState(page, 'S', 'failed');
    // With the current flow: the fixed sub-flow runs in the same child run.
    await page.check(`${drill} [data-action="drill-retry-current"]`);
    await page.click(`${drill} [data-action="drill-retry"]`);
    await page.waitForSelector(`${drill}[data-drill-status="succeeded"]`, { timeout: TIMEOUT });
    await nodeState(page, 'S', 'succeeded');
    await shot(page, 'drill-debug-fixed');
    return { childRun, childStates, retryTitle, notebookPath, sources, outputs, fix, errors: page.errors };
  },

  /** Run a flow with an approval; every open canvas shows Approve / Reject on the waiting
   *  node; one approves with a comment; the approved branch runs, the other is skipped, and
   *  the buttons leave every canvas. */
  async approve(browser) {
    const page = await openFlow(browser, 'approve');
    const other = await openFlow(browser, 'approve-watcher');
    await page.click('[data-action="run"]');
    await nodeState(page, 'ask', 'waiting');
    await nodeState(other, 'ask', 'waiting');
    const bar = `${MAIN} [data-node-id="ask"] [data-approval]`;
    await page.waitForSelector(`${bar} [data-action="approve"]`, { timeout: TIMEOUT });
    await other.waitForSelector(`${bar} [data-action="approve"]`, { timeout: TIMEOUT });
    // The buttons come with the node's state; its message with the run's details, read next.
    const message = await (await page.waitForSelector(`${bar} .nf-node-message`, { timeout: TIMEOUT })).textContent();
    const watcherMessage = await (await other.waitForSelector(`${bar} .nf-node-message`, { timeout: TIMEOUT })).textContent();
    await shot(other, 'approve-waiting-watcher');
    await page.fill(`${bar} input[aria-label="Decision comment"]`, 'checked the numbers');
    await shot(page, 'approve-waiting');
    await page.click(`${bar} [data-action="approve"]`);
    await nodeState(page, 'pay', 'succeeded');
    await nodeState(page, 'stop', 'skipped');
    await nodeState(other, 'pay', 'succeeded');
    const buttonsLeft = (await page.$$(bar)).length + (await other.$$(bar)).length;
    const states = await statesIn(page, MAIN);
    await page.click(`${MAIN} .react-flow__node[data-id="ask"] .nf-node-title`);
    await page.waitForSelector('.nf-logs pre', { timeout: 10000 });
    const details = await page.$eval('.nf-logs', e => e.textContent);
    await shot(page, 'approve-done');
    return { message, watcherMessage, states, buttonsLeft, details, errors: [...page.errors, ...other.errors] };
  }
};

await main(scenarios);
