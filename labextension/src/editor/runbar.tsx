/** The run toolbar: Run (asking for inputs when the flow has params; with pins or not; in an
 *  environment), Cancel, Retry (as it ran, or with the current flow), history. */
import React, { useState } from 'react';
import { api, ApiError, IRunSummary } from '../api.js';
import type { IFlow, JSONObject } from '../graph.js';
import type { NxFlowDoc } from '../model.js';
import { useEnvChoice } from './envchoice.js';
import { InputsForm } from './inputs.js';
import { historyLabel } from './runlabel.js';
import type { Notify } from './notice.js';
import type { IRunView } from './runview.js';

interface IToolbarProps {
  doc: NxFlowDoc;
  path: string;
  flow: IFlow;
  view: IRunView;
  pick: (runId: string | null) => void;
  /** The run the user pinned in the history (null: the canvas follows the newest run). */
  pinned: string | null;
  notify: Notify;
}

/** Run (with an inputs form), Cancel, Retry from failed and the run history picker. */
export function RunToolbar({ doc, path, flow, view, pick, pinned, notify }: IToolbarProps): JSX.Element {
  const [history, setHistory] = useState<IRunSummary[] | null>(null);
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  const [usePins, setUsePins] = useState(false);
  const [current, setCurrent] = useState(false);
  const [refused, setRefused] = useState<string | null>(null);
  const [envs, setEnvs] = useState<string[] | null>(null);
  const [env, setEnv] = useEnvChoice(path); // Test node in the inspector uses it too
  const pins = flow.nodes.filter(n => n.pin).length;
  const params = flow.params ?? {};
  const hasParams = Object.keys(params).length > 0;
  const active = view.status === 'running' || (view.runId !== null && view.status === null);

  const start = async (inputs: JSONObject) => {
    setBusy(true);
    setRefused(null);
    try {
      const runId = await api.startRun(path, inputs, {
        use_pins: usePins && pins > 0,
        env: env || undefined
      });
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
    setRefused(null);
    try {
      if (what === 'cancel') {
        await api.cancel(view.runId);
      } else if (current) {
        // The same run, its failed nodes run again with the flow as it is now.
        doc.runId = (await api.retryUpdated(view.runId, path)).run_id;
        pick(null);
      } else {
        doc.runId = await api.retry(view.runId);
        pick(null);
      }
    } catch (err) {
      const message = (err as Error).message;
      if (what === 'retry' && current && err instanceof ApiError && err.status === 409) {
        setRefused(message); // the graph no longer fits what ran: say why, until the next try
      }
      notify(`${what === 'cancel' ? 'Cancel' : 'Retry'} ${what === 'retry' && current ? 'refused' : 'failed'}: ${message}`);
    } finally {
      setBusy(false);
    }
  };
  const loadEnvs = () => {
    api.environments().then(
      list => setEnvs(list.map(e => e.name).filter(n => n !== 'dev')),
      err => notify(`Environments: ${(err as Error).message}`)
    );
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
      <select
        className="nf-input nf-env"
        aria-label="Environment"
        data-action="env"
        title="The environment the run runs in: its variables (env['NAME']), secrets and connections"
        value={env}
        onFocus={loadEnvs}
        onMouseDown={loadEnvs}
        onChange={e => setEnv(e.target.value)}
      >
        <option value="">dev</option>
        {env && !(envs ?? []).includes(env) && <option value={env}>{env}</option>}
        {(envs ?? []).map(name => (
          <option key={name} value={name}>
            {name}
          </option>
        ))}
      </select>
      {pins > 0 && (
        <label
          className="nf-check"
          title={`Nodes with a pinned output (${pins}) give it instead of running, in the runs you start here`}
        >
          <input
            type="checkbox"
            aria-label="Use pins"
            data-action="use-pins"
            checked={usePins}
            onChange={e => setUsePins(e.target.checked)}
          />
          use pins
        </label>
      )}
      <button className="nf-btn" data-action="cancel" disabled={busy || !active} onClick={() => act('cancel')}>
        ■ Cancel
      </button>
      <button
        className="nf-btn"
        data-action="retry"
        disabled={busy || !view.runId || !(view.status === 'failed' || view.status === 'canceled')}
        onClick={() => act('retry')}
        title={
          current
            ? 'Run the failed, canceled and skipped nodes of the same run again with the flow as it is now, keeping what succeeded'
            : 'Run the failed, canceled and skipped nodes again, keeping what succeeded'
        }
      >
        ↻ Retry
      </button>
      <CurrentFlowToggle
        action="retry-current"
        title="Retry with the flow as it is now (your fix), in the same run; refused when a node that succeeded was removed or its inputs rewired"
        checked={current}
        onChange={setCurrent}
      />
      {refused && (
        <span className="nf-refusal" data-retry-refusal role="alert" title={refused}>
          Retry refused: {refused}
          <button className="nf-btn nf-close" aria-label="Dismiss" onClick={() => setRefused(null)}>
            ✕
          </button>
        </span>
      )}
      <select
        className="nf-input nf-history"
        aria-label="Run history"
        value={view.runId ?? ''}
        onFocus={loadHistory}
        onMouseDown={loadHistory}
        onChange={e => pick(e.target.value || null)}
      >
        <option value="">{view.runId ? 'newest run' : 'No run'}</option>
        {view.runId && !(history ?? []).some(r => r.run_id === view.runId) && (
          <option value={view.runId}>{view.runId.slice(0, 8)} · {view.status ?? '…'}</option>
        )}
        {(history ?? []).map(r => (
          <option key={r.run_id} value={r.run_id} data-history>
            {historyLabel(r)}
          </option>
        ))}
      </select>
      {pinned && (
        <button
          className="nf-btn nf-follow"
          data-action="follow-newest"
          title="This run is pinned: runs started elsewhere do not replace it. Show the newest run again."
          onClick={() => pick(null)}
        >
          ⇥ Follow newest
        </button>
      )}
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

/** The "current flow" choice beside a Retry: retry with the flow (and its sub-flow files) as
 *  it is now rather than the version the run ran. */
export function CurrentFlowToggle({
  action,
  title,
  checked,
  onChange
}: {
  action: string;
  title: string;
  checked: boolean;
  onChange: (checked: boolean) => void;
}): JSX.Element {
  return (
    <label className="nf-check" title={title}>
      <input
        type="checkbox"
        aria-label="Retry with the current flow"
        data-action={action}
        checked={checked}
        onChange={e => onChange(e.target.checked)}
      />
      current flow
    </label>
  );
}
