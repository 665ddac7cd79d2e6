import { test } from 'node:test';
import assert from 'node:assert/strict';
import { flowEdges } from '../canvas/edges.js';
import { phase, publicState } from '../canvas/phase.js';
import { attemptsOf } from '../notebook/comm.js';
import { fitViewport, NODE_BOX } from '../notebook/fit.js';

test('the glow phase tells a retry from a first attempt', () => {
  assert.equal(phase(undefined), 'idle');
  assert.equal(phase({ state: 'running' }), 'running');
  assert.equal(phase({ state: 'running', attempt: 1 }), 'running');
  assert.equal(phase({ state: 'running', attempt: 2 }), 'retrying');
  assert.equal(phase({ state: 'scheduled', attempt: 3 }), 'retrying');
  assert.equal(phase({ state: 'scheduled', attempt: 1 }), 'scheduled');
  assert.equal(phase({ state: 'failed', attempt: 4 }), 'failed');
});

test('the public state folds the waiting states into queued', () => {
  assert.equal(publicState(undefined), 'idle');
  for (const s of ['pending', 'queued', 'scheduled']) {
    assert.equal(publicState({ state: s }), 'queued');
  }
  for (const s of ['running', 'succeeded', 'failed', 'skipped', 'canceled']) {
    assert.equal(publicState({ state: s }), s);
  }
  assert.equal(publicState({ state: 'something new' }), 'idle');
});

test('edges glow with their run: running target, skipped source, cycle, selection', () => {
  const edges = [
    { id: 'A-B', source: 'A', target: 'B' },
    { id: 'B-C', source: 'B', target: 'C', source_handle: 'true' },
    { id: 'C-D', source: 'C', target: 'D', label: 'then' }
  ];
  const runs = new Map([
    ['B', { state: 'running' }],
    ['C', { state: 'skipped' }]
  ]);
  const out = flowEdges(edges, runs, { selected: new Set(['A-B']), onCycles: new Set(['C', 'D']) });
  assert.deepEqual(
    out.map(e => [e.id, e.className, e.animated, e.selected, e.label, e.sourceHandle]),
    [
      ['A-B', 'nf-edge nf-edge-running', true, true, undefined, null],
      ['B-C', 'nf-edge', false, false, 'true', 'true'],
      ['C-D', 'nf-edge nf-edge-skipped nf-edge-problem', false, false, 'then', null]
    ]
  );
  assert.deepEqual(flowEdges(edges, new Map()).map(e => e.className), ['nf-edge', 'nf-edge', 'nf-edge']);
});

test('the notebook canvas fits every node into its area', () => {
  const nodes = [
    { id: 'A', type: 't', position: { x: 0, y: 0 } },
    { id: 'B', type: 't', position: { x: -150, y: 120 } },
    { id: 'C', type: 't', position: { x: 150, y: 240 } }
  ];
  const v = fitViewport(nodes, 800, 360)!;
  for (const n of nodes) {
    const left = n.position.x * v.zoom + v.x;
    const top = n.position.y * v.zoom + v.y;
    assert.ok(left >= 0 && left + NODE_BOX.width * v.zoom <= 800, `${n.id} fits across`);
    assert.ok(top >= 0 && top + NODE_BOX.height * v.zoom <= 360, `${n.id} fits down`);
  }
  assert.ok(v.zoom <= 1.25 && v.zoom >= 0.2);
  assert.equal(fitViewport(nodes, 0, 360), null); // an output area with no size yet
  assert.equal(fitViewport([], 800, 360), null);
});

test("the kernel's reply becomes attempts or an error with its message", () => {
  const attempt = { attempt: 1, status: 'succeeded', output: 42, log: 'hello' };
  assert.deepEqual(attemptsOf({ attempts: [attempt] }), [attempt]);
  assert.deepEqual(attemptsOf({}), []);
  assert.throws(() => attemptsOf({ error: 'no node X' }), /no node X/);
  assert.throws(() => attemptsOf(null), /no answer/);
});
