/** The glow: which phase (and so which colour) a node's run state shows. Pure. */
import type { INodeRun } from './types.js';

/** Map an engine node state onto the small set that tests and automation read. */
export function publicState(run?: INodeRun): string {
  switch (run?.state) {
    case undefined:
      return 'idle';
    case 'pending':
    case 'queued':
    case 'scheduled':
      return 'queued';
    case 'running':
    case 'waiting':
    case 'succeeded':
    case 'failed':
    case 'skipped':
    case 'canceled':
      return run.state;
    default:
      return 'idle';
  }
}

/** The finer phase that picks the glow (adds pending, scheduled and retrying). */
export function phase(run?: INodeRun): string {
  if (!run || !run.state) {
    return 'idle';
  }
  if ((run.state === 'scheduled' || run.state === 'running') && (run.attempt ?? 1) > 1) {
    return 'retrying';
  }
  return run.state;
}

/** The phase colours where CSS cannot reach (the minimap draws nodes in SVG). */
export const PHASE_COLORS: { [phase: string]: string } = {
  running: '#f59e0b',
  retrying: '#f59e0b',
  waiting: '#6366f1',
  succeeded: '#16a34a',
  failed: '#dc2626',
  skipped: '#d1d5db'
};
