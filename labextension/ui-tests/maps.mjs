// Browser scenarios of the map node on the canvas (issue #20, item 1), run by pytest
// (tests/ui/test_map_ui.py) against a live JupyterLab: `node maps.mjs <scenario>`.
// Prints `RESULT <json>`.
import { FILE, MAIN, main, nodeState, openFlow, shot } from './common.mjs';

const TIMEOUT = 60000;

/** The map badge of node `id`: {done, total, failed, text}, or null. */
function badge(page, id) {
  return page.evaluate(i => {
    const el = document.querySelector(`.nf-canvas > .react-flow [data-node-id="${i}"] .nf-node-items`);
    return el
      ? {
          done: Number(el.getAttribute('data-items-done')),
          total: Number(el.getAttribute('data-items-total')),
          failed: Number(el.getAttribute('data-items-failed')),
          text: el.textContent
        }
      : null;
  }, id);
}

/** The rows of the items list in the node details. */
function rows(page) {
  return page.$$eval('.nf-logs .nf-items [data-item-index]', els =>
    els.map(e => ({
      index: Number(e.getAttribute('data-item-index')),
      state: e.getAttribute('data-item-state'),
      text: e.textContent
    }))
  );
}

function firstRowIs(page, index) {
  return page.waitForFunction(
    i => document.querySelector('.nf-logs .nf-items [data-item-index]')?.getAttribute('data-item-index') === String(i),
    index,
    { timeout: TIMEOUT }
  );
}

const scenarios = {
  /** Run a flow whose map M runs 40 items two at a time (4 of them fail, on_item_failure:
   *  continue): the node shows done/total and the failed count while it runs; clicked, its
   *  details list the items a page at a time, and the failed ones with their errors. */
  async progress(browser) {
    const page = await openFlow(browser, 'map-progress', FILE, { viewport: { width: 1400, height: 900 } });
    await page.click('[data-action="run"]');
    await nodeState(page, 'M', 'running');
    // Sample the badge while the items run: it counts up.
    const seen = [];
    const deadline = Date.now() + TIMEOUT;
    let midway = null;
    while (Date.now() < deadline) {
      const b = await badge(page, 'M');
      const state = await page.$eval(`${MAIN} [data-node-id="M"]`, e => e.getAttribute('data-state'));
      if (b && (seen.length === 0 || seen[seen.length - 1].done !== b.done)) {
        seen.push(b);
      }
      if (b && !midway && b.done > 0 && b.done < b.total && state === 'running') {
        midway = b;
        await shot(page, 'map-running');
      }
      if (state === 'succeeded' || state === 'failed') {
        break;
      }
      await page.waitForTimeout(50);
    }
    await nodeState(page, 'after', 'succeeded');
    const final = await badge(page, 'M');
    // Clicked: the details list its items, 20 a page.
    await page.click(`${MAIN} .react-flow__node[data-id="M"] .nf-node-title`);
    await page.waitForSelector('.nf-logs .nf-items [data-item-index]', { timeout: TIMEOUT });
    const firstPage = await rows(page);
    const range = await page.$eval('.nf-logs [data-items-range]', e => e.textContent);
    await shot(page, 'map-items');
    await page.click('.nf-logs .nf-items-pager button:has-text("Next")');
    await firstRowIs(page, 20);
    const secondPage = await rows(page);
    await page.selectOption('.nf-logs select[aria-label="Item state"]', 'failed');
    await page.waitForFunction(
      () => {
        const els = Array.from(document.querySelectorAll('.nf-logs .nf-items [data-item-index]'));
        return els.length > 0 && els.every(e => e.getAttribute('data-item-state') === 'failed');
      },
      null,
      { timeout: TIMEOUT }
    );
    const failedRows = await rows(page);
    await shot(page, 'map-items-failed');
    return { midway, seen, final, firstPage, range, secondPage, failedRows, errors: page.errors };
  },

  /** Run a flow whose map F runs a sub-flow per item; its items list opens an item's child
   *  run over the canvas (the drill-down), glowing from that run. */
  async flowItems(browser) {
    const page = await openFlow(browser, 'map-flow-items', FILE, { viewport: { width: 1400, height: 900 } });
    await page.click('[data-action="run"]');
    await nodeState(page, 'F', 'succeeded');
    const final = await badge(page, 'F');
    await page.click(`${MAIN} .react-flow__node[data-id="F"] .nf-node-title`);
    await page.waitForSelector('.nf-logs [data-item-index="1"] [data-action="open-item-run"]', { timeout: TIMEOUT });
    const listed = await rows(page);
    const button = await page.$('.nf-logs [data-item-index="1"] [data-action="open-item-run"]');
    const childRun = await button.getAttribute('data-child-run');
    await button.click();
    const drill = `.nf-drill[data-drill-run="${childRun}"]`;
    await page.waitForFunction(
      d => {
        const els = Array.from(document.querySelectorAll(`${d} [data-node-id]`));
        return els.length > 0 && els.every(e => e.getAttribute('data-state') === 'succeeded');
      },
      drill,
      { timeout: TIMEOUT }
    );
    const childStates = await page.$$eval(`${drill} [data-node-id]`, els =>
      Object.fromEntries(els.map(e => [e.getAttribute('data-node-id'), e.getAttribute('data-state')]))
    );
    const trail = await page.$eval(`${drill} .nf-drill-head`, e => e.textContent);
    await page.click(`${drill} .react-flow__node[data-id="double"] .nf-node-title`);
    await page.waitForSelector(`${drill} .nf-logs pre[data-detail="output"]`, { timeout: 10000 });
    const output = await page.$eval(`${drill} .nf-logs pre[data-detail="output"]`, e => e.textContent);
    await shot(page, 'map-flow-item-drill');
    return { final, listed, childRun, childStates, trail, output, errors: page.errors };
  }
};

await main(scenarios);
