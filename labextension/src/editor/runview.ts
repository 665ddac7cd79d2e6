/**
 * The run shown on the canvas: the newest run of the flow, wherever it was started (a canvas,
 * REST, a notebook, a webhook, a schedule, the CLI), unless the user pinned one in the history;
 * its node states come from the events websocket, applied once per animation frame.
 *
 * The newest run is learnt three ways: `GET runs?path=` when the canvas opens, the shared
 * document's `runId` (a run pressed on any canvas of the file), and the runs' own events
 * (`events?level=run`): a run not seen before makes the canvas ask `GET runs?path=` again.
 */
import { useCallback, useEffect, useRef, useState } from 'react';
import { api, followRun, followRuns, IRunEvent } from '../api.js';
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

/** The newest run of the file at `path`, kept up to date wherever runs start. */
export function useNewestRun(doc: NxFlowDoc, path: () => string): string | null {
  const [newest, setNewest] = useState<string | null>(doc.runId);
  const pathNow = useRef(path);
  pathNow.current = path; // the host passes a new function each render; the file may move
  useEffect(() => {
    const onChange = () => {
      if (doc.runId) {
        setNewest(doc.runId);
      }
    };
    doc.ystate.observe(onChange);
    return () => doc.ystate.unobserve(onChange);
  }, [doc]);
  useEffect(() => {
    let alive = true;
    let lastSeen: string | null = null;
    let timer: number | undefined;
    const known = new Set<string>();
    const ask = () => {
      api.runs(pathNow.current(), 1).then(
        runs => {
          const top = runs[0]?.run_id ?? null;
          if (alive && top && top !== lastSeen) {
            lastSeen = top;
            setNewest(top);
          }
        },
        () => undefined // no server: the shared document's run still shows
      );
    };
    ask();
    const stream = followRuns((event: IRunEvent) => {
      if (event.node !== null && event.node !== undefined) {
        return;
      }
      if (!known.has(event.run)) {
        known.add(event.run);
        window.clearTimeout(timer);
        timer = window.setTimeout(ask, 150); // several runs starting at once: one question
      }
    });
    return () => {
      alive = false;
      window.clearTimeout(timer);
      stream.close();
    };
  }, [doc]);
  return newest;
}

/**
 * Follow the run shown; return the state of every node, a way to pin a run (`null` follows
 * the newest again), the run pinned and the newest run.
 */
export function useRunView(
  doc: NxFlowDoc,
  path: () => string
): [IRunView, (runId: string | null) => void, string | null, string | null] {
  const newest = useNewestRun(doc, path);
  const [pinned, setPinned] = useState<string | null>(null);
  const view = useFollowedRun(pinned ?? newest);
  const pick = useCallback((id: string | null) => setPinned(id), []);
  return [view, pick, pinned, newest];
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
            ...(items ? { items } : {}),
            waiting: event.waiting?.kind === 'worker' ? event.waiting.message ?? null : null,
            // A cache hit or a pin comes with the node's success (the notebook widget reads
            // the same fields of the same events): the badge shows as the node is decided.
            ...(event.cached_from ? { cachedFrom: event.cached_from } : {}),
            ...(event.pinned ? { pinned: true } : {})
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
