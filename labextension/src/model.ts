/**
 * The shared flow document (Yjs) and the JupyterLab document model around it.
 *
 * Root names and types match the Python `YNxFlow` (server_ext/nexusflow_server/ydoc.py):
 * `nodes` Map<id, Map<field, value>>, `edges` Map<id, edge object>, `meta` Map<key, value>;
 * `state` (from YDocument) holds `nexusflow_run`, the run every collaborator watches.
 */
import { DocumentChange, YDocument } from '@jupyter/ydoc';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { Contents } from '@jupyterlab/services';
import { IChangedArgs } from '@jupyterlab/coreutils';
import { ISignal, Signal } from '@lumino/signaling';
import { PartialJSONValue } from '@lumino/coreutils';
import * as Y from 'yjs';
import {
  IFlow,
  IFlowEdge,
  IFlowNode,
  canonicalFlow,
  dumpsCanonical,
  structuralProblem
} from './graph.js';

export const CONTENT_TYPE = 'nxflow';
export const INVALID_KEY = '_invalid';
export const RUN_KEY = 'nexusflow_run';

export interface INxFlowChange extends DocumentChange {
  graphChanged?: boolean;
  metaChanged?: boolean;
}

export interface IInvalid {
  error: string;
  source: string;
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(canonicalFlow({ v: a })) === JSON.stringify(canonicalFlow({ v: b }));
}

function syncPlain(target: Y.Map<any>, values: { [key: string]: any }): void {
  for (const key of Array.from(target.keys())) {
    if (!(key in values)) {
      target.delete(key);
    }
  }
  for (const [key, value] of Object.entries(values)) {
    if (value !== undefined && (!target.has(key) || !same(target.get(key), value))) {
      target.set(key, value);
    }
  }
}

export class NxFlowDoc extends YDocument<INxFlowChange> {
  constructor(options?: YDocument.IOptions) {
    super(options);
    this.nodes = this.ydoc.getMap('nodes');
    this.edges = this.ydoc.getMap('edges');
    this.meta = this.ydoc.getMap('meta');
    this.undoManager.addToScope([this.nodes, this.edges, this.meta]);
    this.nodes.observeDeep(this._onGraph);
    this.edges.observe(this._onGraph);
    this.meta.observe(this._onMeta);
  }

  readonly version = '1.0.0';
  readonly nodes: Y.Map<Y.Map<any>>;
  readonly edges: Y.Map<IFlowEdge>;
  readonly meta: Y.Map<any>;

  static create(): NxFlowDoc {
    return new NxFlowDoc();
  }

  get invalid(): IInvalid | null {
    return (this.meta.get(INVALID_KEY) as IInvalid | undefined) ?? null;
  }

  /** The id of the run that every collaborator's canvas shows. */
  get runId(): string | null {
    return (this.ystate.get(RUN_KEY) as string | undefined) ?? null;
  }

  set runId(value: string | null) {
    this.transact(() => this.ystate.set(RUN_KEY, value), false);
  }

  node(id: string): IFlowNode | null {
    const y = this.nodes.get(id);
    return y ? (y.toJSON() as IFlowNode) : null;
  }

  toFlow(): IFlow {
    const flow: { [key: string]: any } = {};
    this.meta.forEach((value, key) => {
      if (key !== INVALID_KEY) {
        flow[key] = value;
      }
    });
    flow.schema = flow.schema ?? 1;
    flow.nodes = Array.from(this.nodes.values()).map(n => n.toJSON());
    flow.edges = Array.from(this.edges.values());
    return flow as IFlow;
  }

  getSource(): string {
    const invalid = this.invalid;
    return invalid ? invalid.source : dumpsCanonical(this.toFlow());
  }

  /** Load flow text, changing only what differs (the same algorithm as YNxFlow.set). */
  setSource(value: PartialJSONValue | string): void {
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    let data: any;
    let problem: string | null = null;
    if (!text.trim()) {
      data = { schema: 1, nodes: [], edges: [] };
    } else {
      try {
        data = JSON.parse(text);
        problem = structuralProblem(data);
      } catch (err) {
        problem = `malformed JSON: ${(err as Error).message}`;
      }
    }
    if (problem !== null) {
      this.transact(() => {
        this.nodes.clear();
        this.edges.clear();
        this.meta.clear();
        this.meta.set(INVALID_KEY, { error: problem, source: text });
      }, false);
      return;
    }
    this._load(canonicalFlow(data), false);
  }

  /**
   * Replace the whole flow with `flow` (a described flow accepted): one undoable step, kept
   * apart from the edits before and after it, so one undo takes the whole flow back.
   */
  replaceFlow(flow: IFlow): void {
    this.undoManager.stopCapturing();
    this._load(canonicalFlow(flow), true);
    this.undoManager.stopCapturing();
  }

  /** Make the document hold `flow`, changing only what differs. */
  private _load(flow: IFlow, undoable: boolean): void {
    this.transact(() => {
      const top: { [key: string]: any } = {};
      for (const [k, v] of Object.entries(flow)) {
        if (k !== 'nodes' && k !== 'edges') {
          top[k] = v;
        }
      }
      syncPlain(this.meta, top);
      syncPlain(this.edges, Object.fromEntries(flow.edges.map(e => [e.id, e])));
      const wanted = new Map(flow.nodes.map(n => [n.id, n]));
      for (const id of Array.from(this.nodes.keys())) {
        if (!wanted.has(id)) {
          this.nodes.delete(id);
        }
      }
      for (const [id, node] of wanted) {
        const current = this.nodes.get(id);
        if (current instanceof Y.Map) {
          syncPlain(current, node);
        } else {
          this.nodes.set(id, new Y.Map(Object.entries(node)));
        }
      }
    }, undoable);
  }

