import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as Y from 'yjs';
import { NxFlowDoc } from '../model.js';
import { dumpsCanonical } from '../graph.js';

const flow = {
  schema: 1,
  name: 'two',
  nodes: [
    { id: 'A', type: 'transform', position: { x: 0, y: 0 }, config: { expression: '1' } },
    { id: 'B', type: 'transform', position: { x: 0, y: 120 }, config: { expression: '2' } }
  ],
  edges: [{ id: 'A-B', source: 'A', target: 'B' }]
};

function connect(a: NxFlowDoc, b: NxFlowDoc): void {
  // Relay updates both ways, as the collaboration server does, with a remote origin.
  a.ydoc.on('update', (u: Uint8Array, origin: unknown) => origin !== 'remote' && Y.applyUpdate(b.ydoc, u, 'remote'));
  b.ydoc.on('update', (u: Uint8Array, origin: unknown) => origin !== 'remote' && Y.applyUpdate(a.ydoc, u, 'remote'));
}

test('the shared document holds the graph in the roots the Python side reads', () => {
  const doc = new NxFlowDoc();
  doc.setSource(dumpsCanonical(flow));
  assert.ok(doc.ydoc.getMap('nodes').get('A') instanceof Y.Map);
  assert.deepEqual(doc.ydoc.getMap('edges').get('A-B'), { id: 'A-B', source: 'A', target: 'B' });
  assert.equal(doc.ydoc.getMap('meta').get('name'), 'two');
  assert.equal(doc.getSource(), dumpsCanonical(flow));
});

test('setSource changes only what differs', () => {
  const doc = new NxFlowDoc();
  doc.setSource(dumpsCanonical(flow));
  let updates = 0;
  doc.ydoc.on('update', () => updates++);
  doc.setSource(doc.getSource());
  assert.equal(updates, 0);
  const nodeB = doc.nodes.get('B');
  doc.setSource(dumpsCanonical({ ...flow, name: 'renamed' }));
  assert.equal(doc.nodes.get('B'), nodeB);
  assert.equal(doc.toFlow().name, 'renamed');
});

test('invalid text is kept verbatim and reported', () => {
  const doc = new NxFlowDoc();
  doc.setSource('{"nodes": 3');
  assert.match(doc.invalid!.error, /malformed JSON/);
  assert.equal(doc.getSource(), '{"nodes": 3');
  doc.setSource(dumpsCanonical(flow));
  assert.equal(doc.invalid, null);
});

test('edits travel between two documents, and undo reverts only your own', () => {
  const a = new NxFlowDoc();
  const b = new NxFlowDoc();
  connect(a, b);
  a.setSource(dumpsCanonical(flow));
  assert.equal(b.getSource(), a.getSource());

  a.moveNodes(new Map([['A', { x: 40, y: 20 }]]));
  b.updateNode('B', { label: 'from b' });
  assert.deepEqual(b.node('A')!.position, { x: 40, y: 20 });
  assert.equal(a.node('B')!.label, 'from b');

  a.undo();
  assert.deepEqual(b.node('A')!.position, { x: 0, y: 0 });
  assert.equal(a.node('B')!.label, 'from b'); // b's edit survives a's undo
  a.redo();
  assert.deepEqual(b.node('A')!.position, { x: 40, y: 20 });
});

test('removing a node removes its edges in one undoable step', () => {
  const doc = new NxFlowDoc();
  doc.setSource(dumpsCanonical(flow));
  doc.removeElements(['A']);
  assert.deepEqual(doc.toFlow().edges, []);
  doc.undo();
  assert.equal(doc.getSource(), dumpsCanonical(flow));
});

test('the watched run id is shared through the document state', () => {
  const a = new NxFlowDoc();
  const b = new NxFlowDoc();
  connect(a, b);
  a.runId = 'run-1';
  assert.equal(b.runId, 'run-1');
  assert.equal(b.undoManager.undoStack.length, 0);
});
