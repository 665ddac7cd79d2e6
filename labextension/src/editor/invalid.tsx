/** What the panel shows instead of the canvas when the file is not a valid flow. */
import React from 'react';
import type { IInvalid } from '../model.js';

export function InvalidDoc({ invalid, openAsText }: { invalid: IInvalid; openAsText: () => void }): JSX.Element {
  return (
    <div className="nf-invalid-doc" role="alert" data-invalid-doc>
      <h3>This file is not a valid Nexus-Flow flow</h3>
      <p className="nf-field-error">{invalid.error}</p>
      <p>Fix it in a text editor; the canvas reloads when the file is valid again.</p>
      <button className="nf-btn nf-primary" onClick={openAsText}>
        Open in the text editor
      </button>
      <pre className="nf-source">{invalid.source.slice(0, 4000)}</pre>
    </div>
  );
}
