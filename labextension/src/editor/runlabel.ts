/**
 * What the run history picker says of a run: what a user scans the list for. The id's prefix,
 * the status, when it started (relative while recent, else a short local date), how long it
 * took (once finished), what started it and the environment when not dev:
 * `1a2b3c4d · failed · 5 min ago · 1m 12s · schedule · prod`.
 */
import type { IRunSummary } from '../api.js';

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function parse(at: unknown): number | null {
  if (typeof at !== 'string' || !at) {
    return null;
  }
  const t = Date.parse(at);
  return Number.isNaN(t) ? null : t;
}

/** `at` as "just now", "12 min ago", "3 h ago" (within a day), else "Nov 24 14:05" (local
 *  time; the year too when it is not this year's). */
export function whenLabel(at: number, now: number): string {
  const ago = now - at;
  if (ago >= -60_000 && ago < 60_000) {
    return 'just now';
  }
  if (ago > 0 && ago < 3_600_000) {
    return `${Math.floor(ago / 60_000)} min ago`;
  }
  if (ago > 0 && ago < 86_400_000) {
    return `${Math.floor(ago / 3_600_000)} h ago`;
  }
  const d = new Date(at);
  const pad = (n: number) => String(n).padStart(2, '0');
  const year = d.getFullYear() === new Date(now).getFullYear() ? '' : ` ${d.getFullYear()}`;
  return `${MONTHS[d.getMonth()]} ${d.getDate()}${year} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A duration as "850 ms", "42s", "3m 05s", "2h 07m". */
export function durationLabel(ms: number): string {
  if (ms < 1000) {
    return `${Math.max(0, Math.round(ms))} ms`;
  }
  const s = Math.round(ms / 1000);
  if (s < 60) {
    return `${s}s`;
  }
  const pad = (n: number) => String(n).padStart(2, '0');
  if (s < 3600) {
    return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  }
  return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
}

/** The history picker's label of `run` (`now`: epoch ms). */
export function historyLabel(run: IRunSummary, now: number = Date.now()): string {
  const parts = [run.run_id.slice(0, 8), run.status];
  const started = parse(run.started_at) ?? parse(run.created_at);
  if (started !== null) {
    parts.push(whenLabel(started, now));
  }
  const ended = parse(run.ended_at);
  if (started !== null && ended !== null) {
    parts.push(durationLabel(ended - started));
  }
  if (typeof run.trigger === 'string' && run.trigger) {
    parts.push(run.trigger);
  }
  if (typeof run.env === 'string' && run.env && run.env !== 'dev') {
    parts.push(run.env);
  }
  return parts.join(' · ');
}
