/**
 * The run shown on the canvas: the one the shared document points at (so a run pressed by
 * anyone is followed by everyone), or one picked from the history; its node states come from
 * the events websocket, applied once per animation frame.
 */
import { useEffect, useState } from 'react';
import { followRun, IRunEvent } from '../api.js';
import type { INodeRun } from '../canvas/types.js';
import type { NxFlowDoc } from '../model.js';

export interface IRunView {
  runId: string | null;
  status: string | null;
  nodes: Map<string, INodeRun>;
  connected: boolean;
  /** ms between an event's `at` and its arrival here, last seen (for the latency check). */
  lastLagMs: number | null;
}

const EMPTY: IRunView = { runId: null, status: null, nodes: new Map(), connected: false, lastLagMs: null };

function eventTime(at: string | number | undefined): number | null {
  if (at === undefined) {
    return null;
  }
  const t = typeof at === 'number' ? (at < 1e12 ? at * 1000 : at) : Date.parse(at);
  return Number.isFinite(t) ? t : null;
}

/** Follow the run shown; return the state of every node and a way to pick another run. */
export function useRunView(doc: NxFlowDoc): [IRunView, (runId: string | null) => void] {
  const [shared, setShared] = useState<string | null>(doc.runId);
  const [picked, setPicked] = useState<string | null>(null);
  useEffect(() => {
    const onChange = () => {
      if (doc.runId !== shared) {
        setShared(doc.runId);
        setPicked(null);
      }
    };
    doc.ystate.observe(onChange);
    return () => doc.ystate.unobserve(onChange);
  }, [doc, shared]);
  const view = useFollowedRun(picked ?? shared);
  return [view, (id: string | null) => setPicked(id)];
}

/** Follow one run's events (any run: the one shown, or a sub-flow's child run drilled into). */
export function useFollowedRun(runId: string | null): IRunView {
  const [view, setView] = useState<IRunView>(EMPTY);
  useEffect(() => {
    if (!runId) {
      setView(EMPTY);
      return;
    }
    let nodes = new Map<string, INodeRun>();
    let status: string | null = null;
    let pending = false;
    let lag: number | null = null;
    let connected = false;
    const flush = () => {
      pending = false;
      setView({ runId, status, nodes: new Map(nodes), connected, lastLagMs: lag });
    };
    const schedule = () => {
      if (!pending) {
        pending = true;
        requestAnimationFrame(flush);
      }
    };
    setView({ ...EMPTY, runId });
    const stream = followRun(
      runId,
      (event: IRunEvent) => {
        const t = eventTime(event.at);
        if (t !== null) {
          lag = Date.now() - t;
        }
        if (event.node === null || event.node === undefined) {
          status = event.state;
        } else {
          // A map's counts come with its `running` events; its end keeps the last ones.
          const items = event.items ?? nodes.get(event.node)?.items;
          nodes = nodes.set(event.node, {
            state: event.state,
            attempt: event.attempt,
            error: event.error ?? null,
            ...(items ? { items } : {})
          });
        }
        schedule();
      },
      s => {
        connected = s === 'open';
        schedule();
      }
    );
    return () => stream.close();
  }, [runId]);
  return view;
}
