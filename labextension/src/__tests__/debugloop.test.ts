import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseTestInputs } from '../editor/debug.js';
import { envChoice, setEnvChoice } from '../editor/envchoice.js';
import { cacheTtl } from '../editor/inspector.js';
import { detailsKey, withDetails } from '../editor/rundetails.js';
import type { INodeRun } from '../canvas/types.js';

test('run details are asked for when the run ends, not as cached or pinned nodes change', () => {
  const nodes = [
    { id: 'A', type: 'transform' },
    { id: 'C', type: 'http', cache: { ttl_s: 60 } },
    { id: 'P', type: 'transform', pin: { output: 1 } },
    { id: 'W', type: 'approval' }
  ];
  const runs = new Map<string, INodeRun>([['A', { state: 'succeeded' }]]);
  assert.equal(detailsKey('r1', nodes, runs), null);
  assert.equal(detailsKey('r1', nodes, runs, 'running'), null);
  assert.equal(detailsKey('r1', nodes, runs, 'succeeded'), 'r1|$run:succeeded');
  // Their success events carry cached_from / pinned: no GET while the run goes on.
  runs.set('C', { state: 'succeeded', cachedFrom: { run_id: 'r0', node_id: 'C' } });
  runs.set('P', { state: 'succeeded', pinned: true });
  assert.equal(detailsKey('r1', nodes, runs, 'running'), null);
  runs.set('W', { state: 'waiting' });
  assert.equal(detailsKey('r1', nodes, runs, 'running'), 'r1|W:waiting');
});

test('a node served from the cache or by its pin carries it into the canvas', () => {
  const runs = new Map<string, INodeRun>([
    ['A', { state: 'succeeded', attempt: 1 }],
    ['B', { state: 'succeeded', attempt: 1 }]
  ]);
  assert.equal(withDetails(runs, new Map()), runs); // nothing to add: the same map
  const out = withDetails(
    runs,
    new Map([
      ['A', { cachedFrom: { run_id: 'r0', node_id: 'A' } }],
      ['B', { pinned: true }],
      ['gone', { pinned: true }]
    ])
  );
  assert.deepEqual(out.get('A'), {
    state: 'succeeded', attempt: 1, cachedFrom: { run_id: 'r0', node_id: 'A' }, pinned: false
  });
  assert.deepEqual(out.get('B'), { state: 'succeeded', attempt: 1, cachedFrom: null, pinned: true });
  assert.equal(out.has('gone'), false);
  assert.equal(runs.get('A')!.cachedFrom, undefined); // the events' map is left alone
});

test('test inputs: empty means the latest run, otherwise a JSON object', () => {
  assert.deepEqual(parseTestInputs('  '), {});
  assert.deepEqual(parseTestInputs('{"fetch": {"n": 2}}'), { inputs: { fetch: { n: 2 } } });
  assert.match(parseTestInputs('{"fetch": ').error!, /not JSON/);
  assert.match(parseTestInputs('[1]').error!, /JSON object/);
  assert.match(parseTestInputs('3').error!, /JSON object/);
});

test('a node cache TTL is read from cache.ttl_s only', () => {
  assert.equal(cacheTtl({ id: 'a', type: 't', cache: { ttl_s: 30 } }), 30);
  assert.equal(cacheTtl({ id: 'a', type: 't' }), undefined);
  assert.equal(cacheTtl({ id: 'a', type: 't', cache: { ttl_s: '30' } }), undefined);
});

test('the environment picked beside Run is the one Test node uses, per flow file', () => {
  assert.equal(envChoice('a.nxflow'), '');
  const seen: string[] = [];
  setEnvChoice('a.nxflow', 'prod');
  seen.push(envChoice('a.nxflow'), envChoice('b.nxflow'));
  assert.deepEqual(seen, ['prod', '']);
  setEnvChoice('a.nxflow', '');
  assert.equal(envChoice('a.nxflow'), '');
});
