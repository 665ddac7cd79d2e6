import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NxFlowDoc } from '../model.js';
import { dumpsCanonical, IFlow } from '../graph.js';
import { laidOut, summary } from '../editor/proposal.js';
import { isSecretOnly } from '../editor/schema.js';

const proposal: IFlow = {
  schema: 1,
  name: 'orders',
  nodes: [
    { id: 'fetch', type: 'http', config: { url: 'https://api.example.com/orders' } },
    { id: 'many', type: 'condition', config: { expression: 'len(inputs["fetch"]["json"]) > 10' } },
    { id: 'sum', type: 'ai', config: { model: 'm', prompt: 'Summarize' } },
    { id: 'log', type: 'ai', config: { model: 'm', prompt: 'Log' } }
  ],
  edges: [
    { id: 'fetch-many', source: 'fetch', target: 'many' },
    { id: 'many-sum', source: 'many', target: 'sum', source_handle: 'true' },
    { id: 'many-log', source: 'many', target: 'log', source_handle: 'false' }
  ]
} as IFlow;

test('a proposal is laid out top-down, parents above children', () => {
  const flow = laidOut(proposal);
  const y = new Map(flow.nodes.map(n => [n.id, n.position!.y]));
  assert.ok(y.get('fetch')! < y.get('many')! && y.get('many')! < y.get('sum')!);
  assert.equal(y.get('sum'), y.get('log'));
  assert.equal(proposal.nodes[0].position, undefined); // the proposal itself is not changed
});

test('a proposal is summarized in a few words', () => {
  assert.equal(summary(proposal), '4 nodes (http, condition, ai ×2), 3 edges');
});

test('accepting replaces the whole flow in one undo step, and undo brings the old one back', () => {
  const doc = new NxFlowDoc();
  const before = { schema: 1, name: 'old', nodes: [{ id: 'X', type: 'transform', config: { expression: '1' } }], edges: [] };
  doc.setSource(dumpsCanonical(before));
  doc.updateNode('X', { label: 'edited' }); // an edit of the user's own
  doc.undoManager.stopCapturing();
  doc.replaceFlow(laidOut(proposal));
  assert.deepEqual(Array.from(doc.nodes.keys()).sort(), ['fetch', 'log', 'many', 'sum']);
  assert.equal(doc.toFlow().name, 'orders');
  assert.equal(doc.edges.get('many-sum')!.source_handle, 'true');
  doc.undo();
  assert.deepEqual(Array.from(doc.nodes.keys()), ['X']);
  assert.equal(doc.node('X')!.label, 'edited'); // one step: the user's edit is still there
  assert.equal(doc.toFlow().name, 'old');
  doc.redo();
  assert.equal(doc.nodes.size, 4);
});

test('a field that takes only a stored secret is told apart', () => {
  const ref = { type: 'object', required: ['$secret'], properties: { $secret: { type: 'string' } } };
  assert.equal(isSecretOnly(ref), true);
  assert.equal(isSecretOnly({ anyOf: [{ type: 'string' }, ref] }), false);
  assert.equal(isSecretOnly({ type: 'object', properties: { a: {}, $secret: {} } }), false);
});
