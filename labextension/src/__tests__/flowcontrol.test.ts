import { test } from 'node:test';
import assert from 'node:assert/strict';
import { phase, publicState, PHASE_COLORS } from '../canvas/phase.js';
import { detailsKey } from '../editor/rundetails.js';

test('a node waiting for a decision, a callback or a sub-flow glows as waiting', () => {
  assert.equal(publicState({ state: 'waiting' }), 'waiting');
  assert.equal(phase({ state: 'waiting', attempt: 1 }), 'waiting');
  assert.ok(PHASE_COLORS.waiting);
});

test('run details are asked for only when a waiting or sub-flow node changes', () => {
  const nodes = [
    { id: 'A', type: 'transform' },
    { id: 'ask', type: 'approval' },
    { id: 'S', type: 'subflow' }
  ];
  const runs = new Map([
    ['A', { state: 'succeeded' }],
    ['ask', { state: 'waiting' }]
  ]);
  assert.equal(detailsKey(null, nodes, runs), null);
  assert.equal(detailsKey('r1', nodes, runs), 'r1|ask:waiting');
  runs.set('A', { state: 'failed' }); // a plain node changing does not ask again
  assert.equal(detailsKey('r1', nodes, runs), 'r1|ask:waiting');
  runs.set('S', { state: 'waiting' });
  assert.equal(detailsKey('r1', nodes, runs), 'r1|ask:waiting,S:waiting');
  assert.equal(detailsKey('r1', [{ id: 'A', type: 'transform' }], runs), null);
});
