/** The run toolbar, the glow state from the events websocket and a node's logs panel. */
import React, { useEffect, useRef, useState } from 'react';
import { api, followRun, IAttempt, IRunEvent, IRunSummary } from '../api.js';
import { IFlow, JSONObject, JSONValue } from '../graph.js';
import { INodeRun } from '../canvas/nodeview.js';
import { NxFlowDoc } from '../model.js';

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

/**
 * Follow the run that the shared document points at (or one picked from the history);
 * return the state of every node. A new run pressed by anyone is followed by everyone.
 */
export function useRunView(doc: NxFlowDoc): [IRunView, (runId: string | null) => void] {
  const [shared, setShared] = useState<string | null>(doc.runId);
  const [picked, setPicked] = useState<string | null>(null);
  const [view, setView] = useState<IRunView>(EMPTY);
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
  const runId = picked ?? shared;
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
          nodes = nodes.set(event.node, {
            state: event.state,
            attempt: event.attempt,
            error: event.error ?? null
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
  return [view, (id: string | null) => setPicked(id)];
}

interface IToolbarProps {
  doc: NxFlowDoc;
  path: string;
  flow: IFlow;
  view: IRunView;
  pick: (runId: string | null) => void;
  notify: (message: string, kind?: 'error' | 'info') => void;
}

/** Run (with an inputs form), Cancel, Retry from failed and the run history picker. */
export function RunToolbar({ doc, path, flow, view, pick, notify }: IToolbarProps): JSX.Element {
  const [history, setHistory] = useState<IRunSummary[] | null>(null);
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  const params = flow.params ?? {};
  const hasParams = Object.keys(params).length > 0;
  const active = view.status === 'running' || (view.runId !== null && view.status === null);

  const start = async (inputs: JSONObject) => {
    setBusy(true);
    try {
      const runId = await api.startRun(path, inputs);
      doc.runId = runId;
      pick(null);
    } catch (err) {
      notify(`Run refused: ${(err as Error).message}`);
    } finally {
      setBusy(false);
      setAsking(false);
    }
  };
  const act = async (what: 'cancel' | 'retry') => {
    if (!view.runId) {
      return;
    }
    setBusy(true);
    try {
      if (what === 'cancel') {
        await api.cancel(view.runId);
      } else {
        doc.runId = await api.retry(view.runId);
        pick(null);
      }
    } catch (err) {
      notify(`${what === 'cancel' ? 'Cancel' : 'Retry'} failed: ${(err as Error).message}`);
    } finally {
      setBusy(false);
    }
  };
  const loadHistory = () => {
    api.runs(path).then(setHistory, err => notify(`Run history: ${(err as Error).message}`));
  };
  return (
    <div className="nf-runbar">
      <button
        className="nf-btn nf-primary"
        data-action="run"
        disabled={busy}
        onClick={() => (hasParams ? setAsking(true) : start({}))}
        title="Run this flow as it is now"
      >
        ▶ Run
      </button>
      <button className="nf-btn" data-action="cancel" disabled={busy || !active} onClick={() => act('cancel')}>
        ■ Cancel
      </button>
      <button
        className="nf-btn"
        data-action="retry"
        disabled={busy || !view.runId || !(view.status === 'failed' || view.status === 'canceled')}
        onClick={() => act('retry')}
        title="Run the failed, canceled and skipped nodes again, keeping what succeeded"
      >
        ↻ Retry
      </button>
      <select
        className="nf-input nf-history"
        aria-label="Run history"
        value={view.runId ?? ''}
        onFocus={loadHistory}
        onMouseDown={loadHistory}
        onChange={e => pick(e.target.value || null)}
      >
        <option value="">{view.runId ? 'current run' : 'No run'}</option>
        {view.runId && !(history ?? []).some(r => r.run_id === view.runId) && (
          <option value={view.runId}>{view.runId.slice(0, 8)} · {view.status ?? '…'}</option>
        )}
        {(history ?? []).map(r => (
          <option key={r.run_id} value={r.run_id}>
            {r.run_id.slice(0, 8)} · {r.status}
            {r.created_at ? ` · ${new Date(String(r.created_at)).toLocaleString()}` : ''}
          </option>
        ))}
      </select>
      {view.runId && (
        <span className={`nf-run-status nf-run-${view.status ?? 'starting'}`} data-run-status={view.status ?? ''}>
          {view.status ?? 'starting'}
          {!view.connected && view.status === 'running' ? ' (reconnecting)' : ''}
        </span>
      )}
      {asking && (
        <InputsForm params={params} onCancel={() => setAsking(false)} onRun={start} />
      )}
    </div>
  );
}

function InputsForm({
  params,
  onRun,
  onCancel
}: {
  params: NonNullable<IFlow['params']>;
  onRun: (inputs: JSONObject) => void;
  onCancel: () => void;
}): JSX.Element {
  const [values, setValues] = useState<{ [k: string]: string }>(() =>
    Object.fromEntries(
      Object.entries(params).map(([k, p]) => [
        k,
        p.default === undefined ? '' : typeof p.default === 'string' ? p.default : JSON.stringify(p.default)
      ])
    )
  );
  const parsed: { [k: string]: JSONValue } = {};
  const errors: { [k: string]: string } = {};
  for (const [k, p] of Object.entries(params)) {
    const text = values[k] ?? '';
    if (text === '' && p.default === undefined) {
      errors[k] = 'is required';
      continue;
    }
    if (p.type === 'string' || p.type === undefined) {
      parsed[k] = text;
      continue;
    }
    try {
      const v = JSON.parse(text);
      const ok =
        (p.type === 'number' && typeof v === 'number') ||
        (p.type === 'integer' && Number.isInteger(v)) ||
        (p.type === 'boolean' && typeof v === 'boolean') ||
        (p.type === 'array' && Array.isArray(v)) ||
        (p.type === 'object' && v !== null && typeof v === 'object' && !Array.isArray(v));
      if (ok) {
        parsed[k] = v;
      } else {
        errors[k] = `must be ${p.type === 'integer' ? 'an integer' : `a ${p.type}`}`;
      }
    } catch {
      errors[k] = `must be ${p.type} (JSON)`;
    }
  }
  const valid = Object.keys(errors).length === 0;
  return (
    <div className="nf-popover nf-inputs" role="dialog" aria-label="Run inputs">
      <div className="nf-popover-title">Run inputs</div>
      {Object.entries(params).map(([k, p]) => (
        <div key={k} className={`nf-field${errors[k] ? ' nf-invalid' : ''}`}>
          <label className="nf-label">
            {k} <span className="nf-help">{p.type ?? 'string'}</span>
          </label>
          <input
            className="nf-input"
            aria-label={k}
            value={values[k] ?? ''}
            onChange={e => setValues({ ...values, [k]: e.target.value })}
          />
          {p.description && <div className="nf-help">{p.description}</div>}
          {errors[k] && <div className="nf-field-error">{k} {errors[k]}</div>}
        </div>
      ))}
      <div className="nf-row">
        <button className="nf-btn nf-primary" disabled={!valid} onClick={() => onRun(parsed)}>
          ▶ Run
        </button>
        <button className="nf-btn" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </div>
  );
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function pretty(value: JSONValue | undefined): string {
  return value === undefined ? '—' : JSON.stringify(value, null, 2);
}

/** A node's last run: input, output, error, logs, duration and every attempt. */
export function LogsPanel({
  runId,
  nodeId,
  run,
  onClose
}: {
  runId: string;
  nodeId: string;
  run?: INodeRun;
  onClose: () => void;
}): JSX.Element {
  const [attempts, setAttempts] = useState<IAttempt[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [shown, setShown] = useState<number | null>(null);
  const key = `${runId}/${nodeId}/${run?.state}/${run?.attempt}`;
  const last = useRef(key);
  useEffect(() => {
    last.current = key;
    api.logs(runId, nodeId).then(
      a => {
        if (last.current === key) {
          setAttempts(a);
          setError(null);
        }
      },
      err => setError((err as Error).message)
    );
  }, [key]);
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
      {error && <div className="nf-field-error">{error}</div>}
      {!error && !attempts && <div className="nf-help">Loading…</div>}
      {attempts && attempts.length === 0 && (
        <div className="nf-help">No attempt yet ({run?.state ?? 'not started'}).</div>
      )}
      {attempt && (
        <div className="nf-logs-body">
          <div className="nf-row">
            <span className={`nf-pill nf-pill-${attempt.status}`}>{attempt.status}</span>
            <span>attempt {attempt.attempt}</span>
            {attempt.duration_ms != null && <span>{formatMs(attempt.duration_ms)}</span>}
          </div>
          {attempt.error && <pre className="nf-error-text">{attempt.error}</pre>}
          <details open>
            <summary>Output</summary>
            <pre>{pretty(attempt.output)}</pre>
          </details>
          <details>
            <summary>Input</summary>
            <pre>{pretty(attempt.input)}</pre>
          </details>
          <details open={!!attempt.log}>
            <summary>Log</summary>
            <pre>{attempt.log || '—'}</pre>
          </details>
        </div>
      )}
    </div>
  );
}
