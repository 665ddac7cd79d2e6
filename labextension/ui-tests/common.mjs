// Helpers shared by every browser scenario file (canvas, debug, notebook, maps, ...): launch
// Chromium, open a flow or notebook in JupyterLab, read the canvas, run notebook cells, call the
// REST API as an outside client would, and main(), the runner each file ends with.
import { chromium } from 'playwright-core';
import path from 'node:path';

export const LAB = process.env.LAB_URL;
export const TOKEN = process.env.LAB_TOKEN;
export const ARTIFACTS = process.env.ARTIFACTS || 'test-results';
export const FILE = process.env.FLOW_FILE || 'flow.nxflow';
export const TIMEOUT = 30000;

export function log(...args) {
  console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...args);
}

/** The main canvas of a flow's tab (not a sub-flow drill-down or a notebook widget). */
export const MAIN = '.nf-canvas > .react-flow';

/** Open `file` (a flow by default) in a fresh browser context (a user of its own: cookies,
 *  awareness); wait for `ready` (the canvas, or a broken document's notice). */
export async function openPage(
  browser,
  workspace,
  file = FILE,
  { viewport = { width: 1400, height: 850 }, ready = '[data-nexusflow-editor], [data-invalid-doc]' } = {}
) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', err => errors.push(String(err)));
  page.on('console', msg => {
    if (msg.type() === 'error' && /nexusflow|xyflow|React|anywidget/i.test(msg.text())) {
      errors.push(msg.text());
    }
  });
  page.errors = errors;
  page.sockets = []; // the websockets the page opened (urls), from before it loads
  page.on('websocket', ws => page.sockets.push(ws.url()));
  await page.goto(`${LAB}lab/workspaces/${workspace}/tree/${file}?token=${TOKEN}`);
  await page.waitForSelector(ready, { timeout: 60000 });
  return page;
}

/** Open a flow (`file`) and wait until its canvas has drawn its nodes. */
export function openFlow(browser, workspace, file = FILE, options = {}) {
  return openPage(browser, workspace, file, { ready: '[data-nexusflow-editor] [data-node-id]', ...options });
}

/** The ids of the nodes drawn on the page. */
export async function nodeIds(page) {
  return page.$$eval('[data-node-id]', els => els.map(e => e.getAttribute('data-node-id')));
}

/** Wait until node `id` under `scope` shows `state`. */
export function nodeState(page, id, state, scope = MAIN, timeout = 60000) {
  return page.waitForFunction(
    ([s, i, st]) => document.querySelector(`${s} [data-node-id="${i}"]`)?.getAttribute('data-state') === st,
    [scope, id, state],
    { timeout }
  );
}

/** The state of every node under `scope`, by id. */
export function statesIn(page, scope) {
  return page.$$eval(`${scope} [data-node-id]`, els =>
    Object.fromEntries(els.map(e => [e.getAttribute('data-node-id'), e.getAttribute('data-state')]))
  );
}

/** Wait until the current notebook's kernel is idle; return its number of cells. */
export async function kernelReady(page) {
  return page.evaluate(async () => {
    const panel = window.jupyterapp.shell.currentWidget;
    await panel.sessionContext.ready;
    const kernel = panel.sessionContext.session.kernel;
    const t0 = Date.now();
    while (kernel.status !== 'idle' && Date.now() - t0 < 30000) {
      await new Promise(r => setTimeout(r, 100));
    }
    return panel.content.widgets.length;
  });
}

/** After "Open in notebook": wait until the notebook it opened is the current tab with its
 *  cells drawn; return its path. */
export async function openedNotebook(page, timeout = 60000) {
  const path = await (
    await page.waitForFunction(
      () => {
        const w = window.jupyterapp.shell.currentWidget;
        return w?.content?.widgets && w.context?.path?.endsWith('.ipynb') ? w.context.path : false;
      },
      null,
      { timeout }
    )
  ).jsonValue();
  await page.waitForSelector('.jp-NotebookPanel .jp-Cell', { timeout });
  return path;
}

/** The source of every cell of the current notebook. */
export function cellSources(page) {
  return page.evaluate(() =>
    window.jupyterapp.shell.currentWidget.content.widgets.map(c => c.model.sharedModel.getSource())
  );
}

/** Run cells `from` .. `to - 1` of the current notebook; return each one's output text. */
export async function runCells(page, from, to) {
  return page.evaluate(
    async ([a, b]) => {
      const panel = window.jupyterapp.shell.currentWidget;
      const out = [];
      for (let i = a; i < b; i++) {
        panel.content.activeCellIndex = i;
        await window.jupyterapp.commands.execute('notebook:run-cell');
        const cell = panel.content.widgets[i];
        const outputs = cell.model.outputs ? cell.model.outputs.toJSON() : [];
        out.push(
          outputs
            .map(o => (o.text ?? '') + (o.data?.['text/plain'] ?? '') + (o.ename ? `${o.ename}: ${o.evalue}` : ''))
            .join('\n')
        );
      }
      return out;
    },
    [from, to]
  );
}

