// Browser scenarios of the notebook side of Nexus-Flow, run by pytest (tests/ui) against a live
// JupyterLab: `node notebook.mjs <scenario>`. Prints `READY <ms>` when the page is set up (the
// test then acts as the kernel) and `RESULT <json>` at the end for pytest to check.
import { kernelReady, log, main, openPage, runCells, shot, statesIn } from './common.mjs';

const TIMEOUT = 30000;

const FINAL = ['succeeded', 'failed', 'skipped', 'canceled'];

/** Wait until `count` nodes under `scope` all show a final state. */
async function settled(page, scope, count, timeout = 60000) {
  await page.waitForFunction(
    ([s, n, f]) => {
      const els = Array.from(document.querySelectorAll(`${s} [data-node-id]`));
      return els.length >= n && els.every(e => f.includes(e.getAttribute('data-state')));
    },
    [scope, count, FINAL],
    { timeout }
  );
}

/**
 * Describe every node element under `scope` as the canvas drew it: its classes and data
 * attributes, the tags and nf- classes of everything inside it (handles by id and side, without
 * React Flow's own interaction classes), its text, and the computed glow.
 */
function nodeSignatures(page, scope) {
  return page.$$eval(`${scope} [data-node-id]`, els => {
    const nf = e => Array.from(e.classList).filter(c => c.startsWith('nf-')).join(' ');
    return Object.fromEntries(
      els.map(el => {
        const cs = getComputedStyle(el);
        const skeleton = Array.from(el.querySelectorAll('*')).map(d => {
          const handle = d.classList.contains('react-flow__handle')
            ? `[handle ${d.getAttribute('data-handleid') ?? ''} ${d.classList.contains('source') ? 'source' : 'target'}]`
            : '';
          return `${d.tagName.toLowerCase()}.${nf(d)}${handle}`;
        });
        return [
          el.getAttribute('data-node-id'),
          {
            className: el.className,
            state: el.getAttribute('data-state'),
            phase: el.getAttribute('data-phase'),
            attempt: el.getAttribute('data-attempt'),
            text: el.innerText,
            skeleton,
            glow: {
              borderColor: cs.borderTopColor,
              borderStyle: cs.borderTopStyle,
              background: cs.backgroundColor,
              color: cs.color,
              boxShadow: cs.boxShadow,
              opacity: cs.opacity
            }
          }
        ];
      })
    );
  });
}

/** The nf- classes of every edge under `scope`, by edge id. */
function edgeClasses(page, scope) {
  return page.$$eval(`${scope} .react-flow__edge`, els =>
    Object.fromEntries(
      els.map(e => [
        e.getAttribute('data-id') || e.getAttribute('data-testid'),
        Array.from(e.classList).filter(c => c.startsWith('nf-')).join(' ')
      ])
    )
  );
}

