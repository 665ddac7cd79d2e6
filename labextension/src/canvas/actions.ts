/**
 * What a host lets a run's nodes do on the canvas: decide a waiting approval, open a sub-flow's
 * child run (drill down). The Lab editor provides them; a host that provides none (the
 * read-only notebook widget) draws no buttons. A context, not node data: the node view reads it
 * without the nodes being rebuilt when a run's details arrive.
 */
import { createContext } from 'react';

/** What the run says of one node beyond its state (from GET runs/{id}). */
export interface INodeExtra {
  waiting?: {
    kind: string;
    message?: string;
    approvers?: string[];
    timeout_at?: string;
    child?: string;
  };
  /** The child run a sub-flow node started (the latest). */
  childRun?: string;
  /** The run and node whose result was served instead of running (the result cache). */
  cachedFrom?: { run_id: string; node_id: string };
  /** The node's pinned output stood in for running it. */
  pinned?: boolean;
}

export interface INodeActions {
  /** Approve or reject a waiting approval node. */
  decide?: (nodeId: string, approved: boolean, comment: string) => Promise<void>;
  /** Open the child run of a sub-flow node. */
  drill?: (nodeId: string) => void;
  /** What the run says of a node (message, approvers, child run). */
  extra: (nodeId: string) => INodeExtra | undefined;
}

export const NodeActions = createContext<INodeActions | null>(null);
