/**
 * The "Describe a flow" box over the canvas: words go to the server, which asks its configured
 * model for a flow the compiler accepts (the browser never holds a key or an endpoint). The
 * proposal is shown as a read-only preview (the canvas's own node view), to accept into the
 * shared document (one undo step) or discard; a refused answer is shown with the compiler's
 * error, and nothing of it is applied.
 */
import React, { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { Background, ReactFlow, ReactFlowProvider } from '@xyflow/react';
import { api, ApiError, DescribeFailed, IDescribeInfo, INodeType } from '../api.js';
import { flowEdges } from '../canvas/edges.js';
import { NxNode, nodeTypes } from '../canvas/nodeview.js';
import type { IFlow } from '../graph.js';
import type { NxFlowDoc } from '../model.js';
import { useFitToArea } from '../notebook/fit.js';
import { DescribeState, laidOut, summary } from './proposal.js';

export interface IDescribe {
  info: IDescribeInfo | null;
  state: DescribeState;
  ask: (text: string) => void;
  accept: () => void;
  discard: () => void;
}

export function useDescribe(doc: NxFlowDoc): IDescribe {
  const [info, setInfo] = useState<IDescribeInfo | null>(null);
  const [state, setState] = useState<DescribeState>({ phase: 'idle' });
  const asked = useRef(0);
  useEffect(() => {
    api.describeInfo().then(setInfo, () => setInfo({ configured: false, model: null, base_url: null }));
  }, []);

  const ask = useCallback((text: string) => {
    const mine = ++asked.current;
    setState({ phase: 'asking', text });
    api.describe(text).then(
      proposal => {
        if (asked.current === mine) {
          setState({ phase: 'proposed', text, proposal, flow: laidOut(proposal.flow) });
        }
      },
      err => {
        if (asked.current !== mine) {
          return;
        }
        if (err instanceof DescribeFailed) {
          setState({
            phase: 'failed', text, message: err.message, pointer: err.pointer,
            answer: err.answer, attempts: err.attempts.length
          });
        } else {
          const message = err instanceof ApiError ? err.message : String(err);
          setState({ phase: 'failed', text, message });
        }
      }
    );
  }, []);

  const shown = useRef(state);
  shown.current = state;
  const accept = useCallback(() => {
    const current = shown.current;
    if (current.phase === 'proposed') {
      doc.replaceFlow(current.flow); // all of it, or nothing: it compiled as a whole
    }
    setState({ phase: 'idle' });
  }, [doc]);

  const discard = useCallback(() => {
    asked.current++; // an answer still on its way is dropped
    setState({ phase: 'idle' });
  }, []);

  return { info, state, ask, accept, discard };
}

const EXAMPLE =
  'e.g. Every hour fetch https://api.example.com/orders; when there are more than 10, ' +
  'summarize them with an AI node';

function PreviewCanvas({ flow, types }: { flow: IFlow; types: Map<string, INodeType> | null }): JSX.Element {
  const area = useRef<HTMLDivElement>(null);
  const nodes: NxNode[] = useMemo(
    () =>
      flow.nodes.map(node => ({
        id: node.id,
        type: 'nx' as const,
        position: node.position ?? { x: 0, y: 0 },
        draggable: false,
        connectable: false,
        data: { node, typeInfo: types?.get(node.type), catalogLoaded: !!types, peers: [] }
      })),
    [flow, types]
  );
  const edges = useMemo(() => flowEdges(flow.edges, new Map()), [flow]);
  useFitToArea(flow.nodes, area); // computed from the positions: fitView ran before sizes
  return (
    <div className="nf-describe-preview" data-describe-preview ref={area}>
      <ReactFlow<NxNode>
        nodes={nodes}
        edges={edges}
        nodeTypes={nodeTypes}
        nodesDraggable={false}
        nodesConnectable={false}
        elementsSelectable={false}
        minZoom={0.1}
        proOptions={{ hideAttribution: true }}
      >
        <Background gap={16} />
      </ReactFlow>
    </div>
  );
}

function Preview(props: { flow: IFlow; types: Map<string, INodeType> | null }): JSX.Element {
  return (
    <ReactFlowProvider>
      <PreviewCanvas {...props} />
    </ReactFlowProvider>
  );
}

export function DescribePanel({ doc, shownNodes, types }: {
  doc: NxFlowDoc;
  /** How many nodes the canvas holds now (accepting replaces them). */
  shownNodes: number;
  types: Map<string, INodeType> | null;
}): JSX.Element {
  const [open, setOpen] = useState(false);
  const [text, setText] = useState('');
  const { info, state, ask, accept, discard } = useDescribe(doc);
  if (!open) {
    return (
      <button className="nf-btn nf-describe-open" data-describe-open onClick={() => setOpen(true)}>
        Describe a flow…
      </button>
    );
  }
  const configured = info?.configured ?? false;
  const asking = state.phase === 'asking';
  return (
    <div className="nf-describe" data-describe data-describe-phase={state.phase}>
      <div className="nf-describe-head">
        <strong>Describe a flow</strong>
        {info?.model && <span className="nf-help">model {info.model}</span>}
        <button
          className="nf-btn nf-close"
          aria-label="Close describe a flow"
          onClick={() => {
            discard();
            setOpen(false);
          }}
        >
          ✕
        </button>
      </div>
      {info && !configured && (
        <div className="nf-help" data-describe-unconfigured>
          No model is configured on the server: set <code>c.NexusFlow.ai_base_url</code> and{' '}
          <code>ai_model</code> (or NEXUSFLOW_AI_BASE_URL and NEXUSFLOW_AI_MODEL), see docs/ai.md.
        </div>
      )}
      <textarea
        className="nf-input"
        aria-label="What the flow should do"
        rows={3}
        placeholder={EXAMPLE}
        value={text}
        disabled={asking}
        onChange={e => setText(e.target.value)}
        onKeyDown={e => {
          if (e.key === 'Enter' && (e.metaKey || e.ctrlKey) && text.trim() && configured) {
            ask(text);
          }
        }}
      />
      <div className="nf-row">
        <button
          className="nf-btn nf-primary"
          data-describe-ask
          disabled={!text.trim() || asking || !configured}
          onClick={() => ask(text)}
        >
          {asking ? 'Asking…' : 'Propose a flow'}
        </button>
        {asking && <span className="nf-help">the model is answering; the compiler checks the answer</span>}
      </div>
      {state.phase === 'proposed' && (
        <div className="nf-describe-result" data-describe-proposal>
          <div className="nf-help">
            <b>{state.flow.name || 'flow'}</b>: {summary(state.flow)}
            {state.proposal.attempts > 1 && ' (corrected once after the compiler’s error)'}
          </div>
          <Preview flow={state.flow} types={types} />
          <div className="nf-row">
            <button
              className="nf-btn nf-primary"
              data-describe-accept
              onClick={() => {
                accept();
                setOpen(false);
                setText('');
              }}
            >
              {shownNodes
                ? `Accept (replaces the ${shownNodes === 1 ? 'node' : `${shownNodes} nodes`} on the canvas; undo brings ${
                    shownNodes === 1 ? 'it' : 'them'
                  } back)`
                : 'Accept'}
            </button>
            <button className="nf-btn" data-describe-discard onClick={discard}>
              Discard
            </button>
          </div>
        </div>
      )}
      {state.phase === 'failed' && (
        <div className="nf-describe-result" data-describe-error>
          <div className="nf-field-error">
            {state.message}
            {state.pointer ? ` (at ${state.pointer})` : ''}
          </div>
          {state.attempts ? (
            <div className="nf-help">
              The model was asked {state.attempts} times; nothing was applied.
            </div>
          ) : null}
          {state.answer && (
            <details>
              <summary>The model’s answer</summary>
              <pre data-describe-answer>{state.answer}</pre>
            </details>
          )}
          <div className="nf-row">
            <button className="nf-btn" onClick={() => ask(state.text)} disabled={!configured}>
              Try again
            </button>
            <button className="nf-btn" data-describe-discard onClick={discard}>
              Discard
            </button>
          </div>
        </div>
      )}
    </div>
  );
}
