/** The inspector: the selected node's fields and config form, or the flow's own fields. */
import React from 'react';
import { INodeType } from '../api.js';
import { isHttpUrl, NodeIcon } from '../canvas/icon.js';
import { IFlow, IFlowNode, JSONObject } from '../graph.js';
import { NxFlowDoc } from '../model.js';
import type { INodeRun } from '../canvas/types.js';
import { OpenInNotebook, OpenPath, TestNode } from './debug.js';
import type { Notify } from './notice.js';
import { SchemaForm } from './schemaform.js';

const TRIGGER_RULES = ['all_success', 'all_done', 'one_success', 'none_failed', 'one_failed', 'all_failed'];

function NumberInput({
  label,
  value,
  onChange
}: {
  label: string;
  value: number | undefined;
  onChange: (v: number | undefined) => void;
}): JSX.Element {
  return (
    <div className="nf-field">
      <label className="nf-label">{label}</label>
      <input
        className="nf-input"
        aria-label={label}
        type="number"
        value={value ?? ''}
        onChange={e => onChange(e.target.value === '' ? undefined : Number(e.target.value))}
      />
    </div>
  );
}

export function Inspector({
  doc,
  node,
  typeInfo,
  catalogError,
  secrets,
  run,
  onShowLogs,
  path,
  runId,
  openPath,
  notify
}: {
  doc: NxFlowDoc;
  node: IFlowNode;
  typeInfo?: INodeType;
  catalogError: string | null;
  secrets: string[] | null;
  run?: INodeRun;
  onShowLogs?: () => void;
  /** The flow file (a contents path): what "Test node" tests and the debug notebook's place. */
  path: string;
  /** The run shown, if any. */
  runId: string | null;
  openPath?: OpenPath;
  notify: Notify;
}): JSX.Element {
  const update = (patch: { [key: string]: any }) => doc.updateNode(node.id, patch);
  const retry = (node.retry ?? {}) as JSONObject;
  const setRetry = (key: string, v: number | undefined) => {
    const next = { ...retry };
    if (v === undefined) {
      delete next[key];
    } else {
      next[key] = v;
    }
    update({ retry: Object.keys(next).length ? next : undefined });
  };
  return (
    <div className="nf-inspector" data-inspector-node={node.id}>
      <div className="nf-inspector-head">
        <div className="nf-inspector-title">
          <NodeIcon icon={typeInfo?.icon} />
          {typeInfo?.title ?? node.type}
        </div>
        <div className="nf-help">
          id <code>{node.id}</code>
        </div>
        {typeInfo?.description && <div className="nf-help">{typeInfo.description}</div>}
        {typeInfo && (typeInfo.package || isHttpUrl(typeInfo.docs_url)) && (
          <div className="nf-help" data-inspector-package={typeInfo.package ?? ''}>
            {typeInfo.type}
            {typeInfo.package && typeInfo.package !== 'nexusflow' && (
              <>
                {' '}
                from {typeInfo.package} {typeInfo.version}
              </>
            )}
            {isHttpUrl(typeInfo.docs_url) && (
              <>
                {' · '}
                <a href={typeInfo.docs_url} target="_blank" rel="noopener noreferrer" data-docs-link>
                  Docs
                </a>
              </>
            )}
          </div>
        )}
      </div>
      {run && (
        <div className="nf-row nf-wrap">
          <span className={`nf-pill nf-pill-${run.state}`}>{run.state}</span>
          {run.attempt !== undefined && <span className="nf-help">attempt {run.attempt}</span>}
          {onShowLogs && (
            <button className="nf-btn" onClick={onShowLogs}>
              Logs &amp; output
            </button>
          )}
          {runId && (
            <OpenInNotebook runId={runId} nodeId={node.id} path={path} openPath={openPath} notify={notify} />
          )}
        </div>
      )}
      {run?.error && <pre className="nf-error-text">{run.error}</pre>}
      <div className="nf-field">
        <label className="nf-label">Label</label>
        <input
          className="nf-input"
          aria-label="Label"
          value={node.label ?? ''}
          onChange={e => update({ label: e.target.value || undefined })}
        />
      </div>
      <div className="nf-section">Config</div>
      {typeInfo ? (
        <SchemaForm
          schema={typeInfo.config_schema}
          value={(node.config ?? {}) as JSONObject}
          secrets={secrets}
          onChange={config => update({ config })}
        />
      ) : (
        <div className="nf-field-error">
          {catalogError
            ? 'Node types unavailable: the config is shown as JSON.'
            : `Unknown node type '${node.type}'.`}
          <SchemaForm
            schema={{ type: 'object' }}
            value={(node.config ?? {}) as JSONObject}
            secrets={secrets}
            onChange={config => update({ config })}
          />
        </div>
      )}
      <div className="nf-section">Execution</div>
      <div className="nf-field">
        <label className="nf-label">Trigger rule</label>
        <select
          className="nf-input"
          aria-label="Trigger rule"
          value={node.trigger_rule ?? 'all_success'}
          onChange={e =>
            update({ trigger_rule: e.target.value === 'all_success' ? undefined : e.target.value })
          }
        >
          {TRIGGER_RULES.map(r => (
            <option key={r}>{r}</option>
          ))}
        </select>
      </div>
      <div className="nf-field">
        <label className="nf-label">
          <input
            type="checkbox"
            aria-label="Recovers"
            checked={node.recovers === true}
            onChange={e => update({ recovers: e.target.checked ? true : undefined })}
          />{' '}
          Recovers
        </label>
        <div className="nf-help">
          An error handler (trigger rule one_failed or all_failed) that, when it succeeds, keeps
          its parents’ failures from failing the run.
        </div>
      </div>
      <div className="nf-field">
        <label className="nf-label">Pool</label>
        <input
          className="nf-input"
          aria-label="Pool"
          value={(node.pool as string | undefined) ?? ''}
          placeholder="none"
          onChange={e => update({ pool: e.target.value || undefined })}
        />
        <div className="nf-help">At most the pool’s size of its nodes run at once, across all runs.</div>
      </div>
      <NumberInput label="Timeout (s)" value={node.timeout_s} onChange={v => update({ timeout_s: v })} />
      <NumberInput
        label="Max attempts"
        value={retry.max_attempts as number | undefined}
        onChange={v => setRetry('max_attempts', v)}
      />
      <NumberInput
        label="Backoff (s)"
        value={retry.backoff_s as number | undefined}
        onChange={v => setRetry('backoff_s', v)}
      />
      <NumberInput
        label="Cache results (s)"
        value={cacheTtl(node)}
        onChange={v => update({ cache: v !== undefined && v > 0 ? { ttl_s: v } : undefined })}
      />
      <div className="nf-help">
        A result of the same node, config, code and inputs that succeeded within this many
        seconds is used instead of running the node (runs show it as cached).
      </div>
      {node.pin && <PinnedOutput node={node} onUnpin={() => update({ pin: undefined })} />}
      <div className="nf-section">Test</div>
      <TestNode nodeId={node.id} path={path} runId={runId} />
    </div>
  );
}

