// Browser scenario of the Connections panel in the canvas toolbar (issue #14 item 2), run by
// pytest (tests/ui/test_canvas_connections.py): `node connections.mjs add`. Prints `RESULT <json>`.
import { main, openPage, rest, shot, waitForNodes } from './common.mjs';

const TIMEOUT = 30000;

const scenarios = {
  /** Add a PostgreSQL connection in the form (with its password), see it listed without the
   *  password, Test it: the server connects. */
  async add(browser) {
    const name = process.env.CONN_NAME;
    const password = process.env.CONN_PASSWORD;
    const page = await openPage(browser, 'connections');
    await waitForNodes(page, 1);
    await page.click('[data-action="connections"]');
    await page.waitForSelector('[data-connections]', { timeout: TIMEOUT });
    await page.click('[data-action="connection-add"]');
    await page.fill('[data-connection-form] input[name="name"]', name);
    await page.selectOption('[data-connection-form] select[name="kind"]', 'postgres');
    await page.fill('[data-connection-form] input[name="url"]', process.env.CONN_URL);
    await page.fill('[data-connection-form] input[name="password"]', password);
    await page.click('[data-action="connection-save"]');
    const row = `[data-connection="${name}"]`;
    await page.waitForSelector(row, { timeout: TIMEOUT });
    const listed = await page.$eval(row, e => ({ text: e.textContent, kind: e.getAttribute('data-kind'), env: e.getAttribute('data-env') }));
    await page.click(`${row} [data-action="connection-test"]`);
    await page.waitForFunction(
      r => {
        const el = document.querySelector(`${r} [data-test-ok]`);
        return el && !el.textContent.includes('testing');
      },
      row,
      { timeout: TIMEOUT }
    );
    const tested = await page.$eval(`${row} [data-test-ok]`, e => ({ ok: e.getAttribute('data-test-ok'), text: e.textContent }));
    // A refusal is shown with the server's message (an http connection without a URL scheme).
    await page.click('[data-action="connection-add"]');
    await page.fill('[data-connection-form] input[name="name"]', `${name}_bad`);
    await page.selectOption('[data-connection-form] select[name="kind"]', 'http');
    await page.fill('[data-connection-form] input[name="url"]', 'not a url');
    await page.click('[data-action="connection-save"]');
    await page.waitForSelector('[data-connections-error]', { timeout: TIMEOUT });
    const refused = await page.$eval('[data-connections-error]', e => e.textContent);
    await shot(page, 'connections-tested');
    const html = await page.$eval('[data-connections]', e => e.innerHTML);
    const stored = await rest('GET', 'connections');
    return {
      listed, tested, refused, passwordShown: html.includes(password),
      stored: stored.connections.filter(c => c.name.startsWith(name)).map(c => c.name), errors: page.errors
    };
  }
};

await main(scenarios);
