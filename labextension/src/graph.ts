/**
 * Pure flow-graph logic shared by the model and the canvas: the canonical text of a flow
 * (byte-identical to nexusflow_kernel.document.dumps_canonical), cycle checks, ids, layout.
 * Nothing here touches the DOM or JupyterLab, so it is unit-tested with node's test runner.
 */
import dagre from '@dagrejs/dagre';

export type JSONValue =
  | null
  | boolean
  | number
  | string
  | JSONValue[]
  | { [key: string]: JSONValue };
export type JSONObject = { [key: string]: JSONValue };

export type IPosition = { x: number; y: number };

export interface IFlowNode {
  id: string;
  type: string;
  label?: string;
  description?: string;
  position?: IPosition;
  config?: JSONObject;
  retry?: JSONObject;
  timeout_s?: number;
  trigger_rule?: string;
  metadata?: JSONObject;
  [key: string]: JSONValue | undefined;
}

export interface IFlowEdge {
  id: string;
  source: string;
  target: string;
  source_handle?: string;
  target_handle?: string;
  label?: string;
  [key: string]: JSONValue | undefined;
}

export interface IFlow {
  schema: number;
  name?: string;
  description?: string;
  /** Run inputs: each a JSON Schema; ``enum`` is a choice list (a select in the run form). */
  params?: { [name: string]: { type?: string; default?: JSONValue; description?: string; enum?: JSONValue[] } };
  metadata?: JSONObject;
  nodes: IFlowNode[];
  edges: IFlowEdge[];
  [key: string]: JSONValue | undefined | IFlowNode[] | IFlowEdge[] | object;
}

export const NODE_KEY_ORDER = [
  'id', 'type', 'label', 'description', 'position', 'config',
  'retry', 'timeout_s', 'trigger_rule', 'metadata'
];
export const EDGE_KEY_ORDER = ['id', 'source', 'source_handle', 'target', 'target_handle', 'label'];
export const TOP_KEY_ORDER = ['schema', 'name', 'description', 'params', 'metadata', 'nodes', 'edges'];

function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function canonicalValue(value: any): any {
  if (Array.isArray(value)) {
    return value.map(canonicalValue);
  }
  if (value !== null && typeof value === 'object') {
    const out: { [key: string]: any } = {};
    for (const key of Object.keys(value).sort(byCodePoint)) {
      if (value[key] !== undefined) {
        out[key] = canonicalValue(value[key]);
      }
    }
    return out;
  }
  return value;
}

function ordered(item: { [key: string]: any }, order: string[]): { [key: string]: any } {
  const out: { [key: string]: any } = {};
  for (const key of order) {
    if (key in item && item[key] !== undefined) {
      out[key] = canonicalValue(item[key]);
    }
  }
  for (const key of Object.keys(item).filter(k => !order.includes(k)).sort(byCodePoint)) {
    if (item[key] !== undefined) {
      out[key] = canonicalValue(item[key]);
    }
  }
  return out;
}

/** Return a flow in canonical form: ordered keys, nodes and edges sorted by id. */
export function canonicalFlow(data: { [key: string]: any }): IFlow {
  const top: { [key: string]: any } = {};
  for (const key of Object.keys(data)) {
    if (key !== 'nodes' && key !== 'edges') {
      top[key] = data[key];
    }
  }
  const out = ordered(top, TOP_KEY_ORDER);
  const byId = (a: { id: string }, b: { id: string }) => byCodePoint(String(a.id), String(b.id));
  out.nodes = [...(data.nodes ?? [])].sort(byId).map(n => ordered(n, NODE_KEY_ORDER));
  out.edges = [...(data.edges ?? [])].sort(byId).map(e => ordered(e, EDGE_KEY_ORDER));
  return out as IFlow;
}

/** Serialize a flow as the `.nxflow` file text (same bytes as the Python side). */
export function dumpsCanonical(data: { [key: string]: any }): string {
  return JSON.stringify(canonicalFlow(data), null, 2) + '\n';
}

/** Why a text cannot be held by the shared document (null when it can). */
export function structuralProblem(data: unknown): string | null {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    return `a flow must be a JSON object, not ${Array.isArray(data) ? 'a list' : typeof data}`;
  }
  for (const key of ['nodes', 'edges']) {
    const items = (data as any)[key] ?? [];
    if (!Array.isArray(items)) {
      return `/${key} must be a list`;
    }
    const seen = new Set<string>();
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      if (item === null || typeof item !== 'object' || typeof item.id !== 'string') {
        return `/${key}/${i} must be an object with a string id`;
      }
      if (seen.has(item.id)) {
        return `/${key}/${i}: duplicate id '${item.id}'`;
      }
      seen.add(item.id);
    }
  }
  return null;
}

