/** The strips above the canvas: server away, the flow's problems, and the passing notice. */
import React from 'react';
import type { INotice } from './notice.js';

export function Banners({ serverError, problems, notice, dismiss }: {
  serverError: boolean;
  problems: string[];
  notice: INotice | null;
  dismiss: () => void;
}): JSX.Element {
  return (
    <>
      {serverError && (
        <div className="nf-banner nf-banner-error" role="status">
          Server not reachable — edits keep working and are saved; node types and runs are unavailable.
        </div>
      )}
      {problems.length > 0 && (
        <div className="nf-banner nf-banner-warn" role="status" data-problems>
          {problems.slice(0, 5).map(p => (
            <div key={p}>⚠ {p}</div>
          ))}
          {problems.length > 5 && <div>… and {problems.length - 5} more</div>}
        </div>
      )}
      {notice && (
        <div className={`nf-notice nf-notice-${notice.kind}`} role="alert" data-notice>
          {notice.message}
          <button className="nf-link" onClick={dismiss} aria-label="Dismiss">
            ✕
          </button>
        </div>
      )}
    </>
  );
}
