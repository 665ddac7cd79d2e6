// Browser scenario of Promote… in the canvas toolbar (issue #17 item 2), run by pytest
// (tests/ui/test_canvas_promote.py): `node promote.mjs promote`. Prints `RESULT <json>`.
import { FILE, log, main, openPage, rest, shot, waitForNodes, withDoc } from './common.mjs';

const TIMEOUT = 30000;

/** Click Run (in the environment picked, '' for dev) and wait until that new run succeeded. */
async function runOnce(page, env, previous) {
  if (env) {
    await page.focus('[data-action="env"]');
    await page.waitForSelector(`[data-action="env"] option[value="${env}"]`, { state: 'attached', timeout: TIMEOUT });
    await page.selectOption('[data-action="env"]', env);
  }
  await page.click('[data-action="run"]');
  const handle = await page.waitForFunction(
    prev => {
      const id = document.querySelector('[data-nexusflow-editor]')?.getAttribute('data-run-id');
      const status = document.querySelector('[data-run-status]')?.getAttribute('data-run-status');
      return id && id !== prev && status === 'succeeded' ? id : false;
    },
    previous,
    { timeout: 60000 }
  );
  return handle.jsonValue();
}

/** The text of the dry run's preview once it is for `version` → shown (or a refusal). */
async function answer(page) {
  await page.waitForSelector('[data-promote-preview], [data-promote-refusal]', { timeout: TIMEOUT });
  return page.$eval('[data-promote]', el => ({
    preview: el.querySelector('[data-promote-preview]')?.textContent ?? null,
    from: el.querySelector('[data-promote-preview]')?.getAttribute('data-from-version') ?? null,
    refusal: el.querySelector('[data-promote-refusal]')?.textContent ?? null,
    confirmDisabled: el.querySelector('[data-action="promote-confirm"]')?.disabled ?? null
  }));
}

async function history(page) {
  return page.$$eval('[data-promote] [data-promotion]', els =>
    els.map(e => ({ env: e.getAttribute('data-env'), version: Number(e.getAttribute('data-version')), text: e.textContent }))
  );
}

const scenarios = {
  /** Two versions saved by running the flow; v1 then v2 promoted to PROD after the diff; v2
   *  refused in QA (a variable it lacks); the history lists both promotions. */
  async promote(browser) {
    const prod = process.env.PROD;
    const qa = process.env.QA;
    const page = await openPage(browser, 'promote');
    await waitForNodes(page, 1);
    const run1 = await runOnce(page, '', null); // stores version 1
    await withDoc(page, doc =>
      doc.addElements([
        { id: 'shout', type: 'transform', label: 'Shout', position: { x: 0, y: 160 }, config: { expression: "env['GREETING'].upper()" } }
      ])
    );
    await waitForNodes(page, 2);
    const run2 = await runOnce(page, prod, run1); // stores version 2 (it needs GREETING)
    log('runs', run1, run2);

    await page.click('[data-action="promote"]');
    await page.waitForSelector('[data-action="promote-version"] option', { state: 'attached', timeout: TIMEOUT });
    const versions = await page.$$eval('[data-action="promote-version"] option', els => els.map(e => Number(e.value)));
    const defaultVersion = Number(await page.$eval('[data-action="promote-version"]', e => e.value));
    const envs = await page.$$eval('[data-action="promote-env"] option', els => els.map(e => e.value));

    // v1 to prod: nothing there yet, the node added.
    await page.selectOption('[data-action="promote-env"]', prod);
    await page.selectOption('[data-action="promote-version"]', String(versions[versions.length - 1]));
    await page.waitForFunction(() => document.querySelector('[data-promote-preview]')?.textContent.includes('→ v1'), null, { timeout: TIMEOUT });
    const first = await answer(page);
    await page.click('[data-action="promote-confirm"]');
    await page.waitForSelector('[data-promote-done]', { timeout: TIMEOUT });
    const firstDone = await page.$eval('[data-promote-done]', e => e.textContent);

    // v2 to prod: the diff names v1 replaced and the node added.
    await page.selectOption('[data-action="promote-version"]', String(versions[0]));
    await page.waitForFunction(() => document.querySelector('[data-promote-preview]')?.textContent.includes('v1 → v2'), null, { timeout: TIMEOUT });
    const second = await answer(page);
    await shot(page, 'promote-diff');
    await page.click('[data-action="promote-confirm"]');
    await page.waitForFunction(() => document.querySelector('[data-promote-done]')?.textContent.includes('v2'), null, { timeout: TIMEOUT });
    await page.waitForFunction(() => document.querySelectorAll('[data-promote] [data-promotion]').length >= 2, null, { timeout: TIMEOUT });
    const hist = await history(page);

    // v2 to qa: refused, GREETING is not set there; nothing to confirm.
    await page.selectOption('[data-action="promote-env"]', qa);
    await page.waitForSelector('[data-promote-refusal]', { timeout: TIMEOUT });
    const refused = await answer(page);
    await shot(page, 'promote-refused');
    const runs = await rest('GET', `runs?path=${encodeURIComponent(FILE)}&limit=1`);
    return {
      versions, defaultVersion, envs, first, firstDone, second, history: hist, refused,
      workflowId: runs.runs[0].workflow_id, errors: page.errors
    };
  }
};

await main(scenarios);