type EdgeLike = { source: string; target: string };

/** Return a path of node ids from `from` to `to` following edges, or null. */
export function findPath(edges: EdgeLike[], from: string, to: string): string[] | null {
  const next = new Map<string, string[]>();
  for (const e of edges) {
    const list = next.get(e.source) ?? [];
    list.push(e.target);
    next.set(e.source, list);
  }
  const parent = new Map<string, string>();
  const queue = [from];
  const seen = new Set([from]);
  while (queue.length) {
    const id = queue.shift()!;
    if (id === to) {
      const path = [to];
      while (path[0] !== from) {
        path.unshift(parent.get(path[0])!);
      }
      return path;
    }
    for (const n of next.get(id) ?? []) {
      if (!seen.has(n)) {
        seen.add(n);
        parent.set(n, id);
        queue.push(n);
      }
    }
  }
  return null;
}

/**
 * Return the cycle that an edge source -> target would close (as a list of node ids that
 * starts and ends with `source`), or null when the edge is safe.
 */
export function cycleIfConnected(edges: EdgeLike[], source: string, target: string): string[] | null {
  if (source === target) {
    return [source, source];
  }
  const back = findPath(edges, target, source);
  return back ? [source, ...back] : null;
}

/** Return the ids of every node that lies on a cycle (Tarjan's strongly connected components). */
export function nodesOnCycles(nodeIds: string[], edges: EdgeLike[]): Set<string> {
  const next = new Map<string, string[]>();
  for (const e of edges) {
    next.set(e.source, [...(next.get(e.source) ?? []), e.target]);
  }
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const result = new Set<string>();
  let counter = 0;
  const visit = (v: string) => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of next.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      const selfLoop = (next.get(v) ?? []).includes(v);
      if (component.length > 1 || selfLoop) {
        component.forEach(c => result.add(c));
      }
    }
  };
  const all = new Set([...nodeIds, ...edges.map(e => e.source)]);
  for (const id of all) {
    if (!index.has(id)) {
      visit(id);
    }
  }
  return result;
}

/** Return a new node id derived from `base` that is not in `taken` (schema-safe). */
export function freshId(base: string, taken: Set<string> | ((id: string) => boolean)): string {
  const has = typeof taken === 'function' ? taken : (id: string) => taken.has(id);
  const stem = (base.replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^[.-]+/, '') || 'node').slice(0, 80);
  for (let n = 1; ; n++) {
    const id = `${stem}_${n}`;
    if (!has(id)) {
      return id;
    }
  }
}

/** Return the id of an edge (readable: `A-B`, or `C.true-D` for a named source handle). */
export function edgeIdFor(source: string, target: string, handle: string | null | undefined,
                          taken: Set<string>): string {
  const base = handle ? `${source}.${handle}-${target}` : `${source}-${target}`;
  if (!taken.has(base)) {
    return base;
  }
  for (let n = 2; ; n++) {
    if (!taken.has(`${base}-${n}`)) {
      return `${base}-${n}`;
    }
  }
}

/** Lay a graph out top-down with dagre; returns the top-left position of every node. */
export function layoutPositions(
  nodes: { id: string; width?: number; height?: number }[],
  edges: EdgeLike[],
  options: { rankSep?: number; nodeSep?: number } = {}
): Map<string, IPosition> {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'TB', ranksep: options.rankSep ?? 60, nodesep: options.nodeSep ?? 40 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) {
    g.setNode(n.id, { width: n.width ?? 180, height: n.height ?? 56 });
  }
  for (const e of edges) {
    if (g.hasNode(e.source) && g.hasNode(e.target)) {
      g.setEdge(e.source, e.target);
    }
  }
  dagre.layout(g);
  const out = new Map<string, IPosition>();
  for (const n of nodes) {
    const p = g.node(n.id);
    out.set(n.id, {
      x: Math.round(p.x - (n.width ?? 180) / 2),
      y: Math.round(p.y - (n.height ?? 56) / 2)
    });
  }
  return out;
}