const scenarios = {
  /** The canvas is open on FLOW_FILE; the test adds node NEW_ID from Python; time its arrival. */
  async live(browser) {
    // A workspace of its own per file: a shared one would restore the canvas of an earlier run,
    // whose nodes could pass for this file's before its own canvas (and room) is open.
    const workspace = `live-link-${process.env.FLOW_FILE.replace(/[^A-Za-z0-9]/g, '-')}`;
    const page = await openPage(browser, workspace, process.env.FLOW_FILE, { ready: '[data-nexusflow-editor]' });
    const expected = Number(process.env.EXPECT_NODES || 1);
    await page.waitForFunction(
      n => document.querySelectorAll('[data-nexusflow-editor] [data-node-id]').length >= n,
      expected,
      { timeout: TIMEOUT }
    );
    const before = Object.keys(await statesIn(page, '[data-nexusflow-editor]'));
    console.log(`READY ${Date.now()}`);
    const id = process.env.NEW_ID;
    const handle = await page.waitForFunction(
      nid => (document.querySelector(`[data-nexusflow-editor] [data-node-id="${nid}"]`) ? Date.now() : 0),
      id,
      { timeout: 15000, polling: 'raf' }
    );
    const appearedAt = await handle.jsonValue();
    log('node', id, 'appeared at', appearedAt);
    const edges = Number(process.env.EXPECT_EDGES || 0);
    if (edges) {
      await page.waitForFunction(
        n => document.querySelectorAll('[data-nexusflow-editor] .react-flow__edge').length >= n,
        edges,
        { timeout: 5000 }
      );
    }
    await page.waitForTimeout(800); // let the room's autosave write the file
    const after = await statesIn(page, '[data-nexusflow-editor]');
    const edgeCount = await page.$$eval('[data-nexusflow-editor] .react-flow__edge', els => els.length);
    await shot(page, 'live-link');
    return { before, after: Object.keys(after), appearedAt, edges: edgeCount, errors: page.errors };
  },

  /** Open NOTEBOOK; run its first SHOW_CELLS cells (they show the inline canvas), then the
   *  rest (they start a run the canvas follows); watch the nodes glow until the run ends. */
  async notebook(browser) {
    const page = await openPage(browser, 'notebook', process.env.NOTEBOOK, { ready: '.jp-Notebook' });
    const cellCount = await kernelReady(page);
    const show = Number(process.env.SHOW_CELLS);
    const scope = '.nf-inline';
    const expected = Number(process.env.EXPECT_NODES);
    const t0 = Date.now();
    log('kernel ready; running cells 0 ..', show - 1);
    await runCells(page, 0, show);
    await page.waitForFunction(
      ([s, n]) => document.querySelectorAll(`${s} [data-node-id]`).length >= n,
      [scope, expected],
      { timeout: 60000 }
    );
    const shownMs = Date.now() - t0;
    log('inline canvas shown after', shownMs, 'ms');
    // Record every state each node shows (the glow), sampled on every animation frame.
    await page.evaluate(s => {
      window.__nfSeen = {};
      const sample = () => {
        document.querySelectorAll(`${s} [data-node-id]`).forEach(e => {
          const id = e.getAttribute('data-node-id');
          const st = e.getAttribute('data-state');
          const seen = (window.__nfSeen[id] = window.__nfSeen[id] || []);
          if (seen[seen.length - 1] !== st) seen.push(st);
        });
        window.__nfTimer = requestAnimationFrame(sample);
      };
      sample();
    }, scope);
    log('running cells', show, '..', cellCount - 1);
    const t1 = Date.now();
    const rest = runCells(page, show, cellCount);
    await settled(page, scope, 1);
    const runMs = Date.now() - t1;
    await rest;
    const seen = await page.evaluate(() => {
      cancelAnimationFrame(window.__nfTimer);
      return window.__nfSeen;
    });
    const result = await statesIn(page, scope);
    await page.waitForFunction(s => document.querySelector(s)?.getAttribute('data-run-status'), scope, {
      timeout: 10000
    });
    const runStatus = await page.$eval(scope, e => e.getAttribute('data-run-status'));
    const glow = await page.$$eval(`${scope} [data-node-id]`, els =>
      Object.fromEntries(els.map(e => [e.getAttribute('data-node-id'), getComputedStyle(e).boxShadow]))
    );
    const outputs = await page.$$eval('.jp-OutputArea-output', els => els.map(e => e.textContent.slice(0, 300)));
    await page.$eval(scope, e => e.scrollIntoView({ block: 'center' }));
    await page.waitForTimeout(300);
    // How many nodes lie inside the canvas's visible pane, as rendered and after its own
    // "fit view" control is pressed.
    const visible = () =>
      page.$eval(scope, root => {
        const pane = root.querySelector('.react-flow').getBoundingClientRect();
        return Array.from(root.querySelectorAll('[data-node-id]')).filter(e => {
          const r = e.getBoundingClientRect();
          return r.left >= pane.left && r.right <= pane.right && r.top >= pane.top && r.bottom <= pane.bottom;
        }).length;
      });
    const visibleAsRendered = await visible();
    // The smallest text of a node title as drawn (font size times the canvas's zoom).
    const textPx = await page.$$eval(`${scope} [data-node-id]`, els =>
      Math.min(...els.map(e => parseFloat(getComputedStyle(e).fontSize) * (e.getBoundingClientRect().width / e.offsetWidth)))
    );
    await shot(page, 'notebook-widget-as-rendered');
    await page.click(`${scope} .react-flow__controls-fitview`);
    await page.waitForTimeout(500);
    const visibleAfterFit = await visible();
    // How many nodes React Flow draws: it hides a node (visibility: hidden) until it knows
    // the node's measured size, and its fit view skips such nodes.
    const drawn = await page.$$eval(`${scope} .react-flow__node`, els =>
      els.filter(e => getComputedStyle(e).visibility === 'visible').length
    );
    const screenshot = await shot(page, 'notebook-widget');
    return {
      states: result, seen, runStatus, shownMs, runMs, glow, outputs, visibleAsRendered,
      visibleAfterFit, drawn, textPx, screenshot, errors: page.errors
    };
  },

  /** The same run (RUN_ID, of FLOW_FILE) in the Lab panel and in a notebook's widget
   *  (NOTEBOOK attaches to it): describe each node element and edge of both. */
  async same(browser) {
    const expected = Number(process.env.EXPECT_NODES);
    const notebook = await openPage(browser, 'same-notebook', process.env.NOTEBOOK, { ready: '.jp-Notebook' });
    const cells = await kernelReady(notebook);
    await runCells(notebook, 0, cells);
    await settled(notebook, '.nf-inline', expected);

    const lab = await openPage(browser, 'same-lab', process.env.FLOW_FILE, { ready: '[data-nexusflow-editor]' });
    await lab.focus('select.nf-history'); // loads the run history
    await lab.waitForFunction(
      r => Array.from(document.querySelectorAll('select.nf-history option')).some(o => o.value === r),
      process.env.RUN_ID,
      { timeout: 10000 }
    );
    await lab.selectOption('select.nf-history', process.env.RUN_ID);
    await settled(lab, '[data-nexusflow-editor]', expected);
    // Nothing selected: a click on the pane's empty top-left corner (its centre may hold a
    // node, which the click would select).
    await lab.click('[data-nexusflow-editor] .react-flow__pane', { position: { x: 8, y: 8 } });
    await lab.waitForFunction(() => !document.querySelector('[data-nexusflow-editor] .nf-node.nf-selected'), null, {
      timeout: 5000
    });
    await notebook.waitForTimeout(600); // let the colour transitions end
    const result = {
      lab: await nodeSignatures(lab, '[data-nexusflow-editor]'),
      widget: await nodeSignatures(notebook, '.nf-inline'),
      labEdges: await edgeClasses(lab, '[data-nexusflow-editor]'),
      widgetEdges: await edgeClasses(notebook, '.nf-inline'),
      errors: [...lab.errors, ...notebook.errors]
    };
    await notebook.$eval('.nf-inline', e => e.scrollIntoView({ block: 'center' }));
    await shot(notebook, 'same-node-widget');
    await shot(lab, 'same-node-lab');
    return result;
  },

  /** NOTEBOOK shows a finished run's widget (cells before WAIT_CELL); click the CLICK nodes
   *  and read their details; then click LATE while WAIT_CELL keeps the kernel busy. */
  async details(browser) {
    const page = await openPage(browser, 'details', process.env.NOTEBOOK, { ready: '.jp-Notebook' });
    await kernelReady(page);
    const waitCell = Number(process.env.WAIT_CELL);
    await runCells(page, 0, waitCell);
    const scope = '.nf-inline';
    await settled(page, scope, Number(process.env.EXPECT_NODES));
    await page.$eval(scope, e => e.scrollIntoView({ block: 'start' }));
    const open = async id => {
      await page.click(`${scope} .react-flow__node[data-id="${id}"] .nf-node-title`);
      await page.waitForSelector(`${scope} .nf-logs[data-logs-node="${id}"] .nf-logs-body`, { timeout: 15000 });
      return page.$eval(`${scope} .nf-logs`, el => ({
        status: el.querySelector('.nf-logs-body').getAttribute('data-attempt-status'),
        error: el.querySelector('.nf-error-text')?.textContent ?? null,
        output: el.querySelector('[data-detail="output"]').textContent,
        input: el.querySelector('[data-detail="input"]').textContent,
        log: el.querySelector('[data-detail="log"]').textContent
      }));
    };
    const shown = {};
    for (const id of process.env.CLICK.split(',')) {
      shown[id] = await open(id);
      await shot(page, `details-${id}`);
    }
    const selected = await page.$$eval(`${scope} .nf-node.nf-selected`, els => els.map(e => e.getAttribute('data-node-id')));
    // Closing hides the panel; the widget shrinks back.
    const tall = await page.$eval(scope, e => e.getBoundingClientRect().height);
    await page.click(`${scope} .nf-logs .nf-close`);
    await page.waitForSelector(`${scope} .nf-logs`, { state: 'detached', timeout: 5000 });
    const short = await page.$eval(scope, e => e.getBoundingClientRect().height);

    // Clicked while a cell runs (the WAIT_CELL prints SLEEPING, then sleeps): ipykernel 7
    // answers the widget's comm message at once; a kernel that reads comm messages only
    // between cells would answer when the cell is done (the panel says it is waiting).
    let doneAt = null;
    const busy = runCells(page, waitCell, waitCell + 1).then(() => (doneAt = Date.now()));
    await page.waitForFunction(
      () => Array.from(document.querySelectorAll('.jp-OutputArea-output')).some(e => e.textContent.includes('SLEEPING')),
      null,
      { timeout: 10000 }
    );
    const late = process.env.LATE;
    const clickedAt = Date.now();
    await page.click(`${scope} .react-flow__node[data-id="${late}"] .nf-node-title`);
    await page.waitForSelector(`${scope} .nf-logs[data-logs-node="${late}"] .nf-logs-body`, { timeout: 30000 });
    const arrivedAt = Date.now();
    const lateLog = await page.$eval(`${scope} [data-detail="log"]`, e => e.textContent);
    await shot(page, 'details-while-busy');
    await busy;
    log('details clicked while cell', waitCell, 'ran arrived after', arrivedAt - clickedAt, 'ms; the cell ended',
      doneAt - arrivedAt, 'ms later');
    const pageText = await page.evaluate(() => document.body.innerText);
    return { shown, selected, tall, short, lateLog, clickedAt, arrivedAt, doneAt, pageText, errors: page.errors };
  }
};

await main(scenarios);