/** The node's cache TTL (`cache: {ttl_s}`), if it has one. */
export function cacheTtl(node: IFlowNode): number | undefined {
  const cache = node.cache as { ttl_s?: unknown } | undefined;
  return typeof cache?.ttl_s === 'number' ? cache.ttl_s : undefined;
}

/** The node's pinned output (the document's `pin`), with Unpin. */
function PinnedOutput({ node, onUnpin }: { node: IFlowNode; onUnpin: () => void }): JSX.Element {
  const pin = node.pin as { output?: unknown; from_run?: string; pinned_at?: string };
  return (
    <div className="nf-pinned" data-pinned-node={node.id}>
      <div className="nf-section">Pinned output</div>
      <pre className="nf-pinned-output">{JSON.stringify(pin.output ?? null, null, 2)}</pre>
      <div className="nf-row">
        <span className="nf-help">
          {pin.from_run ? `from run ${String(pin.from_run).slice(0, 8)}` : 'pinned by hand'}
          {pin.pinned_at ? ` · ${pin.pinned_at}` : ''}; used by runs started with pins
        </span>
        <button className="nf-btn" data-action="unpin" onClick={onUnpin}>
          Unpin
        </button>
      </div>
    </div>
  );
}

export function FlowInspector({ doc, flow }: { doc: NxFlowDoc; flow: IFlow }): JSX.Element {
  return (
    <div className="nf-inspector">
      <div className="nf-inspector-title">Flow</div>
      <div className="nf-field">
        <label className="nf-label">Name</label>
        <input
          className="nf-input"
          aria-label="Flow name"
          value={flow.name ?? ''}
          onChange={e => doc.setMeta('name', e.target.value || undefined)}
        />
      </div>
      <div className="nf-field">
        <label className="nf-label">Description</label>
        <textarea
          className="nf-input"
          aria-label="Flow description"
          value={flow.description ?? ''}
          onChange={e => doc.setMeta('description', e.target.value || undefined)}
        />
      </div>
      <div className="nf-field">
        <label className="nf-label">On failure, run</label>
        <input
          className="nf-input"
          aria-label="On failure flow"
          placeholder="alerts/notify.nxflow"
          value={typeof flow.on_failure === 'string' ? flow.on_failure : ''}
          onChange={e => doc.setMeta('on_failure', e.target.value || undefined)}
        />
        <div className="nf-help">
          A flow started when a run of this one fails, with params run_id, flow and failed_nodes.
        </div>
      </div>
      <NumberInput
        label="Max active runs"
        value={flow.max_active_runs as number | undefined}
        onChange={v => doc.setMeta('max_active_runs', v)}
      />
      <div className="nf-section">Run inputs (params)</div>
      <SchemaForm
        schema={{ type: 'object', properties: { params: { type: 'object', title: 'params' } } }}
        value={flow.params ? { params: flow.params as JSONObject } : {}}
        secrets={null}
        onChange={v => doc.setMeta('params', v.params)}
      />
      <div className="nf-help">
        Select a node to edit it. Drag node types from the palette; connect a node’s bottom
        handle to another’s top.
      </div>
    </div>
  );
}
