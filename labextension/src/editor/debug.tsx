/**
 * The debug loop on the canvas (issue #15): open a node of a run in a notebook, pin the output
 * of a node of a run, and test one node from the inspector without a run.
 *
 * The debug notebook is written by the server (`POST runs/{id}/nodes/{node}/notebook`): it
 * reads the node's recorded context through the engine (masked like every read of the run,
 * also behind a forwarding server), writes `<flow>-<node>-debug.ipynb` next to the flow with
 * the contents manager, and finds it again rather than overwriting someone's edits. The canvas
 * then opens that path in Lab.
 */
import React, { useEffect, useRef, useState } from 'react';
import { api, ApiError, INodeTest } from '../api.js';
import { formatMs } from '../canvas/details.js';
import type { IAttempt } from '../canvas/types.js';
import type { IFlowNode, JSONObject, JSONValue } from '../graph.js';
import type { NxFlowDoc } from '../model.js';
import { useEnvChoice } from './envchoice.js';
import type { Notify } from './notice.js';

/** Open a path of the server in Lab (a notebook: with its kernel). */
export type OpenPath = (path: string) => void;

function pretty(value: JSONValue | undefined): string {
  return value === undefined ? '—' : JSON.stringify(value, null, 2);
}

/** "Open in notebook": write (or find) the node's debug notebook, then open it in Lab. */
export function OpenInNotebook({
  runId,
  nodeId,
  path,
  openPath,
  notify
}: {
  runId: string;
  nodeId: string;
  path: string;
  openPath?: OpenPath;
  notify: Notify;
}): JSX.Element {
  const [busy, setBusy] = useState(false);
  const open = async () => {
    setBusy(true);
    try {
      const nb = await api.debugNotebook(runId, nodeId, path);
      if (openPath) {
        openPath(nb.path);
      } else {
        notify(`Debug notebook ${nb.created ? 'written' : 'already there'}: ${nb.path}`);
      }
    } catch (err) {
      notify(`Open in notebook failed: ${(err as Error).message}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <button
      className="nf-btn"
      data-action="open-notebook"
      disabled={busy}
      title="Open this node of the run in a notebook: attach to the run, load what the node saw, run it here, edit its code and write the fix back into the flow"
      onClick={() => void open()}
    >
      Open in notebook
    </button>
  );
}

/** The largest output pinned from the canvas (JSON characters): a pin is part of the flow
 *  document every collaborator syncs and every run stores as its version. */
export const PIN_MAX_CHARS = 256 * 1024;

/** Pin the attempt's output on the node (the document's `pin`), or unpin it. */
export function PinOutput({
  doc,
  node,
  runId,
  attempt
}: {
  doc: NxFlowDoc;
  node: IFlowNode | undefined;
  runId: string;
  attempt: IAttempt | undefined;
}): JSX.Element | null {
  if (!node) {
    return null; // a node of an older version of the flow: nothing to pin it on
  }
  const pin = node.pin as { output?: JSONValue; from_run?: string } | undefined;
  if (pin) {
    return (
      <button
        className="nf-btn"
        data-action="unpin"
        title="Remove the pinned output: runs with pins run this node again"
        onClick={() => doc.updateNode(node.id, { pin: undefined })}
      >
        Unpin output
      </button>
    );
  }
  const size = attempt?.output === undefined ? 0 : JSON.stringify(attempt.output).length;
  const ok = attempt?.status === 'succeeded' && attempt.output !== undefined && size <= PIN_MAX_CHARS;
  return (
    <button
      className="nf-btn"
      data-action="pin-output"
      disabled={!ok}
      title={
        ok
          ? 'Pin this output on the node: runs started with "use pins" give it instead of running the node (triggers never do)'
          : size > PIN_MAX_CHARS
            ? `This output is ${Math.round(size / 1024)} KB: a pin lives in the shared flow document, at most ${PIN_MAX_CHARS / 1024} KB (pin a smaller value with f.pin in a notebook)`
            : 'Only a succeeded attempt’s output can be pinned'
      }
      onClick={() =>
        ok &&
        doc.updateNode(node.id, {
          pin: {
            output: attempt!.output as JSONValue,
            from_run: runId,
            pinned_at: new Date().toISOString().replace(/\.\d+Z$/, 'Z')
          }
        })
      }
    >
      Pin output
    </button>
  );
}

/** Parse the inputs typed for a test: empty means "those of the latest run". */
export function parseTestInputs(text: string): { inputs?: JSONObject; error?: string } {
  if (!text.trim()) {
    return {};
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { error: `Inputs are not JSON: ${(err as Error).message}` };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { error: 'Inputs must be a JSON object: {"parent id": its output, …}' };
  }
  return { inputs: value as JSONObject };
}

const POLL_MS = 500;
const FINISHED = new Set(['succeeded', 'failed']);

/**
 * "Test node": run just this node on a worker, outside any run, with the inputs of the latest
 * run (of the run shown, when one is) or the inputs typed as JSON; show its output, log and
 * error here. The node is taken from the flow file as it is now (the live document), so an
 * edit in the inspector is tested at once. It runs in the environment picked beside Run (its
 * variables, secrets and connections, as a run there).
 */
export function TestNode({
  nodeId,
  path,
  runId
}: {
  nodeId: string;
  path: string;
  runId: string | null;
}): JSX.Element {
  const [text, setText] = useState('');
  const [test, setTest] = useState<INodeTest | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [env] = useEnvChoice(path);
  const live = useRef(true);
  useEffect(() => {
    live.current = true;
    return () => {
      live.current = false;
    };
  }, []);
  useEffect(() => {
    setTest(null);
    setError(null);
  }, [nodeId]);
  const run = async () => {
    const parsed = parseTestInputs(text);
    if (parsed.error) {
      setError(parsed.error);
      return;
    }
    setBusy(true);
    setError(null);
    setTest(null);
    try {
      let t = await api.testNode({
        path,
        node_id: nodeId,
        ...(parsed.inputs ? { inputs: parsed.inputs } : runId ? { run_id: runId } : {}),
        ...(env ? { env } : {}),
        wait_s: 20
      });
      const deadline = Date.now() + 120000;
      while (!FINISHED.has(t.status) && live.current && Date.now() < deadline) {
        if (live.current) {
          setTest(t);
        }
        await new Promise(r => window.setTimeout(r, POLL_MS));
        t = await api.test(t.test_id);
      }
      if (live.current) {
        setTest(t);
      }
    } catch (err) {
      if (live.current) {
        const message = (err as Error).message;
        setError(err instanceof ApiError && err.status === 503 ? `No worker for the test: ${message}` : message);
      }
    } finally {
      if (live.current) {
        setBusy(false);
      }
    }
  };
  return (
    <div className="nf-test" data-test-node={nodeId} data-test-status={test?.status ?? (busy ? 'starting' : '')}>
      <div className="nf-field">
        <label className="nf-label">Test inputs (JSON)</label>
        <textarea
          className="nf-input nf-test-inputs"
          aria-label="Test inputs"
          rows={3}
          spellCheck={false}
          placeholder={
            runId ? 'empty: the inputs this node had in the run shown' : 'empty: the inputs of the latest run'
          }
          value={text}
          onChange={e => setText(e.target.value)}
        />
        <div className="nf-help">{'{"parent id": its output, …}'}; nothing is written to any run.</div>
      </div>
      <div className="nf-row">
        <button
          className="nf-btn"
          data-action="test-node"
          disabled={busy}
          title={`Run this node on a worker in environment ${env || 'dev'} (the one picked beside Run)`}
          onClick={() => void run()}
        >
          {busy ? 'Testing…' : 'Test node'}
        </button>
        <span className="nf-help" data-test-env={env || 'dev'}>
          in {env || 'dev'}
        </span>
        {test && <span className={`nf-pill nf-pill-${test.status}`}>{test.status}</span>}
        {test?.duration_ms != null && <span className="nf-help">{formatMs(test.duration_ms)}</span>}
      </div>
      {error && <div className="nf-field-error" data-test-error>{error}</div>}
      {test && FINISHED.has(test.status) && (
        <div className="nf-test-result">
          {test.error && <pre className="nf-error-text" data-test-detail="error">{test.error}</pre>}
          {test.status === 'succeeded' && (
            <details open>
              <summary>Output</summary>
              <pre data-test-detail="output">{pretty(test.output)}</pre>
            </details>
          )}
          <details>
            <summary>Inputs</summary>
            <pre data-test-detail="inputs">{pretty(test.inputs)}</pre>
          </details>
          <details open={!!test.log}>
            <summary>Log</summary>
            <pre data-test-detail="log">{test.log || '—'}</pre>
          </details>
        </div>
      )}
    </div>
  );
}