  /** Add nodes and edges in one undoable step. */
  addElements(nodes: IFlowNode[], edges: IFlowEdge[] = []): void {
    this.transact(() => {
      for (const node of nodes) {
        const clean = Object.entries(node).filter(([, v]) => v !== undefined);
        this.nodes.set(node.id, new Y.Map(clean));
      }
      for (const edge of edges) {
        this.edges.set(edge.id, edge);
      }
    });
  }

  /** Set (or with `undefined`, remove) fields of one node. */
  updateNode(id: string, patch: { [key: string]: any }): void {
    const y = this.nodes.get(id);
    if (!y) {
      return;
    }
    this.transact(() => {
      for (const [key, value] of Object.entries(patch)) {
        if (value === undefined) {
          y.delete(key);
        } else if (!same(y.get(key), value)) {
          y.set(key, value);
        }
      }
    });
  }

  /** Move nodes (one undoable step). */
  moveNodes(positions: Map<string, { x: number; y: number }>): void {
    this.transact(() => {
      for (const [id, p] of positions) {
        const y = this.nodes.get(id);
        const pos = { x: Math.round(p.x), y: Math.round(p.y) };
        if (y && !same(y.get('position'), pos)) {
          y.set('position', pos);
        }
      }
    });
  }

  /** Remove nodes (with every edge touching them) and edges in one undoable step. */
  removeElements(nodeIds: Iterable<string>, edgeIds: Iterable<string> = []): void {
    const gone = new Set(nodeIds);
    this.transact(() => {
      for (const id of gone) {
        this.nodes.delete(id);
      }
      for (const [id, e] of Array.from(this.edges.entries())) {
        if (gone.has(e.source) || gone.has(e.target)) {
          this.edges.delete(id);
        }
      }
      for (const id of edgeIds) {
        this.edges.delete(id);
      }
    });
  }

  setMeta(key: string, value: any): void {
    this.transact(() => {
      if (value === undefined) {
        this.meta.delete(key);
      } else {
        this.meta.set(key, value);
      }
    });
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.nodes.unobserveDeep(this._onGraph);
    this.edges.unobserve(this._onGraph);
    this.meta.unobserve(this._onMeta);
    super.dispose();
  }

  private _onGraph = (): void => {
    this._changed.emit({ graphChanged: true });
  };

  private _onMeta = (): void => {
    this._changed.emit({ metaChanged: true });
  };
}

/** The JupyterLab document model of a `.nxflow` file. */
export class NxFlowModel implements DocumentRegistry.IModel {
  constructor(options: DocumentRegistry.IModelOptions<NxFlowDoc>) {
    this.sharedModel = options.sharedModel ?? NxFlowDoc.create();
    this.collaborative = !!options.collaborationEnabled;
    this.sharedModel.changed.connect(this._onShared, this);
  }

  readonly sharedModel: NxFlowDoc;
  readonly collaborative: boolean;
  readonly defaultKernelName = '';
  readonly defaultKernelLanguage = '';

  get contentChanged(): ISignal<this, void> {
    return this._contentChanged;
  }

  get stateChanged(): ISignal<this, IChangedArgs<any>> {
    return this._stateChanged;
  }

  get dirty(): boolean {
    return this._dirty;
  }

  set dirty(value: boolean) {
    const old = this._dirty;
    if (old !== value) {
      this._dirty = value;
      this._stateChanged.emit({ name: 'dirty', oldValue: old, newValue: value });
    }
  }

  get readOnly(): boolean {
    return this._readOnly;
  }

  set readOnly(value: boolean) {
    const old = this._readOnly;
    if (old !== value) {
      this._readOnly = value;
      this._stateChanged.emit({ name: 'readOnly', oldValue: old, newValue: value });
    }
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  toString(): string {
    return this.sharedModel.getSource();
  }

  fromString(value: string): void {
    this.sharedModel.setSource(value);
  }

  toJSON(): PartialJSONValue {
    return this.sharedModel.toFlow() as unknown as PartialJSONValue;
  }

  fromJSON(value: PartialJSONValue): void {
    this.sharedModel.setSource(JSON.stringify(value));
  }

  initialize(): void {
    // Content arrives through fromString (no RTC) or the Yjs provider (RTC).
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this.sharedModel.changed.disconnect(this._onShared, this);
    if (!this.collaborative) {
      this.sharedModel.dispose();
    }
    Signal.clearData(this);
  }

  private _onShared(_: NxFlowDoc, change: INxFlowChange): void {
    if (change.graphChanged || change.metaChanged) {
      this._contentChanged.emit();
      if (!this.collaborative) {
        this.dirty = true;
      }
    }
    const dirty = change.stateChange?.find(c => c.name === 'dirty');
    if (dirty) {
      this.dirty = !!dirty.newValue;
    }
  }

  private _dirty = false;
  private _readOnly = false;
  private _isDisposed = false;
  private _contentChanged = new Signal<this, void>(this);
  private _stateChanged = new Signal<this, IChangedArgs<any>>(this);
}

export class NxFlowModelFactory implements DocumentRegistry.IModelFactory<NxFlowModel, NxFlowDoc> {
  readonly name = 'nexusflow-model';
  readonly contentType: Contents.ContentType = CONTENT_TYPE;
  readonly fileFormat: Contents.FileFormat = 'text';
  readonly collaborative = true;

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    this._disposed = true;
  }

  preferredLanguage(): string {
    return '';
  }

  createNew(options: DocumentRegistry.IModelOptions<NxFlowDoc> = {}): NxFlowModel {
    return new NxFlowModel(options);
  }

  private _disposed = false;
}
