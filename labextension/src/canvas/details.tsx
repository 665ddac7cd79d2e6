/**
 * A node's details in the run shown: every attempt's status, duration, error, output, input
 * and log. The host says where attempts come from (`load`): the REST API in Lab, the kernel
 * in a notebook, both reading Engine.node_attempts (which masks secrets).
 */
import React, { ReactNode, useEffect, useRef, useState } from 'react';
import type { JSONValue } from '../graph.js';
import { MapItems } from './items.js';
import type { AttemptsLoader, IAttempt, INodeRun, ItemsLoader } from './types.js';

export interface INodeDetailsProps {
  runId: string;
  nodeId: string;
  run?: INodeRun;
  load: AttemptsLoader;
  onClose: () => void;
  /** Shown instead of "Loading…" when the answer takes longer than a second. */
  slowHint?: string;
  /** What the host lets one do with the node of this run (Lab: open it in a notebook, pin
   *  the attempt's output); given the attempt shown. The read-only widget gives none. */
  actions?: (attempt: IAttempt | undefined) => ReactNode;
  /** Where a map node's items come from (its items list is shown when given). */
  loadItems?: ItemsLoader;
  /** Open an item's child run (a map of a flow): the host's drill-down. */
  onOpenRun?: (runId: string, label: string) => void;
}

export function formatMs(ms: number): string {
  return ms < 1000 ? `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function pretty(value: JSONValue | undefined): string {
  return value === undefined ? '—' : JSON.stringify(value, null, 2);
}

/** How often a running node's attempts are loaded again (its log grows while it runs). */
export const RUNNING_RELOAD_MS = 500;

/**
 * Load the attempts again whenever the node's state or attempt changes, and every
 * RUNNING_RELOAD_MS while it runs (the running attempt's log so far: a model's answer
 * streaming in). While another node's (or run's) attempts load, none are shown: never the
 * previous node's under this one's name; a reload of the same node keeps what is shown.
 */
function useAttempts(
  load: AttemptsLoader,
  runId: string,
  nodeId: string,
  run?: INodeRun
): { attempts: IAttempt[] | null; error: string | null; slow: boolean } {
  const [loaded, setLoaded] = useState<{ of: string; attempts: IAttempt[] | null; error: string | null }>({
    of: '',
    attempts: null,
    error: null
  });
  const [slow, setSlow] = useState(false);
  const of = `${runId}/${nodeId}`;
  const running = run?.state === 'running';
  const [tick, setTick] = useState(0);
  const key = `${of}/${run?.state}/${run?.attempt}${running ? `/${tick}` : ''}`;
  const last = useRef(key);
  useEffect(() => {
    last.current = key;
    setSlow(false);
    const timer = window.setTimeout(() => setSlow(true), 1000);
    let again: number | undefined;
    load(runId, nodeId)
      .then(
        attempts => {
          if (last.current === key) {
            setLoaded({ of, attempts, error: null });
          }
        },
        err => {
          if (last.current === key) {
            setLoaded({ of, attempts: null, error: (err as Error).message ?? String(err) });
          }
        }
      )
      .finally(() => {
        window.clearTimeout(timer);
        // One load at a time: the next starts a moment after this one answered.
        if (running && last.current === key) {
          again = window.setTimeout(() => setTick(n => n + 1), RUNNING_RELOAD_MS);
        }
      });
    return () => {
      window.clearTimeout(timer);
      window.clearTimeout(again);
    };
  }, [key, load]);
  const mine = loaded.of === of;
  return { attempts: mine ? loaded.attempts : null, error: mine ? loaded.error : null, slow };
}

export function NodeDetails({
  runId,
  nodeId,
  run,
  load,
  onClose,
  slowHint,
  actions,
  loadItems,
  onOpenRun
}: INodeDetailsProps): JSX.Element {
  const { attempts, error, slow } = useAttempts(load, runId, nodeId, run);
  const [shown, setShown] = useState<number | null>(null);
  const attempt = attempts?.find(a => a.attempt === shown) ?? attempts?.[attempts.length - 1];
  return (
    <div className="nf-logs" data-logs-node={nodeId}>
      <div className="nf-logs-head">
        <strong>{nodeId}</strong>
        <span className="nf-help">run {runId.slice(0, 8)}</span>
        {attempts && attempts.length > 1 && (
          <select
            className="nf-input"
            aria-label="Attempt"
            value={attempt?.attempt}
            onChange={e => setShown(Number(e.target.value))}
          >
            {attempts.map(a => (
              <option key={a.attempt} value={a.attempt}>
                attempt {a.attempt} · {a.status}
              </option>
            ))}
          </select>
        )}
        <button className="nf-btn nf-close" onClick={onClose} aria-label="Close logs">
          ✕
        </button>
      </div>
      {actions && <div className="nf-logs-actions">{actions(attempt)}</div>}
      {error && <div className="nf-field-error">{error}</div>}
      {!error && !attempts && <div className="nf-help">{slow && slowHint ? slowHint : 'Loading…'}</div>}
      {attempts && attempts.length === 0 && (
        <div className="nf-help">No attempt yet ({run?.state ?? 'not started'}).</div>
      )}
      {loadItems && run?.items && (
        <MapItems runId={runId} nodeId={nodeId} counts={run.items} load={loadItems} onOpenRun={onOpenRun} />
      )}
      {attempt && (
        <div className="nf-logs-body" data-attempt-status={attempt.status}>
          <div className="nf-row">
            <span className={`nf-pill nf-pill-${attempt.status}`}>{attempt.status}</span>
            <span>attempt {attempt.attempt}</span>
            {attempt.duration_ms != null && <span>{formatMs(attempt.duration_ms)}</span>}
            {attempt.cached_from && (
              <span className="nf-node-flag nf-node-cache" data-detail="cached-from">
                from the cache: run {attempt.cached_from.run_id.slice(0, 8)}
              </span>
            )}
            {attempt.pinned && (
              <span className="nf-node-flag nf-node-pin nf-used" data-detail="pinned">
                pinned output
              </span>
            )}
          </div>
          {attempt.error && <pre className="nf-error-text">{attempt.error}</pre>}
          <details open>
            <summary>Output</summary>
            <pre data-detail="output">{pretty(attempt.output)}</pre>
          </details>
          <details>
            <summary>Input</summary>
            <pre data-detail="input">{pretty(attempt.input)}</pre>
          </details>
          <details open={!!attempt.log}>
            <summary>Log</summary>
            <pre data-detail="log">{attempt.log || '—'}</pre>
          </details>
        </div>
      )}
    </div>
  );
}
