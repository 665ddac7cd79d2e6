/**
 * The run history as a grid (Airflow's Grid view): a column per run of the file (newest on the
 * right), a row per node of the flow, each cell coloured by that node's state in that run. A
 * cell opens the node's details in its run; a column's head shows that run on the canvas; the
 * runs are filtered by status and by trigger.
 *
 * The columns come from `GET runs?path=` and each run's node states from `GET runs/{id}`; a
 * finished run never changes, so it is asked for once; while one of the runs shown is still
 * going, the grid asks again every few seconds.
 */
import React, { useEffect, useMemo, useRef, useState } from 'react';
import { api, IRun, IRunSummary } from '../api.js';
import { phase, PHASE_COLORS } from '../canvas/phase.js';
import type { IFlow } from '../graph.js';

export const GRID_RUNS = 30;
const FINAL = new Set(['succeeded', 'failed', 'canceled']);
const ACTIVE_RELOAD_MS = 3000;

export interface IGridRun {
  summary: IRunSummary;
  /** node id -> state in this run (null while the run is being read) */
  states: { [node: string]: string } | null;
}

/** Keep the runs the grid shows, newest first, with each run's node states. */
function useGridRuns(path: () => string, pulse: string): [IGridRun[] | null, string | null] {
  const [runs, setRuns] = useState<IGridRun[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const finished = useRef(new Map<string, { [node: string]: string }>());
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let alive = true;
    let again: number | undefined;
    const load = async () => {
      try {
        const list = await api.runs(path(), GRID_RUNS);
        const details = await Promise.all(
          list.map(async r => {
            const known = finished.current.get(r.run_id);
            if (known && FINAL.has(r.status)) {
              return { summary: r, states: known };
            }
            try {
              const run: IRun = await api.run(r.run_id, false);
              const states = Object.fromEntries(Object.entries(run.nodes ?? {}).map(([id, n]) => [id, n.state]));
              if (FINAL.has(run.status)) {
                finished.current.set(r.run_id, states);
              }
              return { summary: { ...r, status: run.status }, states };
            } catch {
              return { summary: r, states: {} };
            }
          })
        );
        if (!alive) {
          return;
        }
        setRuns(details);
        setError(null);
        if (details.some(d => !FINAL.has(d.summary.status))) {
          again = window.setTimeout(() => setTick(t => t + 1), ACTIVE_RELOAD_MS);
        }
      } catch (err) {
        if (alive) {
          setError((err as Error).message);
        }
      }
    };
    void load();
    return () => {
      alive = false;
      window.clearTimeout(again);
    };
  }, [pulse, tick, path]);
  return [runs, error];
}

function when(summary: IRunSummary): string {
  const at = summary.started_at ?? summary.created_at;
  return at ? new Date(String(at)).toLocaleString() : '';
}

export function RunGrid({
  path,
  flow,
  shownRun,
  pulse,
  onPickRun,
  onCell,
  onClose
}: {
  path: () => string;
  flow: IFlow;
  /** The run the canvas shows (its column is marked). */
  shownRun: string | null;
  /** Changes when the grid should read the runs again (a run started, a run's state). */
  pulse: string;
  onPickRun: (runId: string) => void;
  onCell: (runId: string, nodeId: string) => void;
  onClose: () => void;
}): JSX.Element {
  const [status, setStatus] = useState('');
  const [trigger, setTrigger] = useState('');
  const pathNow = useRef(path);
  pathNow.current = path;
  const stablePath = useMemo(() => () => pathNow.current(), []);
  const [runs, error] = useGridRuns(stablePath, pulse);
  const all = runs ?? [];
  const statuses = Array.from(new Set(all.map(r => r.summary.status))).sort();
  const triggers = Array.from(new Set(all.map(r => String(r.summary.trigger ?? 'manual')))).sort();
  const shown = all
    .filter(r => !status || r.summary.status === status)
    .filter(r => !trigger || String(r.summary.trigger ?? 'manual') === trigger)
    .slice()
    .reverse(); // oldest on the left, newest on the right
  return (
    <div className="nf-grid" data-run-grid data-grid-runs={shown.length}>
      <div className="nf-grid-head">
        <span className="nf-grid-title">Run history</span>
        <label className="nf-help">
          status{' '}
          <select className="nf-input" aria-label="Filter by status" value={status} onChange={e => setStatus(e.target.value)}>
            <option value="">all</option>
            {statuses.map(s => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label className="nf-help">
          trigger{' '}
          <select className="nf-input" aria-label="Filter by trigger" value={trigger} onChange={e => setTrigger(e.target.value)}>
            <option value="">all</option>
            {triggers.map(t => (
              <option key={t} value={t}>
                {t}
              </option>
            ))}
          </select>
        </label>
        <span className="nf-help">
          {runs === null ? 'loading…' : `${shown.length} of the last ${all.length} runs`}
          {error ? ` · ${error}` : ''}
        </span>
        <button className="nf-link nf-close" onClick={onClose} aria-label="Close the run history">
          ✕
        </button>
      </div>
      <div className="nf-grid-scroll">
        <table className="nf-grid-table">
          <thead>
            <tr>
              <th className="nf-grid-node">node</th>
              {shown.map(r => (
                <th key={r.summary.run_id} className={r.summary.run_id === shownRun ? 'nf-grid-shown' : ''}>
                  <button
                    className={`nf-grid-run nf-run-${r.summary.status}`}
                    data-grid-run={r.summary.run_id}
                    data-status={r.summary.status}
                    data-trigger={String(r.summary.trigger ?? 'manual')}
                    title={`run ${r.summary.run_id}\n${r.summary.status} · ${r.summary.trigger ?? 'manual'}\n${when(r.summary)}\n(show it on the canvas)`}
                    onClick={() => onPickRun(r.summary.run_id)}
                  />
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {flow.nodes.map(n => (
              <tr key={n.id}>
                <th className="nf-grid-node" title={n.id}>
                  {n.label || n.id}
                </th>
                {shown.map(r => {
                  const state = r.states?.[n.id] ?? '';
                  return (
                    <td key={r.summary.run_id} className={r.summary.run_id === shownRun ? 'nf-grid-shown' : ''}>
                      <button
                        className={`nf-grid-cell${state ? '' : ' nf-grid-none'}`}
                        data-run={r.summary.run_id}
                        data-node={n.id}
                        data-state={state}
                        style={state ? { background: PHASE_COLORS[phase({ state })] ?? '#9ca3af' } : undefined}
                        title={`${n.id}: ${state || 'not in this run'}\nrun ${r.summary.run_id.slice(0, 8)} · ${when(r.summary)}`}
                        disabled={!state}
                        onClick={() => onCell(r.summary.run_id, n.id)}
                      />
                    </td>
                  );
                })}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}
