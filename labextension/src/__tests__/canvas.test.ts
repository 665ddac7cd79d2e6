import { test } from 'node:test';
import assert from 'node:assert/strict';
import { flowEdges } from '../canvas/edges.js';
import { phase, publicState } from '../canvas/phase.js';
import { coveredSides, freeArea, revealShift } from '../canvas/uncovered.js';
import { attemptsOf } from '../notebook/comm.js';
import { fitViewport, MIN_READABLE_ZOOM, NODE_BOX } from '../notebook/fit.js';

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

test('a flow too big for the notebook canvas stays readable: a floor on the zoom, from its top', () => {
  // 1 -> 7 -> 1, as the notebook lays it out: 7 nodes side by side are 1540 px wide
  const nodes = [
    { id: 'A', type: 't', position: { x: 0, y: 0 } },
    ...[0, 1, 2, 3, 4, 5, 6].map(i => ({
      id: `M${i}`,
      type: 't',
      position: { x: (i - 3) * 220, y: 120 }
    })),
    { id: 'Z', type: 't', position: { x: 0, y: 240 } }
  ];
  const v = fitViewport(nodes, 800, 360)!;
  assert.equal(v.zoom, MIN_READABLE_ZOOM); // fitting all would take ~0.4: 13 px text at ~5 px
  assert.ok(13 * v.zoom >= 9.5);
  assert.ok(v.y >= 0 && 240 * v.zoom + v.y + NODE_BOX.height * v.zoom <= 360); // fits down
  assert.ok(Math.abs(0 * v.zoom + v.x + (NODE_BOX.width * v.zoom) / 2 - 400) < 1); // centered
  // a chain of 9, too tall at that zoom: it starts with its first node, at the top
  const chain = [0, 1, 2, 3, 4, 5, 6, 7, 8].map(i => ({
    id: `N${i}`,
    type: 't',
    position: { x: 0, y: i * 120 }
  }));
  const t = fitViewport(chain, 800, 360)!;
  assert.equal(t.zoom, MIN_READABLE_ZOOM);
  assert.equal(0 * t.zoom + t.y, 12);
});

test("the kernel's reply becomes attempts or an error with its message", () => {
  const attempt = { attempt: 1, status: 'succeeded', output: 42, log: 'hello' };
  assert.deepEqual(attemptsOf({ attempts: [attempt] }), [attempt]);
  assert.deepEqual(attemptsOf({}), []);
  assert.throws(() => attemptsOf({ error: 'no node X' }), /no node X/);
  assert.throws(() => attemptsOf(null), /no answer/);
});

test('the controls and a minimap over the canvas keep a strip free; a node is moved out', () => {
  const canvas = { x: 100, y: 50, width: 800, height: 500 };
  const controls = { x: 115, y: 420, width: 26, height: 115 }; // bottom-left, narrow and tall
  const minimap = { x: 685, y: 435, width: 200, height: 100 }; // bottom-right, wide
  const beside = { x: 920, y: 50, width: 160, height: 110 }; // outside the canvas: ignored
  const sides = coveredSides(canvas, [controls, minimap, beside]);
  assert.deepEqual(sides, { top: 0, right: 0, bottom: 127, left: 53 });
  const free = freeArea(canvas, sides);
  assert.deepEqual(free, { x: 153, y: 50, width: 747, height: 373 });
  // a node under the controls moves right and up; one inside stays
  assert.deepEqual(revealShift({ x: 110, y: 440, width: 180, height: 56 }, free), { dx: 43, dy: -73 });
  assert.deepEqual(revealShift({ x: 300, y: 100, width: 180, height: 56 }, free), { dx: 0, dy: 0 });
});
