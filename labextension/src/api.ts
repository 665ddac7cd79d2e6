/** Client of the Nexus-Flow server extension's REST and websocket API. */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import type { IAttempt, IItemCounts, IItemsPage } from './canvas/types.js';
import type { IFlow, JSONObject, JSONValue } from './graph.js';

export type { IAttempt, IItemCounts, IItemsPage };

export interface INodeType {
  type: string;
  title: string;
  description: string;
  category: string;
  config_schema: JSONObject;
  output_handles: string[];
  queue: string;
  /** An emoji or symbol, or a data:image/svg+xml or data:image/png base64 URI. */
  icon?: string;
  /** An http(s) address of the type's documentation ('' for none). */
  docs_url?: string;
  /** The package that provides the type ('nexusflow' for the built-in ones), its version. */
  package?: string;
  version?: string;
}

/** A node package's entry point that could not be registered, and why. */
export interface IBrokenType {
  type: string;
  package: string;
  version: string;
  entry_point: string | null;
  reason: string;
}

export interface IRunSummary {
  run_id: string;
  status: string;
  created_at?: string;
  started_at?: string | null;
  ended_at?: string | null;
  /** What started it: manual (the canvas, REST), notebook, schedule, webhook, queue, subflow,
   *  on_failure, replay. */
  trigger?: string;
  env?: string;
  [key: string]: JSONValue | undefined;
}

export interface INodeRunState {
  state: string;
  attempts?: number;
  started_at?: string | null;
  ended_at?: string | null;
  output?: JSONValue;
}

export interface IRun {
  run_id: string;
  status: string;
  name?: string;
  workflow_id?: string;
  version?: number;
  /** The flow file the run was started from (a server's run: its path there), or a child
   *  run's sub-flow path as its parent names it; null for a stored workflow. */
  source?: string | null;
  trigger?: string;
  parent?: { run_id: string; node_id: string; item?: number | null } | null;
  options?: { use_pins?: boolean; cache?: boolean };
  nodes: {
    [id: string]: INodeRunState & {
      waiting?: IWaiting;
      child_run?: string;
      error?: string | null;
      /** The run and node whose result this node was served from (the result cache). */
      cached_from?: ICachedFrom;
      /** The node's pinned output stood in for running it (a run started with pins). */
      pinned?: boolean;
      /** A map node's item counts. */
      items?: IItemCounts;
      version?: number;
    };
  };
}

/** Where a cached result came from (`cached_from` of a node in the run JSON). */
export interface ICachedFrom {
  run_id: string;
  node_id: string;
  [key: string]: JSONValue;
}

/** What a retry with the flow's current version did (POST runs/{id}/retry, update: true). */
export interface IRunUpdate {
  run_id: string;
  version: number;
  previous_version?: number;
  rerun?: string[];
  added?: string[];
  removed?: string[];
  stale?: string[];
}

/** A one-node test (POST tests, GET tests/{id}): run by a worker outside any run. */
export interface INodeTest {
  test_id: string;
  status: 'queued' | 'running' | 'succeeded' | 'failed';
  node_id?: string;
  output?: JSONValue;
  error?: string | null;
  log?: string | null;
  duration_ms?: number | null;
  inputs?: JSONValue;
  params?: JSONValue;
  from_run?: string | null;
  /** The environment the test ran in. */
  env?: string;
}

/** What "Test node" sends: the node of the flow file (as it is now), and what it runs on. */
export interface ITestRequest {
  path: string;
  node_id: string;
  /** Parents' outputs by parent id; omitted: those of the latest run (or of `run_id`). */
  inputs?: JSONObject;
  run_id?: string;
  /** The environment the node runs in (absent: dev), as a run's. */
  env?: string;
  wait_s?: number;
}

/** Options of a run started from the canvas. */
export interface IRunOptions {
  /** Nodes with a pinned output give it instead of running. */
  use_pins?: boolean;
  /** The environment the run runs in (absent: dev). */
  env?: string;
}

