/**
 * A form generated from a node type's config JSON Schema, with validation messages and a
 * secrets picker. Values of `{"$secret": NAME}` refer to a secret by name; its value never
 * reaches the browser.
 */
import React, { useEffect, useState } from 'react';
import type { JSONObject, JSONValue } from '../graph.js';
import { isSecretOnly, isSecretRef, Schema, validate } from './schema.js';

interface IFieldProps {
  name: string;
  schema: Schema;
  value: any;
  required: boolean;
  errors: string[];
  secrets: string[] | null;
  onChange: (value: JSONValue | undefined) => void;
}

function JsonField(props: IFieldProps): JSX.Element {
  const { value, onChange } = props;
  const [text, setText] = useState(value === undefined ? '' : JSON.stringify(value, null, 2));
  const [bad, setBad] = useState<string | null>(null);
  useEffect(() => {
    setText(value === undefined ? '' : JSON.stringify(value, null, 2));
  }, [JSON.stringify(value)]);
  return (
    <>
      <textarea
        className="nf-input nf-json"
        value={text}
        rows={Math.min(8, Math.max(2, text.split('\n').length))}
        onChange={e => setText(e.target.value)}
        onBlur={() => {
          if (!text.trim()) {
            setBad(null);
            onChange(undefined);
            return;
          }
          try {
            onChange(JSON.parse(text));
            setBad(null);
          } catch (err) {
            setBad(`not valid JSON: ${(err as Error).message}`);
          }
        }}
      />
      {bad && <div className="nf-field-error">{bad}</div>}
    </>
  );
}

function Field(props: IFieldProps): JSX.Element {
  const { name, schema, value, required, errors, secrets, onChange } = props;
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  const secret = isSecretRef(value);
  // A field that takes only a stored secret (an AI node's API key): never a typed value.
  const secretOnly = isSecretOnly(schema);
  const [draft, setDraft] = useState<string | null>(null);
  const label = schema.title ?? name;
  let control: JSX.Element;
  if (secret) {
    control = (
      <select
        className="nf-input"
        aria-label={`${label} secret`}
        value={value.$secret}
        onChange={e => onChange({ $secret: e.target.value })}
      >
        {!(secrets ?? []).includes(value.$secret) && (
          <option value={value.$secret}>{value.$secret} (unknown)</option>
        )}
        {(secrets ?? []).map(s => (
          <option key={s} value={s}>
            {s}
          </option>
        ))}
      </select>
    );
  } else if (secretOnly && value === undefined) {
    control = <span className="nf-help">none</span>;
  } else if (schema.enum) {
    control = (
      <select
        className="nf-input"
        aria-label={label}
        value={value === undefined ? '' : JSON.stringify(value)}
        onChange={e => onChange(e.target.value === '' ? undefined : JSON.parse(e.target.value))}
      >
        <option value="">—</option>
        {schema.enum.map((v: any) => (
          <option key={JSON.stringify(v)} value={JSON.stringify(v)}>
            {String(v)}
          </option>
        ))}
      </select>
    );
  } else if (type === 'boolean') {
    control = (
      <input
        type="checkbox"
        aria-label={label}
        checked={value === true}
        onChange={e => onChange(e.target.checked)}
      />
    );
  } else if (type === 'number' || type === 'integer') {
    const shown = draft ?? (value === undefined ? '' : String(value));
    control = (
      <input
        className="nf-input"
        aria-label={label}
        inputMode="decimal"
        value={shown}
        onChange={e => {
          const text = e.target.value;
          setDraft(text);
          const num = Number(text);
          if (text.trim() === '') {
            onChange(undefined);
          } else if (!Number.isNaN(num)) {
            onChange(num);
          }
        }}
        onBlur={() => setDraft(null)}
      />
    );
  } else if (type === 'string' || type === undefined) {
    const long =
      schema.format === 'multiline' ||
      (schema.maxLength ?? 0) > 500 ||
      /code|script|query|sql|body|expression|template/i.test(name);
    control = long ? (
      <textarea
        className="nf-input"
        aria-label={label}
        rows={2}
        value={value ?? ''}
        onChange={e => onChange(e.target.value === '' ? undefined : e.target.value)}
      />
    ) : (
      <input
        className="nf-input"
        aria-label={label}
        value={value ?? ''}
        onChange={e => onChange(e.target.value === '' ? undefined : e.target.value)}
      />
    );
    if (typeof value !== 'string' && value !== undefined) {
      control = <JsonField {...props} />;
    }
  } else {
    control = <JsonField {...props} />;
  }
  const canSecret =
    (secretOnly || (type === 'string' && !schema.enum && !/code|script|expression|query|sql/i.test(name))) &&
    secrets !== null;
  return (
    <div className={`nf-field${errors.length ? ' nf-invalid' : ''}`} data-field={name}>
      <label className="nf-label">
        {label}
        {required && <span className="nf-required">*</span>}
        {canSecret && (
          <button
            type="button"
            className="nf-link"
            title={secret ? 'Type a value instead' : 'Use a stored secret (names only)'}
            onClick={() =>
              onChange(secret ? undefined : { $secret: (secrets ?? [])[0] ?? 'NAME' })
            }
          >
            {secret ? (secretOnly ? 'remove' : 'use a value') : 'use a secret'}
          </button>
        )}
      </label>
      {control}
      {schema.description && <div className="nf-help">{schema.description}</div>}
      {errors.map(e => (
        <div key={e} className="nf-field-error">
          {label} {e}
        </div>
      ))}
    </div>
  );
}

export interface ISchemaFormProps {
  schema: Schema;
  value: JSONObject;
  secrets: string[] | null;
  onChange: (value: JSONObject) => void;
}

/** Render a form for an object schema; unknown extra keys are kept and editable as JSON. */
export function SchemaForm({ schema, value, secrets, onChange }: ISchemaFormProps): JSX.Element {
  const props: Schema = schema.properties ?? {};
  const required: string[] = schema.required ?? [];
  const faults = validate(schema, value);
  const errorsFor = (key: string) =>
    faults.filter(([p]) => p === `/${key}` || p.startsWith(`/${key}/`)).map(([p, m]) =>
      p === `/${key}` ? m : `${p.slice(key.length + 2)} ${m}`
    );
  const extra = Object.keys(value).filter(k => !(k in props));
  const set = (key: string, v: JSONValue | undefined) => {
    const next = { ...value };
    if (v === undefined) {
      delete next[key];
    } else {
      next[key] = v;
    }
    onChange(next);
  };
  return (
    <div className="nf-form">
      {Object.entries(props).map(([key, sub]) => (
        <Field
          key={key}
          name={key}
          schema={sub}
          value={value[key]}
          required={required.includes(key)}
          errors={errorsFor(key)}
          secrets={secrets}
          onChange={v => set(key, v)}
        />
      ))}
      {extra.map(key => (
        <Field
          key={key}
          name={key}
          schema={{ description: 'not in this node type’s schema' }}
          value={value[key]}
          required={false}
          errors={schema.additionalProperties === false ? ['is not allowed'] : []}
          secrets={secrets}
          onChange={v => set(key, v)}
        />
      ))}
    </div>
  );
}
