/** Promote from the canvas (issue #17): a version of this file's workflow to an environment,
 *  after the server's dry run shows what changes there; the promotion history below. */
import React, { useEffect, useState } from 'react';
import { api, IChanges, IPromotion, IPromotionRecord, IWorkflowVersion } from '../api.js';

function Changes({ label, changes }: { label: string; changes: IChanges }): JSX.Element | null {
  const parts = (['added', 'removed', 'changed'] as const).filter(k => changes[k].length > 0);
  if (parts.length === 0) {
    return null;
  }
  return (
    <div className="nf-promote-changes" data-changes={label}>
      {label}:{' '}
      {parts.map(k => (
        <span key={k} className={`nf-diff-${k}`} data-kind={k}>
          {k} {changes[k].join(', ')}{' '}
        </span>
      ))}
    </div>
  );
}

/** The dry run's answer: the version it replaces and the nodes and edges that change. */
function Preview({ preview }: { preview: IPromotion }): JSX.Element {
  const same = preview.unchanged;
  const nothing = ['nodes', 'edges'].every(part =>
    (['added', 'removed', 'changed'] as const).every(k => preview[part as 'nodes' | 'edges'][k].length === 0)
  );
  return (
    <div className="nf-promote-preview" data-promote-preview data-from-version={preview.from_version ?? ''}>
      <div>
        {preview.env}:{' '}
        {preview.from_version === null ? 'nothing promoted yet' : `v${preview.from_version}`} → v{preview.version}
        {same ? ' (already promoted)' : ''}
      </div>
      <Changes label="nodes" changes={preview.nodes} />
      <Changes label="edges" changes={preview.edges} />
      {(preview.fields ?? []).length > 0 && (
        <div className="nf-promote-changes">flow fields: {(preview.fields ?? []).join(', ')}</div>
      )}
      {nothing && !same && <div className="nf-muted">no node or edge changes</div>}
      {preview.text && (
        <details>
          <summary>document diff</summary>
          <pre className="nf-promote-text">{preview.text}</pre>
        </details>
      )}
    </div>
  );
}

export function PromotePopover({ path, onClose }: { path: string; onClose: () => void }): JSX.Element {
  const [workflowId, setWorkflowId] = useState<string | null | undefined>(undefined);
  const [versions, setVersions] = useState<IWorkflowVersion[]>([]);
  const [envs, setEnvs] = useState<string[]>([]);
  const [version, setVersion] = useState<number | null>(null);
  const [env, setEnv] = useState('');
  const [preview, setPreview] = useState<IPromotion | null>(null);
  const [refusal, setRefusal] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const [history, setHistory] = useState<IPromotionRecord[]>([]);
  const [busy, setBusy] = useState(false);

  const loadHistory = (wid: string) =>
    api.promotions(wid).then(
      r => setHistory(r.history),
      err => setRefusal(`Promotion history: ${(err as Error).message}`)
    );

  useEffect(() => {
    let alive = true;
    (async () => {
      try {
        // A file is filed under its workflow when it first runs (each run stores its version).
        const runs = await api.runs(path, 1);
        const wid = runs.length ? String(runs[0].workflow_id ?? '') || null : null;
        const [list, environments] = await Promise.all([
          wid ? api.versions(wid) : Promise.resolve([]),
          api.environments()
        ]);
        if (!alive) {
          return;
        }
        setWorkflowId(wid);
        setVersions(list);
        setVersion(list.length ? list[0].version : null);
        const names = environments.map(e => e.name).filter(n => n !== 'dev');
        setEnvs(names);
        setEnv(names[0] ?? '');
        if (wid) {
          await loadHistory(wid);
        }
      } catch (err) {
        if (alive) {
          setWorkflowId(null);
          setRefusal((err as Error).message);
        }
      }
    })();
    return () => {
      alive = false;
    };
  }, [path]);

  // A new choice asks the server again what would change.
  useEffect(() => {
    setPreview(null);
    setRefusal(null);
    setDone(null);
    if (!workflowId || version === null || !env) {
      return;
    }
    let alive = true;
    setBusy(true);
    api.promote(workflowId, version, env, true).then(
      r => alive && setPreview(r),
      err => alive && setRefusal((err as Error).message)
    ).finally(() => alive && setBusy(false));
    return () => {
      alive = false;
    };
  }, [workflowId, version, env]);

  const confirm = async () => {
    if (!workflowId || version === null || !env) {
      return;
    }
    setBusy(true);
    setRefusal(null);
    try {
      const r = await api.promote(workflowId, version, env, false);
      setDone(r.unchanged ? `v${r.version} was already promoted to ${env}` : `v${r.version} promoted to ${env}`);
      setPreview({ ...r, unchanged: true });
      await loadHistory(workflowId);
    } catch (err) {
      setRefusal((err as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="nf-popover nf-promote" data-promote role="dialog" aria-label="Promote">
      <div className="nf-popover-title">
        Promote a version
        <button className="nf-btn nf-close" aria-label="Close" data-action="promote-close" onClick={onClose}>
          ✕
        </button>
      </div>
      {workflowId === undefined && <div className="nf-muted">Loading…</div>}
      {workflowId === null && !refusal && (
        <div className="nf-muted" data-promote-empty>
          No version of this flow is stored yet: each run stores the flow as a version. Run it once.
        </div>
      )}
      {workflowId && (
        <>
          <label className="nf-row">
            Version{' '}
            <select
              className="nf-input"
              aria-label="Version to promote"
              data-action="promote-version"
              value={version ?? ''}
              onChange={e => setVersion(Number(e.target.value))}
            >
              {versions.map(v => (
                <option key={v.version} value={v.version}>
                  v{v.version}
                  {v.created_at ? ` · ${new Date(v.created_at).toLocaleString()}` : ''}
                </option>
              ))}
            </select>
          </label>
          <label className="nf-row">
            To{' '}
            <select
              className="nf-input"
              aria-label="Target environment"
              data-action="promote-env"
              value={env}
              onChange={e => setEnv(e.target.value)}
            >
              {envs.length === 0 && <option value="">no environment besides dev</option>}
              {envs.map(name => (
                <option key={name} value={name}>
                  {name}
                </option>
              ))}
            </select>
          </label>
          {busy && <div className="nf-muted">Asking the server…</div>}
          {preview && <Preview preview={preview} />}
          <div className="nf-row">
            <button
              className="nf-btn nf-primary"
              data-action="promote-confirm"
              disabled={busy || !preview || preview.unchanged}
              onClick={confirm}
              title="Record the promotion: the environment's triggers run this version from now on"
            >
              Confirm
            </button>
            {done && (
              <span className="nf-promote-done" data-promote-done>
                {done}
              </span>
            )}
          </div>
        </>
      )}
      {refusal && (
        <div className="nf-refusal" data-promote-refusal role="alert">
          {refusal}
        </div>
      )}
      {workflowId && (
        <div className="nf-promote-history">
          <div className="nf-popover-title">History</div>
          {history.length === 0 && <div className="nf-muted">No promotion yet</div>}
          <ul>
            {history.map(h => (
              <li key={h.id} data-promotion={h.id} data-env={h.env} data-version={h.version}>
                {h.env}: v{h.version}
                {h.previous_version !== null ? ` (was v${h.previous_version})` : ''} · {h.promoted_by ?? 'someone'} ·{' '}
                {new Date(h.promoted_at).toLocaleString()}
              </li>
            ))}
          </ul>
        </div>
      )}
    </div>
  );
}