/** An environment (GET envs). */
export interface IEnvironment {
  name: string;
  restricted: boolean;
  description?: string | null;
}

/** What a waiting node waits for (GET runs/{id}: nodes[id].waiting). */
export interface IWaiting {
  kind: 'subflow' | 'approval' | 'resume' | string;
  message?: string;
  approvers?: string[];
  since?: string;
  timeout_at?: string;
  child?: string;
}

/** An approval's decision (the node's output). */
export interface IDecision {
  approved: boolean;
  decided_by: string;
  decided_at: string;
  comment?: string;
}

export interface IRunEvent {
  run: string;
  node: string | null;
  state: string;
  attempt?: number;
  at?: string | number;
  duration_ms?: number | null;
  error?: string | null;
  /** A map node's item counts (its `running` events while the items run). */
  items?: IItemCounts;
  /** A queued node no live worker serves: what to start (until the node's next event). */
  waiting?: IWaiting;
  /** A node's success served from the result cache: the run and node the result came from. */
  cached_from?: ICachedFrom;
  /** A node's success given by its pinned output (a run started with pins). */
  pinned?: boolean;
}

/** An error from the server, with a message meant for the user. */
export class ApiError extends Error {
  constructor(message: string, readonly status: number | null, readonly body: any = null) {
    super(message);
  }
}

const BASE = 'nexusflow/api';

async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, BASE, path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (err) {
    throw new ApiError(`Nexus-Flow server not reachable (${(err as Error).message})`, null);
  }
  const text = await response.text();
  let body: any = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    if (response.status === 404 && !body?.message && !body?.error) {
      throw new ApiError(
        'Nexus-Flow server extension not reachable (is it installed and enabled?)', 404
      );
    }
    const message = body?.message ?? body?.error ?? body?.reason ?? response.statusText;
    throw new ApiError(String(message || `HTTP ${response.status}`), response.status, body);
  }
  return body as T;
}

function post<T>(path: string, body: JSONValue = {}): Promise<T> {
  return request<T>(path, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'Content-Type': 'application/json' }
  });
}

/** What "describe a flow" answers (the server's model proposed a flow the compiler accepted). */
export interface IProposal {
  flow: IFlow;
  model: string;
  usage: { prompt_tokens: number | null; completion_tokens: number | null };
  attempts: number;
  faults: { message: string; pointer: string }[];
}

/** Whether the server has a model for "describe a flow". */
export interface IDescribeInfo {
  configured: boolean;
  model: string | null;
  base_url: string | null;
}

/** A refused description: the compiler's error, where, and the model's last answer. */
export class DescribeFailed extends ApiError {
  constructor(
    message: string,
    readonly pointer: string,
    readonly answer: string,
    readonly attempts: { message: string; pointer: string }[]
  ) {
    super(message, 422);
  }
}

async function describe(text: string): Promise<IProposal> {
  try {
    return await post<IProposal>('describe', { text });
  } catch (err) {
    const body = err instanceof ApiError ? err.body : null;
    if (err instanceof ApiError && err.status === 422 && body?.error === 'DescribeError') {
      throw new DescribeFailed(body.message, body.pointer ?? '', body.answer ?? '', body.attempts ?? []);
    }
    throw err;
  }
}

/** A stored version of a workflow (GET workflows/{id}/versions, newest first). */
export interface IWorkflowVersion {
  workflow_id: string;
  name?: string;
  version: number;
  created_at?: string;
  created_by?: string | null;
}

/** Ids added, removed and changed between two graphs. */
export interface IChanges {
  added: string[];
  removed: string[];
  changed: string[];
}

/** What a promotion changes (POST workflows/{id}/promote; with dry_run nothing is recorded). */
export interface IPromotion {
  workflow_id: string;
  env: string;
  version: number;
  from_version: number | null;
  unchanged: boolean;
  dry_run: boolean;
  nodes: IChanges;
  edges: IChanges;
  fields?: string[];
  text: string;
  promotion?: { id: number; promoted_by: string | null; promoted_at: string };
}

