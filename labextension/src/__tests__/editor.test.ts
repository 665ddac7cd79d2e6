import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { INodeType } from '../api.js';
import type { NxNode } from '../canvas/nodeview.js';
import type { IFlow } from '../graph.js';
import { copySelection, pasteElements } from '../editor/clipboard.js';
import { connectionRefusal, edgeForConnection } from '../editor/connect.js';
import { shortcutOf } from '../editor/keyboard.js';
import { allInside, freeSpot, insideView, newNode, NODE_SIZE, snapped } from '../editor/layout.js';
import { deriveNodes, ICanvasNodeInputs } from '../editor/nodes.js';
import { peersByNode, readPresence } from '../editor/presence.js';
import { configProblem, drawableEdges, flowProblems } from '../editor/problems.js';
import { defaultInputs, paramsSchema } from '../editor/inputs.js';
import { applySelectChanges } from '../editor/selection.js';
import { DEFAULT_SETTINGS } from '../editor/settings.js';

const diamond = (): IFlow => ({
  schema: 1,
  nodes: [
    { id: 'A', type: 'transform', position: { x: 0, y: 0 } },
    { id: 'B', type: 'http', position: { x: -150, y: 120 } },
    { id: 'C', type: 'condition', position: { x: 150, y: 120 } },
    { id: 'D', type: 'transform', position: { x: 0, y: 240 } }
  ],
  edges: [
    { id: 'A-B', source: 'A', target: 'B' },
    { id: 'A-C', source: 'A', target: 'C' },
    { id: 'B-D', source: 'B', target: 'D' },
    { id: 'C-D', source: 'C', target: 'D', source_handle: 'true' }
  ]
});

test('selection changes apply to the set; other changes leave it as it is', () => {
  const prev = new Set(['A']);
  assert.equal(applySelectChanges(prev, [{ type: 'position', id: 'A' }]), prev);
  const next = applySelectChanges(prev, [
    { type: 'select', id: 'B', selected: true },
    { type: 'select', id: 'A', selected: false }
  ]);
  assert.deepEqual([...next], ['B']);
  assert.deepEqual([...prev], ['A']); // never changed in place
});

test('problems name dangling edges, cycles and unknown node types', () => {
  const flow = diamond();
  flow.edges.push({ id: 'D-X', source: 'D', target: 'X' });
  assert.deepEqual(drawableEdges(flow).map(e => e.id), ['A-B', 'A-C', 'B-D', 'C-D']);
  assert.deepEqual(flowProblems(flow, new Set(), null), ['edge D-X points at a missing node (X)']);
  const types = new Map([['transform', {}], ['http', {}]]);
  assert.deepEqual(flowProblems(diamond(), new Set(['B', 'D']), types), [
    'a cycle runs through B, D: remove one of its edges',
    "node C has the unknown type 'condition'"
  ]);
});

test('a connection that closes a cycle is refused with the cycle; a duplicate is not added', () => {
  const flow = diamond();
  assert.equal(
    connectionRefusal(flow.edges, 'D', 'A'),
    'Cannot connect D → A: it would make the cycle D → A → B → D.'
  );
  assert.equal(connectionRefusal(flow.edges, 'B', 'B'), 'Cannot connect B to itself: a flow has no cycles.');
  assert.deepEqual(edgeForConnection(flow, flow.edges, { source: 'A', target: 'B' }), {
    refused: 'A is already connected to B.',
    kind: 'info'
  });
  assert.deepEqual(edgeForConnection(flow, flow.edges, { source: 'C', target: 'D', sourceHandle: 'false' }), {
    edge: { id: 'C.false-D', source: 'C', target: 'D', source_handle: 'false' }
  });
  assert.deepEqual(edgeForConnection(flow, flow.edges, { source: 'B', target: 'C', sourceHandle: null }), {
    edge: { id: 'B-C', source: 'B', target: 'C' }
  });
});

test('paste gives fresh ids, keeps the edges between the copies and moves them 40 px', () => {
  const flow = diamond();
  const clip = copySelection(flow, new Set(['B', 'D']));
  assert.deepEqual(clip.nodes.map(n => n.id), ['B', 'D']);
  assert.deepEqual(clip.edges.map(e => e.id), ['B-D']);
  const pasted = pasteElements(clip, flow);
  assert.deepEqual(pasted.nodes.map(n => [n.id, n.position]), [
    ['B_1', { x: -110, y: 160 }],
    ['D_1', { x: 40, y: 280 }]
  ]);
  assert.deepEqual(pasted.edges, [{ id: 'B_1-D_1', source: 'B_1', target: 'D_1' }]);
  // Pasting the copies again does not take their ids.
  flow.nodes.push(...pasted.nodes);
  assert.deepEqual(pasteElements(clip, flow).nodes.map(n => n.id), ['B_2', 'D_2']);
});

test('shortcuts need Ctrl or Cmd and never fire in a text field', () => {
  const press = (key: string, extra: Partial<Parameters<typeof shortcutOf>[0]> = {}) =>
    shortcutOf({ key, ctrlKey: true, metaKey: false, shiftKey: false, inTextField: false, ...extra });
  assert.equal(press('z'), 'undo');
  assert.equal(press('Z', { shiftKey: true }), 'redo');
  assert.equal(press('y'), 'redo');
  assert.equal(press('c', { ctrlKey: false, metaKey: true }), 'copy');
  assert.equal(press('v'), 'paste');
  assert.equal(press('a'), 'selectAll');
  assert.equal(press('x'), null);
  assert.equal(press('z', { ctrlKey: false }), null);
  assert.equal(press('z', { inTextField: true }), null);
});

