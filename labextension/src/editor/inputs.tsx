/** The form that asks for a run's inputs (the flow's params), checked before Run. */
import React, { useState } from 'react';
import type { IFlow, JSONObject, JSONValue } from '../graph.js';

export function InputsForm({
  params,
  onRun,
  onCancel
}: {
  params: NonNullable<IFlow['params']>;
  onRun: (inputs: JSONObject) => void;
  onCancel: () => void;
}): JSX.Element {
  const [values, setValues] = useState<{ [k: string]: string }>(() =>
    Object.fromEntries(
      Object.entries(params).map(([k, p]) => [
        k,
        p.default === undefined ? '' : typeof p.default === 'string' ? p.default : JSON.stringify(p.default)
      ])
    )
  );
  const parsed: { [k: string]: JSONValue } = {};
  const errors: { [k: string]: string } = {};
  for (const [k, p] of Object.entries(params)) {
    const text = values[k] ?? '';
    if (text === '' && p.default === undefined) {
      errors[k] = 'is required';
      continue;
    }
    if (p.type === 'string' || p.type === undefined) {
      parsed[k] = text;
      continue;
    }
    try {
      const v = JSON.parse(text);
      const ok =
        (p.type === 'number' && typeof v === 'number') ||
        (p.type === 'integer' && Number.isInteger(v)) ||
        (p.type === 'boolean' && typeof v === 'boolean') ||
        (p.type === 'array' && Array.isArray(v)) ||
        (p.type === 'object' && v !== null && typeof v === 'object' && !Array.isArray(v));
      if (ok) {
        parsed[k] = v;
      } else {
        errors[k] = `must be ${p.type === 'integer' ? 'an integer' : `a ${p.type}`}`;
      }
    } catch {
      errors[k] = `must be ${p.type} (JSON)`;
    }
  }
  const valid = Object.keys(errors).length === 0;
  return (
    <div className="nf-popover nf-inputs" role="dialog" aria-label="Run inputs">
      <div className="nf-popover-title">Run inputs</div>
      {Object.entries(params).map(([k, p]) => (
        <div key={k} className={`nf-field${errors[k] ? ' nf-invalid' : ''}`}>
          <label className="nf-label">
            {k} <span className="nf-help">{p.type ?? 'string'}</span>
          </label>
          <input
            className="nf-input"
            aria-label={k}
            value={values[k] ?? ''}
            onChange={e => setValues({ ...values, [k]: e.target.value })}
          />
          {p.description && <div className="nf-help">{p.description}</div>}
          {errors[k] && <div className="nf-field-error">{k} {errors[k]}</div>}
        </div>
      ))}
      <div className="nf-row">
        <button className="nf-btn nf-primary" disabled={!valid} onClick={() => onRun(parsed)}>
          ▶ Run
        </button>
        <button className="nf-btn" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </div>
  );
}