/** One row of a workflow's promotion history (newest first). */
export interface IPromotionRecord {
  id: number;
  env: string;
  version: number;
  previous_version: number | null;
  promoted_by: string | null;
  promoted_at: string;
  note: string | null;
}

/** A stored connection as the server lists it (never its password or header values). */
export interface IConnection {
  name: string;
  env: string;
  kind: 'postgres' | 'http';
  display: string;
  trusted?: boolean;
  groups?: string[];
  updated_at?: string;
}

/** What PUT connections/{name} takes (the password and headers are write-only). */
export interface IConnectionInput {
  kind: 'postgres' | 'http';
  url: string;
  password?: string;
  headers?: { [name: string]: string };
  groups?: string[];
}

export const api = {
  describeInfo: () => request<IDescribeInfo>('describe'),
  describe,
  nodeTypes: () =>
    request<{ node_types: INodeType[]; broken?: IBrokenType[] }>('node-types').then(r => ({
      types: r.node_types,
      broken: r.broken ?? []
    })),
  secrets: () => request<{ secrets: { name: string }[] }>('secrets').then(r => r.secrets),
  startRun: (path: string, inputs: JSONObject, options: IRunOptions = {}) =>
    post<{ run_id: string }>('runs', {
      path,
      inputs,
      ...(options.use_pins ? { use_pins: true } : {}),
      ...(options.env ? { env: options.env } : {})
    }).then(r => r.run_id),
  environments: () =>
    request<{ environments: IEnvironment[] }>('envs').then(r => r.environments),
  versions: (workflowId: string) =>
    request<{ versions: IWorkflowVersion[] }>(
      `workflows/${encodeURIComponent(workflowId)}/versions`
    ).then(r => r.versions),
  promote: (workflowId: string, version: number, env: string, dryRun: boolean) =>
    post<IPromotion>(`workflows/${encodeURIComponent(workflowId)}/promote`, {
      version,
      env,
      dry_run: dryRun
    }),
  promotions: (workflowId: string) =>
    request<{ current: { [env: string]: number }; history: IPromotionRecord[] }>(
      `workflows/${encodeURIComponent(workflowId)}/promotions`
    ),
  connections: () =>
    request<{ connections: IConnection[] }>('connections').then(r => r.connections),
  putConnection: (name: string, env: string, body: IConnectionInput) =>
    request<IConnection>(
      `connections/${encodeURIComponent(name)}${env ? `?env=${encodeURIComponent(env)}` : ''}`,
      { method: 'PUT', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } }
    ),
  testConnection: (name: string, env: string) =>
    post<{ ok: boolean; message: string; ms?: number }>(
      `connections/${encodeURIComponent(name)}/test${env ? `?env=${encodeURIComponent(env)}` : ''}`
    ),
  runs: (path: string, limit = 50) =>
    request<{ runs: IRunSummary[] }>(`runs?path=${encodeURIComponent(path)}&limit=${limit}`).then(
      r => r.runs
    ),
  run: (runId: string, outputs = true) =>
    request<IRun>(`runs/${encodeURIComponent(runId)}${outputs ? '' : '?outputs=false'}`),
  cancel: (runId: string) => post<{ run_id: string }>(`runs/${encodeURIComponent(runId)}/cancel`),
  retry: (runId: string) =>
    post<{ run_id: string }>(`runs/${encodeURIComponent(runId)}/retry`).then(r => r.run_id),
  /** Resume the run with the flow file as it is now (the live document); 409 names the node
   *  when the graph no longer fits what ran. */
  retryUpdated: (runId: string, path: string) =>
    post<IRunUpdate>(`runs/${encodeURIComponent(runId)}/retry`, { update: true, path }),
  /** Write (or find) `<flow>-<node>-debug.ipynb` next to the flow file. */
  debugNotebook: (runId: string, nodeId: string, path: string) =>
    post<{ path: string; created: boolean }>(
      `runs/${encodeURIComponent(runId)}/nodes/${encodeURIComponent(nodeId)}/notebook`,
      { path }
    ),
  testNode: (req: ITestRequest) => post<INodeTest>('tests', req as unknown as JSONObject),
  test: (testId: string) => request<INodeTest>(`tests/${encodeURIComponent(testId)}`),
  decide: (runId: string, nodeId: string, approved: boolean, comment?: string) =>
    post<{ decision: IDecision }>(
      `runs/${encodeURIComponent(runId)}/nodes/${encodeURIComponent(nodeId)}/decision`,
      comment ? { approved, comment } : { approved }
    ).then(r => r.decision),
  workflow: (workflowId: string, version?: number) =>
    request<{ graph: JSONObject; name: string; version: number }>(
      `workflows/${encodeURIComponent(workflowId)}${version ? `?version=${version}` : ''}`
    ),
  logs: (runId: string, nodeId: string) =>
    request<{ attempts: IAttempt[] }>(
      `runs/${encodeURIComponent(runId)}/nodes/${encodeURIComponent(nodeId)}/logs`
    ).then(r => r.attempts),
  items: (runId: string, nodeId: string, page: { offset: number; limit: number; state?: string }) =>
    request<IItemsPage>(
      `runs/${encodeURIComponent(runId)}/nodes/${encodeURIComponent(nodeId)}/items?offset=${page.offset}` +
        `&limit=${page.limit}${page.state ? `&state=${encodeURIComponent(page.state)}` : ''}`
    )
};

