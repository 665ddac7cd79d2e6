/**
 * A map node's items in its details: a page at a time, in item order, each with its state,
 * attempts and output or error; a filter by state (the failed ones, say). The page is read
 * again as the map's counts move (at most every ITEMS_RELOAD_MS), so a running map's list
 * fills in while one watches.
 */
import React, { useEffect, useRef, useState } from 'react';
import type { JSONValue } from '../graph.js';
import type { IItemCounts, IItemsPage, ItemsLoader } from './types.js';

/** Items on one page of the list. */
export const ITEMS_PAGE = 20;
/** Least time between two reads of the page while the counts move. */
export const ITEMS_RELOAD_MS = 500;

const FILTERS = ['', 'failed', 'succeeded', 'running', 'queued', 'canceled'];

function short(value: JSONValue | undefined): string {
  if (value === undefined || value === null) {
    return '—';
  }
  const text = JSON.stringify(value);
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
}

export interface IMapItemsProps {
  runId: string;
  nodeId: string;
  counts: IItemCounts;
  load: ItemsLoader;
  /** Open an item's child run (a map of a flow), labelled `node[index]`; the host's drill. */
  onOpenRun?: (runId: string, label: string) => void;
}

export function MapItems({ runId, nodeId, counts, load, onOpenRun }: IMapItemsProps): JSX.Element {
  const [offset, setOffset] = useState(0);
  const [filter, setFilter] = useState('');
  const [page, setPage] = useState<{ of: string; page: IItemsPage | null; error: string | null }>({
    of: '',
    page: null,
    error: null
  });
  const of = `${runId}/${nodeId}/${filter}/${offset}`;
  // What the page depends on: where it is, and how far the items are.
  const moved = `${counts.done}/${counts.running ?? 0}/${counts.failed ?? 0}/${counts.total}`;
  const [wanted, setWanted] = useState(`${of}|${moved}`);
  const lastLoad = useRef(0);
  useEffect(() => {
    // Throttle: a map records a batch of items many times a second.
    const wait = Math.max(0, lastLoad.current + ITEMS_RELOAD_MS - Date.now());
    const timer = window.setTimeout(() => setWanted(`${of}|${moved}`), wait);
    return () => window.clearTimeout(timer);
  }, [of, moved]);
  useEffect(() => {
    setOffset(0);
  }, [runId, nodeId, filter]);
  useEffect(() => {
    let live = true;
    lastLoad.current = Date.now();
    const key = wanted.split('|')[0];
    const [, , state, at] = key.split('/');
    load(runId, nodeId, { offset: Number(at) || 0, limit: ITEMS_PAGE, state: state || undefined }).then(
      got => live && setPage({ of: key, page: got, error: null }),
      err => live && setPage({ of: key, page: null, error: (err as Error).message ?? String(err) })
    );
    return () => {
      live = false;
    };
  }, [wanted, load]);
  const shown = page.of.startsWith(`${runId}/${nodeId}/`) ? page : { page: null, error: null };
  const items = shown.page?.items ?? [];
  const total = shown.page?.total ?? 0;
  const first = shown.page?.offset ?? offset;
  return (
    <div className="nf-items" data-items-node={nodeId} data-items-total={total} data-items-offset={first}>
      <div className="nf-row">
        <strong>Items</strong>
        <span className="nf-help">
          {counts.done}/{counts.total} done{counts.failed ? `, ${counts.failed} failed` : ''}
        </span>
        <select
          className="nf-input"
          aria-label="Item state"
          value={filter}
          onChange={e => setFilter(e.target.value)}
        >
          {FILTERS.map(f => (
            <option key={f} value={f}>
              {f || 'all'}
            </option>
          ))}
        </select>
      </div>
      {shown.error && <div className="nf-field-error">{shown.error}</div>}
      {!shown.error && !shown.page && <div className="nf-help">Loading items…</div>}
      {shown.page && items.length === 0 && (
        <div className="nf-help">No {filter ? `${filter} ` : ''}items.</div>
      )}
      {items.length > 0 && (
        <table className="nf-items-table">
          <thead>
            <tr>
              <th>#</th>
              <th>state</th>
              <th>attempts</th>
              <th>output / error</th>
            </tr>
          </thead>
          <tbody>
            {items.map(it => (
              <tr key={it.index} data-item-index={it.index} data-item-state={it.state}>
                <td>{it.index}</td>
                <td>
                  <span className={`nf-pill nf-pill-${it.state}`}>{it.state}</span>
                </td>
                <td>
                  {it.attempts}
                  {it.child_run && onOpenRun && (
                    <button
                      className="nf-btn nf-items-open"
                      data-action="open-item-run"
                      data-child-run={it.child_run}
                      title={`Open the item's sub-flow run ${it.child_run}`}
                      onClick={() => onOpenRun(it.child_run!, `${nodeId}[${it.index}]`)}
                    >
                      Open run
                    </button>
                  )}
                </td>
                <td>
                  {it.error ? (
                    <code className="nf-error-text" data-item-error>
                      {it.error}
                    </code>
                  ) : (
                    <code data-item-output>{short(it.output)}</code>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {total > ITEMS_PAGE && (
        <div className="nf-row nf-items-pager">
          <button
            className="nf-btn"
            disabled={first === 0}
            onClick={() => setOffset(Math.max(0, first - ITEMS_PAGE))}
          >
            ‹ Previous
          </button>
          <span className="nf-help" data-items-range>
            {first + 1}–{first + items.length} of {total}
          </span>
          <button
            className="nf-btn"
            disabled={first + ITEMS_PAGE >= total}
            onClick={() => setOffset(first + ITEMS_PAGE)}
          >
            Next ›
          </button>
        </div>
      )}
    </div>
  );
}
