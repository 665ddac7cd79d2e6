// Browser scenario of "Describe a flow" and the AI node's streamed log, run by pytest
// (tests/ui/test_describe.py) against a live JupyterLab whose server asks a fake
// OpenAI-compatible model: `node describe.mjs describe`. Prints `RESULT <json>`.
import { FILE, TIMEOUT, main, openPage, shot } from './common.mjs';

/** The node ids of the document (the shared model, not what is drawn). */
async function docNodes(page) {
  return page.evaluate(() => {
    const widget = Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.hasClass('nf-document'));
    return Array.from(widget.context.model.sharedModel.nodes.keys()).sort();
  });
}

/** The node ids drawn on the canvas itself (not in the preview). */
async function canvasNodes(page) {
  return page.$$eval('.nf-canvas > .react-flow [data-node-id]', els =>
    els.map(e => e.getAttribute('data-node-id')).sort()
  );
}

async function describe(browser) {
  const page = await openPage(browser, 'describe', FILE, { ready: '[data-nexusflow-editor]' });
  await page.waitForSelector('[data-node-id="old"]', { timeout: TIMEOUT });
  const before = await docNodes(page);

  // 1. The model's answer never compiles: the error is shown, nothing is applied.
  await page.click('[data-describe-open]');
  await page.waitForSelector('[data-describe] .nf-describe-head .nf-help, [data-describe-unconfigured]');
  const model = await page.$eval('[data-describe] .nf-describe-head', e => e.textContent);
  await page.fill('[data-describe] textarea', process.env.REQUEST_TEXT);
  await page.click('[data-describe-ask]:not([disabled])');
  await page.waitForSelector('[data-describe-error]', { timeout: TIMEOUT });
  const error = await page.$eval('[data-describe-error] .nf-field-error', e => e.textContent);
  const answer = await page.$eval('[data-describe-answer]', e => e.textContent);
  const afterError = await docNodes(page);
  await shot(page, 'describe-refused');

  // 2. Asked again: the first answer is refused, the corrected one is proposed and previewed.
  await page.click('[data-describe-error] button:has-text("Try again")');
  await page.waitForSelector('[data-describe-proposal]', { timeout: TIMEOUT });
  await page.waitForSelector('[data-describe-preview] [data-node-id]', { timeout: TIMEOUT });
  const preview = await page.$$eval('[data-describe-preview] [data-node-id]', els =>
    els.map(e => e.getAttribute('data-node-id')).sort()
  );
  const proposalText = await page.$eval('[data-describe-proposal] .nf-help', e => e.textContent);
  const whilePreviewed = await docNodes(page);
  await shot(page, 'describe-proposal');

  // 3. Accept: the flow replaces the canvas in one step; undo takes it back, redo again.
  await page.click('[data-describe-accept]');
  await page.waitForFunction(() => !document.querySelector('[data-describe]'));  // closed
  await page.waitForSelector('[data-node-id="ask"]', { timeout: TIMEOUT });
  const accepted = await docNodes(page);
  await page.click('[data-action="undo"]');
  await page.waitForSelector('.nf-canvas > .react-flow [data-node-id="old"]', { timeout: TIMEOUT });
  const undone = await docNodes(page);
  await page.click('[data-action="redo"]');
  await page.waitForSelector('.nf-canvas > .react-flow [data-node-id="ask"]', { timeout: TIMEOUT });
  const redone = await canvasNodes(page);
  await shot(page, 'describe-accepted');

  // 4. Run it: the ai node's answer grows in the logs panel while the node runs.
  await page.click('[data-action="run"]');
  // The described flow has a run input (city, with its default): confirm it.
  const inputs = await page.waitForSelector('[aria-label="Run inputs"] .nf-primary', { timeout: 5000 }).catch(() => null);
  if (inputs) {
    await inputs.click();
  }
  await page.waitForSelector('[data-node-id="ask"][data-state="running"]', { timeout: 60000 });
  await page.click('.react-flow__node[data-id="ask"] .nf-node-title');
  const seen = [];
  const deadline = Date.now() + 60000;
  while (Date.now() < deadline) {
    const state = await page.$eval('[data-node-id="ask"]', e => e.getAttribute('data-state'));
    const text = await page.$eval('[data-logs-node="ask"] [data-detail="log"]', e => e.textContent).catch(() => null);
    if (text && text.includes('Once') && seen[seen.length - 1]?.text !== text) {
      seen.push({ state, text });
      if (seen.length === 3) {
        await shot(page, 'describe-log-growing');
      }
    }
    if (state === 'succeeded' || state === 'failed') {
      break;
    }
    await page.waitForTimeout(150);
  }
  await page.waitForSelector('[data-logs-node="ask"] [data-attempt-status="succeeded"]', { timeout: 30000 });
  const finalLog = await page.$eval('[data-logs-node="ask"] [data-detail="log"]', e => e.textContent);
  const output = await page.$eval('[data-logs-node="ask"] [data-detail="output"]', e => e.textContent);
  await page.waitForSelector('[data-node-id="shout"][data-state="succeeded"]', { timeout: 30000 });
  await shot(page, 'describe-ran');
  return {
    model, before, error, answer, afterError, preview, proposalText, whilePreviewed, accepted,
    undone, redone, growing: seen.filter(s => s.state === 'running').map(s => s.text), finalLog,
    output: JSON.parse(output), errors: page.errors
  };
}

const scenarios = { describe };
await main(scenarios);
