import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  canonicalFlow,
  cycleIfConnected,
  dumpsCanonical,
  edgeIdFor,
  freshId,
  layoutPositions,
  nodesOnCycles,
  structuralProblem
} from '../graph.js';

const diamond = [
  { source: 'A', target: 'B' },
  { source: 'A', target: 'C' },
  { source: 'B', target: 'D' },
  { source: 'C', target: 'D' }
];

test('an edge that closes a cycle is named with the whole cycle', () => {
  assert.deepEqual(cycleIfConnected(diamond, 'D', 'A'), ['D', 'A', 'B', 'D']);
  assert.deepEqual(cycleIfConnected(diamond, 'B', 'B'), ['B', 'B']);
  assert.equal(cycleIfConnected(diamond, 'B', 'C'), null);
  assert.equal(cycleIfConnected(diamond, 'A', 'D'), null);
});

test('nodes on cycles are found, and only those', () => {
  const edges = [...diamond, { source: 'D', target: 'B' }, { source: 'E', target: 'E' }];
  assert.deepEqual([...nodesOnCycles(['A', 'B', 'C', 'D', 'E'], edges)].sort(), ['B', 'D', 'E']);
  assert.equal(nodesOnCycles(['A', 'B', 'C', 'D'], diamond).size, 0);
});

test('canonical text matches the Python serializer', () => {
  const flow = {
    nodes: [
      { position: { y: 2, x: 1 }, type: 'http', id: 'b', zeta: true },
      { id: 'a', type: 'transform', config: { z: 1, a: [{ y: 1, b: 'é' }] } }
    ],
    edges: [{ target: 'b', source: 'a', id: 'a-b', source_handle: 'true' }],
    name: 'x',
    schema: 1
  };
  const text = dumpsCanonical(flow);
  // The same bytes json.dumps(canonical_document(flow), indent=2, ensure_ascii=False) gives.
  assert.equal(
    text,
    `{
  "schema": 1,
  "name": "x",
  "nodes": [
    {
      "id": "a",
      "type": "transform",
      "config": {
        "a": [
          {
            "b": "é",
            "y": 1
          }
        ],
        "z": 1
      }
    },
    {
      "id": "b",
      "type": "http",
      "position": {
        "x": 1,
        "y": 2
      },
      "zeta": true
    }
  ],
  "edges": [
    {
      "id": "a-b",
      "source": "a",
      "source_handle": "true",
      "target": "b"
    }
  ]
}
`
  );
  assert.equal(dumpsCanonical(canonicalFlow(JSON.parse(text))), text);
});

test('structural problems are named with a pointer', () => {
  assert.match(structuralProblem([])!, /JSON object/);
  assert.equal(structuralProblem({ nodes: {} }), '/nodes must be a list');
  assert.match(structuralProblem({ nodes: [{ id: 'a' }, { id: 'a' }] })!, /duplicate id 'a'/);
  assert.equal(structuralProblem({ schema: 1, nodes: [], edges: [] }), null);
});

test('fresh ids and edge ids do not collide and stay schema-safe', () => {
  assert.equal(freshId('http', new Set(['http_1'])), 'http_2');
  assert.match(freshId('my type!', new Set()), /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/);
  assert.equal(edgeIdFor('C', 'D', 'true', new Set()), 'C.true-D');
  assert.equal(edgeIdFor('A', 'B', null, new Set(['A-B'])), 'A-B-2');
});

test('auto-layout puts parents above children', () => {
  const pos = layoutPositions(['A', 'B', 'C', 'D'].map(id => ({ id })), diamond);
  assert.ok(pos.get('A')!.y < pos.get('B')!.y);
  assert.ok(pos.get('B')!.y < pos.get('D')!.y);
  assert.equal(pos.get('B')!.y, pos.get('C')!.y);
});