export async function waitForNodes(page, count) {
  await page.waitForFunction(
    n => document.querySelectorAll('[data-node-id]').length >= n,
    count,
    { timeout: TIMEOUT }
  );
}

export async function states(page) {
  return page.$$eval('[data-node-id]', els =>
    Object.fromEntries(els.map(e => [e.getAttribute('data-node-id'), e.getAttribute('data-state')]))
  );
}

/** Wait until every node of the page is in a final state; return the states. */
export async function waitFinal(page, timeout = 60000) {
  await page.waitForFunction(
    () => {
      const els = Array.from(document.querySelectorAll('[data-node-id]'));
      return els.length > 0 && els.every(e => ['succeeded', 'failed', 'skipped', 'canceled'].includes(e.getAttribute('data-state')));
    },
    null,
    { timeout }
  );
  return states(page);
}

/** The run the canvas shows (data-run-id), once it is `runId` (or any when null). */
export async function waitRunShown(page, runId, timeout = 20000) {
  return (
    await page.waitForFunction(
      r => {
        const v = document.querySelector('[data-nexusflow-editor]')?.getAttribute('data-run-id');
        return v && (r === null || v === r) ? v : false;
      },
      runId,
      { timeout }
    )
  ).jsonValue();
}

/** Run JS against the shared model of the current Nexus-Flow widget of a page. */
export async function withDoc(page, fn, arg) {
  return page.evaluate(
    ([source, a]) => {
      const shell = window.jupyterapp.shell;
      const widget = Array.from(shell.widgets('main')).find(w => w.hasClass('nf-document'));
      const doc = widget.context.model.sharedModel;
      return new Function('doc', 'arg', `return (${source})(doc, arg);`)(doc, a);
    },
    [fn.toString(), arg]
  );
}

/** Call the Nexus-Flow REST API from outside the browser (as curl, a script or CI would). */
export async function rest(method, route, body) {
  const response = await fetch(`${LAB}nexusflow/api/${route}`, {
    method,
    headers: { Authorization: `token ${TOKEN}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  });
  const text = await response.text();
  if (!response.ok) {
    throw new Error(`${method} ${route}: ${response.status} ${text}`);
  }
  return text ? JSON.parse(text) : null;
}

export async function shot(page, name) {
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file });
  log('screenshot', file);
  return file;
}

export async function box(page, selector) {
  return (await page.waitForSelector(selector, { timeout: TIMEOUT })).boundingBox();
}

export async function center(page, selector) {
  const b = await box(page, selector);
  return { x: b.x + b.width / 2, y: b.y + b.height / 2 };
}

export async function drag(page, from, to) {
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  const steps = 12;
  for (let i = 1; i <= steps; i++) {
    await page.mouse.move(from.x + ((to.x - from.x) * i) / steps, from.y + ((to.y - from.y) * i) / steps);
    await page.waitForTimeout(15);
  }
  await page.mouse.up();
}

/** Whether two boxes overlap (by more than `slack` pixels each way). */
export function overlaps(a, b, slack = 0) {
  return (
    a.x + slack < b.x + b.width && b.x + slack < a.x + a.width &&
    a.y + slack < b.y + b.height && b.y + slack < a.y + a.height
  );
}

/** Run the scenario named on the command line; print `RESULT <json>` for pytest. A scenario
 *  still running after `timeoutMs` (SCENARIO_TIMEOUT_MS) exits 3. */
export async function main(scenarios, { timeoutMs = 150000 } = {}) {
  const name = process.argv[2];
  if (!scenarios[name]) {
    console.error(`unknown scenario ${name}; one of ${Object.keys(scenarios).join(', ')}`);
    process.exit(2);
  }
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage']
  });
  const timer = setTimeout(() => {
    console.error('scenario timed out');
    process.exit(3);
  }, Number(process.env.SCENARIO_TIMEOUT_MS || timeoutMs));
  try {
    const result = await scenarios[name](browser);
    console.log('RESULT ' + JSON.stringify(result));
  } catch (err) {
    console.error(err);
    process.exitCode = 1;
    let n = 0;
    for (const context of browser.contexts()) {
      for (const page of context.pages()) {
        await shot(page, `failure-${name}-${n++}`).catch(() => undefined);
      }
    }
  } finally {
    clearTimeout(timer);
    await browser.close();
  }
}
