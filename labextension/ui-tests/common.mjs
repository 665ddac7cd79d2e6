// Helpers shared by the browser scenarios of follow.mjs and layout.mjs: launch Chromium, open a
// flow in JupyterLab, read the canvas, call the REST API as an outside client would.
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

/** Open FILE in a fresh browser context (a user of its own: cookies, awareness). */
export async function openPage(browser, workspace, file = FILE, viewport = { width: 1400, height: 850 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', err => errors.push(String(err)));
  page.on('console', msg => {
    if (msg.type() === 'error' && /nexusflow|xyflow|React/i.test(msg.text())) {
      errors.push(msg.text());
    }
  });
  page.errors = errors;
  page.sockets = []; // the websockets the page opened (urls), from before it loads
  page.on('websocket', ws => page.sockets.push(ws.url()));
  await page.goto(`${LAB}lab/workspaces/${workspace}/tree/${file}?token=${TOKEN}`);
  await page.waitForSelector('[data-nexusflow-editor], [data-invalid-doc]', { timeout: 60000 });
  return page;
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

/** Run the scenario named on the command line; print `RESULT <json>` for pytest. */
export async function main(scenarios) {
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
  }, Number(process.env.SCENARIO_TIMEOUT_MS || 150000));
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
