import { test } from 'node:test';
import assert from 'node:assert/strict';
import { phase, publicState, PHASE_COLORS } from '../canvas/phase.js';
import { detailsKey } from '../editor/rundetails.js';
import { childFlowPath } from '../editor/subflowpath.js';

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

test('a child run’s flow file is found from the top run’s source and the canvas’s path', () => {
  // A run started on the canvas: its source is the flow's path; sub-flow paths from the root.
  assert.deepEqual(childFlowPath('calls.nxflow', 'calls.nxflow', 'lib/failing.nxflow'), {
    path: 'lib/failing.nxflow'
  });
  assert.deepEqual(childFlowPath('proj/calls.nxflow', 'proj/calls.nxflow', 'proj/lib/a.nxflow'), {
    path: 'proj/lib/a.nxflow'
  });
  // Started from the flow's folder (the CLI there): relative to that folder.
  assert.deepEqual(childFlowPath('proj/calls.nxflow', 'calls.nxflow', './lib/a.nxflow'), { path: 'proj/lib/a.nxflow' });
  // Started in a notebook (an absolute source): the flow's folder is taken as its directory.
  assert.deepEqual(childFlowPath('proj/calls.nxflow', '/home/u/proj/calls.nxflow', '../b.nxflow'), { path: 'b.nxflow' });
  // No file (a stored workflow), or one outside the server's folder: the reason, no path.
  assert.match(childFlowPath('calls.nxflow', 'calls.nxflow', null).reason ?? '', /stored workflow/);
  assert.match(childFlowPath('calls.nxflow', 'calls.nxflow', '../up.nxflow').reason ?? '', /outside/);
  assert.equal(childFlowPath('calls.nxflow', 'calls.nxflow', '../up.nxflow').path, undefined);
});
