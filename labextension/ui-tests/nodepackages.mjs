// Browser scenario of node packages, run by pytest (tests/ui/test_node_packages_ui.py) against a
// live JupyterLab whose server and workers have the example package (and a broken one)
// installed: `node nodepackages.mjs package`. Prints `RESULT <json>`.
import { FILE, TIMEOUT, center, drag, log, main, openFlow, shot } from './common.mjs';

const scenarios = {
  /**
   * The package's types in the palette under their category with their icons; the broken
   * package's types listed with the reasons; Slugify dropped, shown in the inspector (icon,
   * package, docs link), configured, connected, run: it glows green.
   */
  async package(browser) {
    const page = await openFlow(browser, 'package', FILE, { ready: '[data-nexusflow-editor] [data-node-id="start"]' });
    const item = '[data-nexusflow-editor] [data-node-type="text.slugify"]';
    await page.waitForSelector(item, { timeout: TIMEOUT });

    const palette = await page.evaluate(() => {
      const ed = document.querySelector('[data-nexusflow-editor]');
      const entry = type => {
        const el = ed.querySelector(`[data-node-type="${type}"]`);
        if (!el) {
          return null;
        }
        const icon = el.querySelector('[data-icon]');
        return {
          category: el.closest('.nf-palette-group').querySelector('.nf-section').textContent,
          title: el.querySelector('.nf-palette-name').textContent,
          package: el.getAttribute('data-package'),
          icon: icon ? { kind: icon.getAttribute('data-icon'), text: icon.textContent, src: icon.getAttribute('src') } : null,
          iconWidth: icon ? icon.getBoundingClientRect().width : 0
        };
      };
      return {
        slugify: entry('text.slugify'),
        csv: entry('text.csv_parse'),
        ok: entry('broken.ok'),
        http: entry('http'),
        badSchema: entry('broken.bad_schema'),
        broken: Array.from(ed.querySelectorAll('[data-broken-type]')).map(el => ({
          type: el.getAttribute('data-broken-type'),
          reason: el.querySelector('[data-broken-reason]').textContent
        }))
      };
    });
    log('palette', JSON.stringify(palette).slice(0, 400));

    // Drop Slugify under the start node; the inspector opens on it.
    const pane = await page.waitForSelector('[data-nexusflow-editor] .react-flow__pane');
    const box = await pane.boundingBox();
    const start = await center(page, '.react-flow__node[data-id="start"]');
    await page.dragAndDrop(item, '[data-nexusflow-editor] .react-flow__pane', {
      targetPosition: { x: start.x - box.x, y: Math.min(box.height - 60, start.y - box.y + 170) }
    });
    await page.waitForFunction(() => document.querySelectorAll('[data-nexusflow-editor] [data-node-id]').length === 2, null, {
      timeout: 5000
    });
    const id = await page.$eval('[data-inspector-node]', e => e.getAttribute('data-inspector-node'));
    const inspector = await page.$eval('[data-inspector-node]', el => {
      const icon = el.querySelector('.nf-inspector-title [data-icon]');
      const docs = el.querySelector('[data-docs-link]');
      return {
        title: el.querySelector('.nf-inspector-title').textContent,
        icon: icon ? icon.textContent : null,
        package: el.querySelector('[data-inspector-package]')?.textContent ?? null,
        docs: docs ? { href: docs.getAttribute('href'), rel: docs.getAttribute('rel') } : null,
        fields: Array.from(el.querySelectorAll('[data-field]')).map(f => f.getAttribute('data-field'))
      };
    });
    log('inspector', JSON.stringify(inspector));
    await page.fill(`[data-inspector-node="${id}"] [data-field="text"] textarea`, "{{ inputs['start'] }}");
    await page.fill(`[data-inspector-node="${id}"] [data-field="separator"] input`, '_');

    // Connect start -> the new node, and run.
    const from = await center(page, '.react-flow__node[data-id="start"] .react-flow__handle.source');
    const to = await center(page, `.react-flow__node[data-id="${id}"] .react-flow__handle.target`);
    await drag(page, from, to);
    await page.waitForFunction(() => document.querySelectorAll('[data-nexusflow-editor] .react-flow__edge').length === 1, null, {
      timeout: 5000
    });
    const nodeIcon = await page.$eval(`.react-flow__node[data-id="${id}"] .nf-node-type`, el => el.textContent);
    await page.click('[data-nexusflow-editor] [data-action="run"]');
    await page.waitForFunction(
      () => {
        const els = Array.from(document.querySelectorAll('[data-nexusflow-editor] [data-node-id]'));
        return els.length === 2 && els.every(e => ['succeeded', 'failed', 'skipped'].includes(e.getAttribute('data-state')));
      },
      null,
      { timeout: 60000 }
    );
    const states = await page.$$eval('[data-nexusflow-editor] [data-node-id]', els =>
      Object.fromEntries(els.map(e => [e.getAttribute('data-node-id'), { state: e.getAttribute('data-state'), cls: e.className }]))
    );
    await page.waitForTimeout(500);
    await shot(page, 'node-package');
    await page.context().close();
    return { palette, inspector, id, nodeIcon, states, errors: page.errors };
  }
};

await main(scenarios);
