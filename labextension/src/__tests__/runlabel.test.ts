import { test } from 'node:test';
import assert from 'node:assert/strict';
import { durationLabel, historyLabel, whenLabel } from '../editor/runlabel.js';

const NOW = new Date(2026, 10, 26, 16, 30, 0).getTime();
const ago = (ms: number) => new Date(NOW - ms).toISOString();

test('the history label: id, status, when, how long, trigger, env unless dev', () => {
  const run = {
    run_id: '1a2b3c4d-0000-4000-8000-000000000000', status: 'succeeded',
    started_at: ago(5 * 60_000), ended_at: ago(5 * 60_000 - 72_000), trigger: 'schedule', env: 'prod'
  };
  assert.equal(historyLabel(run, NOW), '1a2b3c4d · succeeded · 5 min ago · 1m 12s · schedule · prod');
  assert.equal(historyLabel({ ...run, env: 'dev', trigger: 'manual' }, NOW),
    '1a2b3c4d · succeeded · 5 min ago · 1m 12s · manual');
  // still running: no duration; not started yet: no time either
  assert.equal(historyLabel({ ...run, status: 'running', ended_at: null, trigger: 'webhook', env: 'dev' }, NOW),
    '1a2b3c4d · running · 5 min ago · webhook');
  assert.equal(historyLabel({ run_id: run.run_id, status: 'queued', started_at: null, trigger: 'notebook' }, NOW),
    '1a2b3c4d · queued · notebook');
});

test('when: relative within a day, else a short local date', () => {
  assert.equal(whenLabel(NOW - 20_000, NOW), 'just now');
  assert.equal(whenLabel(NOW - 59 * 60_000, NOW), '59 min ago');
  assert.equal(whenLabel(NOW - 3 * 3_600_000 - 5, NOW), '3 h ago');
  assert.equal(whenLabel(new Date(2026, 0, 5, 9, 7).getTime(), NOW), 'Jan 5 09:07');
  assert.equal(whenLabel(new Date(2025, 11, 31, 23, 59).getTime(), NOW), 'Dec 31 2025 23:59');
});

test('durations read at a glance', () => {
  assert.equal(durationLabel(850), '850 ms');
  assert.equal(durationLabel(42_000), '42s');
  assert.equal(durationLabel(185_000), '3m 05s');
  assert.equal(durationLabel(2 * 3_600_000 + 7 * 60_000), '2h 07m');
});