test('a new node snaps to the grid and starts with its schema defaults', () => {
  assert.deepEqual(snapped({ x: 31, y: 49 }, DEFAULT_SETTINGS), { x: 40, y: 40 });
  assert.deepEqual(snapped({ x: 31, y: 49 }, { ...DEFAULT_SETTINGS, snapToGrid: false }), { x: 31, y: 49 });
  // Double-click: centred when free, else the nearest free place; never on a node.
  assert.deepEqual(freeSpot({ x: 100, y: 100 }, []), { x: 10, y: 72 });
  const taken = [{ x: 0, y: 60, width: 180, height: 56 }];
  const spot = freeSpot({ x: 100, y: 100 }, taken);
  const box = { ...spot, ...NODE_SIZE };
  assert.ok(box.x >= 180 + 24 || box.x + box.width + 24 <= 0 || box.y >= 116 + 24 || box.y + box.height + 24 <= 60, JSON.stringify(spot));
  const many = [taken[0]];
  for (let i = 0; i < 12; i++) {
    const p = freeSpot({ x: 100, y: 100 }, many);
    assert.ok(!many.some(t => p.x < t.x + t.width && t.x < p.x + 180 && p.y < t.y + t.height && t.y < p.y + 56));
    many.push({ ...p, ...NODE_SIZE });
  }
  // A drop near the view's left edge keeps the whole node inside the view.
  const view = { x: 0, y: 0, width: 800, height: 600 };
  assert.deepEqual(insideView({ x: -70, y: 300 }, view), { x: 12, y: 300 });
  assert.deepEqual(insideView({ x: 790, y: 590 }, view), { x: 800 - 180 - 12, y: 600 - 56 - 12 });
  assert.ok(allInside([{ x: 12, y: 300, width: 180, height: 56 }], view));
  assert.ok(!allInside([{ x: 700, y: 300, width: 180, height: 56 }], view));
  const type = {
    type: 'transform',
    config_schema: { properties: { expression: { type: 'string', default: '1' }, other: { type: 'string' } } }
  } as unknown as INodeType;
  assert.deepEqual(newNode(type, diamond(), { x: 11, y: 9 }, DEFAULT_SETTINGS), {
    id: 'transform_1', type: 'transform', position: { x: 20, y: 0 }, config: { expression: '1' }
  });
});

test('canvas nodes keep their object while their look is unchanged, and a dragged position', () => {
  const inputs: ICanvasNodeInputs = {
    flow: diamond(), types: null, runs: new Map(), peers: new Map(), onCycles: new Set(), selected: new Set()
  };
  const first = deriveNodes([], inputs);
  assert.deepEqual(first.map(n => n.id), ['A', 'B', 'C', 'D']);
  const same = deriveNodes(first, { ...inputs, flow: diamond() });
  assert.ok(same.every((n, i) => n === first[i]), 'an equal document reuses every node');
  const ran = deriveNodes(first, { ...inputs, runs: new Map([['B', { state: 'running' }]]) });
  assert.deepEqual(ran.map((n, i) => n === first[i]), [true, false, true, true]);
  assert.equal(ran[1].data.run?.state, 'running');
  const dragging: NxNode[] = first.map(n => (n.id === 'A' ? { ...n, dragging: true, position: { x: 5, y: 5 } } : n));
  const moved = diamond();
  moved.nodes[0].position = { x: 300, y: 300 }; // a collaborator's move arrives mid-drag
  assert.deepEqual(deriveNodes(dragging, { ...inputs, flow: moved })[0].position, { x: 5, y: 5 });
  const selected = deriveNodes(first, { ...inputs, selected: new Set(['C']), onCycles: new Set(['D']) });
  assert.equal(selected[2].selected, true);
  assert.equal(selected[3].data.problem, 'on a cycle');
});

test('presence lists the other clients and who has which node selected', () => {
  const states = new Map<number, any>([
    [1, { user: { name: 'me' } }],
    [2, { user: { display_name: 'Ada', color: '#f00' }, nexusflow: { selected: ['A', 'B'] } }],
    [3, null],
    [4, { user: { username: 'bob' }, nexusflow: { selected: ['B'] } }],
    [5, {}], // the server's document, or a page before JupyterLab knows its user: no one
    [6, { nexusflow: { selected: ['C'] } }],
    [7, { user: {} }]
  ]);
  const peers = readPresence(states, 1);
  assert.deepEqual(peers.map(p => p.clientId), [2, 4]);
  assert.deepEqual(Object.fromEntries(peersByNode(peers)), {
    A: [{ name: 'Ada', color: '#f00' }],
    B: [{ name: 'Ada', color: '#f00' }, { name: 'bob', color: '#888' }]
  });
});

test('a node whose config its schema refuses is marked with the first fault', () => {
  const schema = {
    type: 'object',
    properties: { expression: { type: 'string', minLength: 1 }, retries: { type: 'integer', minimum: 0 } },
    required: ['expression']
  };
  assert.equal(configProblem(schema, {}), 'expression is required');
  assert.equal(configProblem(schema, { retries: -1 }), 'expression is required (and 1 more)');
  assert.equal(configProblem(schema, { expression: '1' }), undefined);
  assert.equal(configProblem(undefined, {}), undefined); // type unknown: flagged elsewhere
});

test('run inputs are a form from the params: defaults filled, required without one', () => {
  const params = {
    n: { type: 'integer', default: 3 },
    name: { type: 'string', description: 'who' },
    mode: { type: 'string', enum: ['fast', 'slow'], default: 'fast' }
  };
  const schema = paramsSchema(params as any);
  assert.deepEqual(schema.required, ['name']);
  assert.equal(schema.properties.mode.enum.length, 2);
  assert.deepEqual(defaultInputs(params as any), { n: 3, mode: 'fast' });
});
