/**
 * What the canvas draws, shared by its two hosts: the Lab panel (data from the REST API and
 * the events websocket) and the notebook widget (data from the kernel over the widget comm).
 * Types only: this module adds nothing to a bundle.
 */
import type { JSONValue } from '../graph.js';

/** A node's state in the run shown (the last event seen for it). */
export interface INodeRun {
  state: string;
  attempt?: number;
  error?: string | null;
  /** The run and node whose result was served instead of running (the result cache). */
  cachedFrom?: { run_id: string; node_id: string } | null;
  /** The node's pinned output stood in for running it (a run started with pins). */
  pinned?: boolean;
  /** A map node's item counts (its `running` events carry them). */
  items?: IItemCounts;
  /** Why a queued node is not taken ("waiting: no live worker serves queue ..."). */
  waiting?: string | null;
}

/** How far a map node's items are (`items` of its events and of GET runs/{id}). */
export interface IItemCounts {
  total: number;
  done: number;
  running?: number;
  succeeded?: number;
  failed?: number;
  canceled?: number;
}

/** One item of a map node (GET runs/{id}/nodes/{node}/items; secrets masked). */
export interface IMapItem {
  index: number;
  state: string;
  attempts: number;
  item?: JSONValue;
  output?: JSONValue;
  error?: string | null;
  duration_ms?: number | null;
  /** The item's child run (a map of a flow). */
  child_run?: string;
}

/** One page of a map node's items: `total` counts those in the state asked for. */
export interface IItemsPage {
  total: number;
  offset: number;
  counts: IItemCounts | null;
  items: IMapItem[];
}

/** Fetch a page of a map node's items (the REST API in Lab). */
export type ItemsLoader = (
  runId: string,
  nodeId: string,
  page: { offset: number; limit: number; state?: string }
) => Promise<IItemsPage>;

/** What the node view needs of a node type: its title and named output handles. */
export interface INodeLook {
  title?: string;
  output_handles?: string[];
  /** An emoji or symbol, or a base64 SVG/PNG data URI (drawn by `NodeIcon`). */
  icon?: string;
}

/** A collaborator who has the node selected (Lab only; the widget has none). */
export interface IPeer {
  name: string;
  color: string;
}

/** One attempt of a node as the engine serves it (secrets masked). */
export interface IAttempt {
  attempt: number;
  status: string;
  error?: string | null;
  log?: string | null;
  input?: JSONValue;
  output?: JSONValue;
  worker?: string | null;
  duration_ms?: number | null;
  started_at?: string | null;
  ended_at?: string | null;
  /** Served from the result cache: the run and node the result came from. */
  cached_from?: { run_id: string; node_id: string } | null;
  /** The node's pinned output stood in for running it. */
  pinned?: boolean | null;
}

/** Fetch a node's attempts in a run: the REST API in Lab, the kernel in a notebook. */
export type AttemptsLoader = (runId: string, nodeId: string) => Promise<IAttempt[]>;