/**
 * Follow a run's events (the whole history first, then live). Reconnects with a backoff
 * until the run ends or `close()` is called.
 */
export function followRun(
  runId: string,
  onEvent: (event: IRunEvent) => void,
  onStatus: (status: 'open' | 'closed' | 'error') => void
): { close: () => void } {
  const settings = ServerConnection.makeSettings();
  let url = URLExt.join(settings.wsUrl, BASE, 'runs', encodeURIComponent(runId), 'events');
  if (settings.token) {
    url += `?token=${encodeURIComponent(settings.token)}`;
  }
  let socket: WebSocket | null = null;
  let closed = false;
  let finished = false;
  let delay = 500;
  const connect = () => {
    socket = new settings.WebSocket(url);
    socket.onopen = () => {
      delay = 500;
      onStatus('open');
    };
    socket.onmessage = msg => {
      try {
        const event = JSON.parse(String(msg.data)) as IRunEvent;
        if (event.node === null && ['succeeded', 'failed', 'canceled'].includes(event.state)) {
          finished = true;
        }
        onEvent(event);
      } catch {
        // a malformed message must not stop the stream
      }
    };
    socket.onerror = () => onStatus('error');
    socket.onclose = () => {
      onStatus('closed');
      if (!closed && !finished) {
        window.setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10000);
      }
    };
  };
  connect();
  return {
    close: () => {
      closed = true;
      socket?.close();
    }
  };
}

/**
 * Follow the start and end of every run the user may see (`events?level=run`: the runs' own
 * events, no node traffic), reconnecting with a backoff until `close()`.
 */
export function followRuns(onEvent: (event: IRunEvent) => void): { close: () => void } {
  const settings = ServerConnection.makeSettings();
  let url = URLExt.join(settings.wsUrl, BASE, 'events') + '?level=run';
  if (settings.token) {
    url += `&token=${encodeURIComponent(settings.token)}`;
  }
  let socket: WebSocket | null = null;
  let closed = false;
  let delay = 1000;
  const connect = () => {
    socket = new settings.WebSocket(url);
    socket.onopen = () => {
      delay = 1000;
    };
    socket.onmessage = msg => {
      try {
        onEvent(JSON.parse(String(msg.data)) as IRunEvent);
      } catch {
        // a malformed message must not stop the stream
      }
    };
    socket.onclose = () => {
      if (!closed) {
        window.setTimeout(connect, delay);
        delay = Math.min(delay * 2, 30000);
      }
    };
  };
  connect();
  return {
    close: () => {
      closed = true;
      socket?.close();
    }
  };
}
