// Browser scenarios of presence and layout on the canvas (issue #19, items 8, 9 and 10).
// `node layout.mjs <scenario>`, run by pytest (tests/ui/test_canvas_layout.py).
import {
  box, center, drag, log, main, openPage, overlaps, shot, states, waitFinal, waitForNodes, withDoc
} from './common.mjs';

async function newsToast(page) {
  return page.evaluate(() => document.body.innerText.includes('official Jupyter news'));
}

async function nodeBoxes(page) {
  return page.$$eval('.react-flow__node', els =>
    Object.fromEntries(
      els.map(e => {
        const r = e.getBoundingClientRect();
        return [e.getAttribute('data-id'), { x: r.x, y: r.y, width: r.width, height: r.height }];
      })
    )
  );
}

function inside(inner, outer, slack = 1) {
  return (
    inner.x >= outer.x - slack && inner.y >= outer.y - slack &&
    inner.x + inner.width <= outer.x + outer.width + slack && inner.y + inner.height <= outer.y + outer.height + slack
  );
}

const scenarios = {
  /** Two users: each sees exactly the other, at once; nobody sees a "?" or the news toast. */
  async presence(browser) {
    const a = await openPage(browser, 'presence-a');
    await waitForNodes(a, 1);
    await a.waitForTimeout(2500); // A is settled (its awareness published) before B arrives
    const aAlone = await a.$eval('.nf-presence', e => Number(e.getAttribute('data-presence-count')));
    // Timed from B's canvas being there (JupyterLab itself may take many seconds to load).
    const b = await openPage(browser, 'presence-b');
    const t0 = Date.now();
    await b.waitForSelector('.nf-presence .nf-avatar', { timeout: 30000 });
    const bSeesAMs = Date.now() - t0;
    await a.waitForSelector('.nf-presence .nf-avatar', { timeout: 30000 });
    const aSeesBMs = Date.now() - t0;
    await a.waitForTimeout(2000);
    const read = p =>
      p.$eval('.nf-presence', e => ({
        count: Number(e.getAttribute('data-presence-count')),
        avatars: Array.from(e.querySelectorAll('.nf-avatar')).map(x => x.textContent),
        titles: Array.from(e.querySelectorAll('.nf-avatar')).map(x => x.getAttribute('title'))
      }));
    const seenByA = await read(a);
    const seenByB = await read(b);
    const toast = (await newsToast(a)) || (await newsToast(b));
    await shot(b, 'presence-b');
    log('B saw A after', bSeesAMs, 'ms; A saw B after', aSeesBMs, 'ms');
    return { aAlone, bSeesAMs, aSeesBMs, seenByA, seenByB, toast, errors: [...a.errors, ...b.errors] };
  },

  /** Fit, nodes from elsewhere brought into view, free places for double-clicks, drops kept
   *  whole, fixed node widths, the minimap beside the canvas, the inputs form, invalid nodes. */
  async layout(browser) {
    const page = await openPage(browser, 'layout');
    await waitForNodes(page, 3);
    await page.waitForSelector('[data-node-type="transform"]', { timeout: 30000 });
    await page.waitForTimeout(500);
    const out = { errors: page.errors };
    const canvas = () => box(page, '.nf-canvas');

    // An invalid config is marked on the canvas.
    const bad = process.env.INVALID_NODE;
    out.invalidMarked = await page.$eval(`.react-flow__node[data-id="${bad}"] .nf-node`, e =>
      e.classList.contains('nf-problem') ? e.querySelector('.nf-node-problem')?.textContent : null
    );

    // Pan far away, then Fit: every node in view.
    const pane = await center(page, '.react-flow__pane');
    await drag(page, { x: pane.x - 200, y: pane.y + 150 }, { x: pane.x + 500, y: pane.y + 350 });
    await drag(page, { x: pane.x - 200, y: pane.y + 150 }, { x: pane.x + 500, y: pane.y + 350 });
    const c0 = await canvas();
    out.outOfViewBeforeFit = Object.values(await nodeBoxes(page)).filter(b => !inside(b, c0)).length;
    await page.click('[data-action="fit"]');
    await page.waitForTimeout(700);
    out.outOfViewAfterFit = Object.values(await nodeBoxes(page)).filter(b => !inside(b, c0)).length;

    // A node added elsewhere (another user, a notebook's link) far off: brought into view.
    await withDoc(page, doc =>
      doc.addElements([{ id: 'far', type: 'transform', position: { x: 2600, y: 1900 }, config: { expression: '1' } }])
    );
    await page.waitForSelector('.react-flow__node[data-id="far"]', { timeout: 10000 });
    await page.waitForTimeout(1000);
    out.farInView = inside((await nodeBoxes(page)).far, await canvas());
    await page.click('[data-action="fit"]');
    await page.waitForTimeout(700);

    // Double-click a palette item three times: three new nodes, none on another.
    const before = Object.keys(await nodeBoxes(page)).length;
    for (let i = 0; i < 3; i++) {
      await page.dblclick('[data-node-type="transform"]');
      await page.waitForFunction(n => document.querySelectorAll('.react-flow__node').length === n, before + i + 1);
    }
    await page.waitForTimeout(300);
    const boxes = Object.entries(await nodeBoxes(page));
    out.overlapping = [];
    for (let i = 0; i < boxes.length; i++) {
      for (let j = i + 1; j < boxes.length; j++) {
        if (overlaps(boxes[i][1], boxes[j][1], 1)) {
          out.overlapping.push([boxes[i][0], boxes[j][0]]);
        }
      }
    }

    // Dropped at the very left edge of the canvas: the whole node is in view.
    const c1 = await canvas();
    const ids0 = new Set(Object.keys(await nodeBoxes(page)));
    await page.dragAndDrop('[data-node-type="transform"]', '.react-flow__pane', {
      targetPosition: { x: 4, y: c1.height / 2 }
    });
    await page.waitForFunction(n => document.querySelectorAll('.react-flow__node').length === n, ids0.size + 1);
    await page.waitForTimeout(300);
    const dropped = Object.entries(await nodeBoxes(page)).find(([id]) => !ids0.has(id))[1];
    out.droppedInView = inside(dropped, await canvas());
    out.droppedLeftGap = dropped.x - c1.x;
    await shot(page, 'layout-added');

    // Remove what was added, fit, then Run: the inputs form (beside the palette, a field per
    // param) and the glow, which leaves every node's width as it was.
    await withDoc(page, (doc, keep) => {
      const extra = Array.from(doc.nodes.keys()).filter(id => !keep.includes(id));
      doc.removeElements(extra, []);
    }, JSON.parse(process.env.KEEP_NODES));
    await page.click('[data-action="fit"]');
    await page.waitForTimeout(700);
    const widthsBefore = Object.fromEntries(Object.entries(await nodeBoxes(page)).map(([id, b]) => [id, Math.round(b.width)]));
    await page.click('[data-action="run"]');
    const form = await box(page, '[aria-label="Run inputs"]');
    out.inputsCoverPalette = overlaps(form, await box(page, '.nf-palette'));
    out.inputFields = await page.$$eval('[aria-label="Run inputs"] [data-field]', els =>
      els.map(e => [e.getAttribute('data-field'), e.querySelector('select, textarea, input')?.tagName.toLowerCase(),
        e.querySelector('input')?.getAttribute('type') ?? null])
    );
    out.runBlockedWithoutWho = await page.$eval('[data-action="run-with-inputs"]', e => e.disabled);
    await page.fill('[aria-label="Run inputs"] input[aria-label="times"]', '4');
    await page.check('[aria-label="Run inputs"] input[aria-label="loud"]');
    await page.fill('[aria-label="Run inputs"] input[aria-label="who"]', 'ada');
    await shot(page, 'layout-inputs');
    await page.click('[data-action="run-with-inputs"]');
    const started = await (
      await page.waitForFunction(
        () => document.querySelector('[data-nexusflow-editor]')?.getAttribute('data-run-id') ||
          (document.querySelector('[data-notice]') && `notice: ${document.querySelector('[data-notice]').textContent}`),
        null,
        { timeout: 30000 }
      )
    ).jsonValue();
    if (started.startsWith('notice: ')) {
      throw new Error(`the run did not start: ${started}`);
    }
    out.final = await waitFinal(page);
    await page.waitForTimeout(300);
    const afterRun = await nodeBoxes(page);
    out.widthsBefore = widthsBefore;
    out.widthsAfter = Object.fromEntries(Object.entries(afterRun).map(([id, b]) => [id, Math.round(b.width)]));
    const right = await box(page, '.nf-right');
    out.underInspector = Object.entries(afterRun).filter(([, b]) => overlaps(b, right)).map(([id]) => id);

    // The run history names the run by what a user scans for: id, status, when, how long,
    // what started it (the canvas: manual); no environment for dev.
    const runId = await page.$eval('[data-nexusflow-editor]', e => e.getAttribute('data-run-id'));
    await page.focus('select.nf-history'); // loads the history
    const listed = `select.nf-history option[data-history][value="${runId}"]`; // not the placeholder
    await page.waitForSelector(listed, { state: 'attached', timeout: 10000 });
    out.historyLabel = await page.$eval(listed, e => e.textContent);
    out.runId = runId;

    // A node at the bottom-left corner: after Fit, and after its details open below the
    // canvas (which shrinks it), React Flow's controls and the minimap cover no part of it.
    // The flow's bounds get the canvas's proportions, so that Fit makes both its width and its
    // height tight: the corner node then sits in the very corner of the canvas.
    const corner = JSON.parse(process.env.KEEP_NODES)[0];
    const zoom = await page.$eval('.nf-canvas > .react-flow .react-flow__viewport',
      e => new DOMMatrixReadOnly(getComputedStyle(e).transform).a);
    const nodeBox = (await nodeBoxes(page))[corner];
    const [nodeW, nodeH] = [nodeBox.width / zoom, nodeBox.height / zoom];
    const c2 = await canvas();
    const rightmost = Math.max(...Object.values(await withDoc(page, doc =>
      Object.fromEntries(Array.from(doc.nodes.entries()).map(([id, n]) => [id, n.toJSON().position.x]))))) + nodeW;
    const width = rightmost + 400;
    const height = (width * c2.height) / c2.width;
    await withDoc(page, (doc, [id, pos]) => doc.moveNodes(new Map([[id, pos]])),
      [corner, { x: rightmost - width, y: height - nodeH }]);
    await page.click('[data-action="fit"]');
    await page.waitForTimeout(700);
    const controls = await box(page, '.nf-canvas > .react-flow .react-flow__controls');
    const cornerBox = async () => (await nodeBoxes(page))[corner];
    out.cornerUnderControlsAfterFit = overlaps(await cornerBox(), controls);
    await page.click(`.react-flow__node[data-id="${corner}"] .nf-node-title`);
    await page.waitForSelector('.nf-logs', { timeout: 10000 });
    await page.waitForTimeout(900); // the pan is animated (300 ms)
    const opened = await cornerBox();
    out.cornerUnderControlsWithDetails = overlaps(opened, await box(page, '.nf-canvas > .react-flow .react-flow__controls'));
    out.cornerUnderMinimapWithDetails = overlaps(opened, await box(page, '.react-flow__minimap'));
    out.cornerInViewWithDetails = inside(opened, await canvas());
    await shot(page, 'layout-corner-details');
    await page.click('.react-flow__pane', { position: { x: 5, y: 5 } });
    await page.waitForSelector('.nf-logs', { state: 'detached', timeout: 10000 });
    await withDoc(page, (doc, id) => doc.moveNodes(new Map([[id, { x: 0, y: 0 }]])), corner); // back
    await page.click('[data-action="fit"]');
    await page.waitForTimeout(700);

    // Open a node's logs: the minimap stays beside the canvas and covers no node.
    await page.click(`.react-flow__node[data-id="${process.env.KEEP_NODES && JSON.parse(process.env.KEEP_NODES)[0]}"] .nf-node-title`);
    await page.waitForSelector('.nf-logs', { timeout: 10000 });
    await page.waitForTimeout(400);
    const minimap = await box(page, '.react-flow__minimap');
    const withLogs = await nodeBoxes(page);
    out.minimapOverNodes = Object.entries(withLogs).filter(([, b]) => overlaps(b, minimap)).map(([id]) => id);
    out.minimapOverCanvas = overlaps(minimap, await canvas());
    out.minimapShown = minimap.width > 50 && minimap.height > 50;
    out.output = await page.$eval('.nf-logs', e => e.textContent.slice(0, 400));
    await page.click('.react-flow__node[data-id="second"] .nf-node-title');
    await page.waitForSelector('.nf-logs .nf-logs-head', { timeout: 10000 });
    await page.waitForFunction(() => document.querySelector('.nf-logs')?.textContent.includes('second'), null, { timeout: 10000 });
    out.secondOutput = await (await page.waitForSelector('.nf-logs pre[data-detail="output"]', { timeout: 10000 })).evaluate(e => e.textContent.trim());
    await shot(page, 'layout-logs-minimap');
    out.states = await states(page);
    return out;
  }
};

await main(scenarios);
