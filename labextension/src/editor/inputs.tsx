/**
 * The form that asks for a run's inputs: generated from the flow's params (each a JSON Schema:
 * a text field, a number, a checkbox, a choice of its `enum`; JSON only for lists and objects),
 * checked before Run.
 */
import React, { useMemo, useState } from 'react';
import type { IFlow, JSONObject } from '../graph.js';
import { Schema, validate } from './schema.js';
import { SchemaForm } from './schemaform.js';

type Params = NonNullable<IFlow['params']>;

/** The params as one object schema: a param without a default is required. */
export function paramsSchema(params: Params): Schema {
  const properties: Schema = {};
  const required: string[] = [];
  for (const [key, spec] of Object.entries(params)) {
    properties[key] = { ...(spec as Schema), title: key };
    if ((spec as Schema).default === undefined) {
      required.push(key);
    }
  }
  return { type: 'object', properties, required, additionalProperties: false };
}

/** The inputs a run starts with before the user changes anything: each param's default. */
export function defaultInputs(params: Params): JSONObject {
  const out: JSONObject = {};
  for (const [key, spec] of Object.entries(params)) {
    if ((spec as Schema).default !== undefined) {
      out[key] = (spec as Schema).default;
    }
  }
  return out;
}

export function InputsForm({
  params,
  onRun,
  onCancel
}: {
  params: Params;
  onRun: (inputs: JSONObject) => void;
  onCancel: () => void;
}): JSX.Element {
  const schema = useMemo(() => paramsSchema(params), [params]);
  const [values, setValues] = useState<JSONObject>(() => defaultInputs(params));
  const faults = validate(schema, values);
  return (
    <div className="nf-popover nf-inputs" role="dialog" aria-label="Run inputs">
      <div className="nf-popover-title">Run inputs</div>
      <SchemaForm schema={schema} value={values} secrets={null} onChange={setValues} />
      <div className="nf-row">
        <button
          className="nf-btn nf-primary"
          data-action="run-with-inputs"
          disabled={faults.length > 0}
          title={faults.length ? faults.map(([p, m]) => `${p.slice(1)} ${m}`).join('\n') : 'Start the run'}
          onClick={() => onRun(values)}
        >
          ▶ Run
        </button>
        <button className="nf-btn" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </div>
  );
}
