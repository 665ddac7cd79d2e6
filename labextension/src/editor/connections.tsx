/** Connections from the canvas (issue #14): the stored ones (name, kind, scope; never a
 *  password or a header value), Add (PUT connections/{name}) and Test (POST …/test). */
import React, { useEffect, useState } from 'react';
import { api, IConnection } from '../api.js';

/** `Name: value` lines as headers; one error naming the line otherwise. */
export function parseHeaders(text: string): { [name: string]: string } {
  const out: { [name: string]: string } = {};
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) {
      return;
    }
    const at = line.indexOf(':');
    if (at <= 0) {
      throw new Error(`headers, line ${i + 1}: write "Name: value"`);
    }
    out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  });
  return out;
}

function scope(c: IConnection): string {
  const env = c.env ? `env ${c.env}` : 'every env';
  return (c.groups ?? []).length ? `${env} · groups ${(c.groups ?? []).join(', ')}` : env;
}

export function ConnectionsPanel({ onClose }: { onClose: () => void }): JSX.Element {
  const [list, setList] = useState<IConnection[] | null>(null);
  const [envs, setEnvs] = useState<string[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [tests, setTests] = useState<{ [key: string]: { ok: boolean; message: string } }>({});
  const [adding, setAdding] = useState(false);
  const [form, setForm] = useState({ name: '', kind: 'postgres' as 'postgres' | 'http', url: '', password: '', headers: '', groups: '', env: '' });
  const [busy, setBusy] = useState(false);

  const load = () =>
    api.connections().then(
      rows => setList(rows),
      err => setError((err as Error).message)
    );
  useEffect(() => {
    load();
    api.environments().then(
      rows => setEnvs(rows.map(e => e.name).filter(n => n !== 'dev')),
      () => setEnvs([])
    );
  }, []);

  const test = async (c: { name: string; env: string }) => {
    const key = `${c.env}/${c.name}`;
    setTests(t => ({ ...t, [key]: { ok: false, message: 'testing…' } }));
    try {
      const r = await api.testConnection(c.name, c.env);
      setTests(t => ({ ...t, [key]: { ok: r.ok, message: r.message } }));
    } catch (err) {
      setTests(t => ({ ...t, [key]: { ok: false, message: (err as Error).message } }));
    }
  };

  const add = async () => {
    setError(null);
    setBusy(true);
    try {
      const headers = form.kind === 'http' ? parseHeaders(form.headers) : {};
      const groups = form.groups.split(',').map(g => g.trim()).filter(Boolean);
      await api.putConnection(form.name.trim(), form.env, {
        kind: form.kind,
        url: form.url.trim(),
        ...(form.password ? { password: form.password } : {}),
        ...(Object.keys(headers).length ? { headers } : {}),
        ...(groups.length ? { groups } : {})
      });
      setForm({ ...form, name: '', url: '', password: '', headers: '' });
      setAdding(false);
      await load();
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };

  const set = (key: keyof typeof form) => (e: React.ChangeEvent<HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement>) =>
    setForm({ ...form, [key]: e.target.value });

  return (
    <div className="nf-popover nf-connections" data-connections role="dialog" aria-label="Connections">
      <div className="nf-popover-title">
        Connections
        <button className="nf-btn nf-close" aria-label="Close" data-action="connections-close" onClick={onClose}>
          ✕
        </button>
      </div>
      {list === null && !error && <div className="nf-muted">Loading…</div>}
      {list && list.length === 0 && <div className="nf-muted">No connection stored yet</div>}
      <ul className="nf-connection-list">
        {(list ?? []).map(c => {
          const key = `${c.env}/${c.name}`;
          const result = tests[key];
          return (
            <li key={key} data-connection={c.name} data-env={c.env} data-kind={c.kind}>
              <b>{c.name}</b> · {c.kind} · {scope(c)}
              <div className="nf-muted" title="the URL without its password">{c.display}</div>
              <button className="nf-btn" data-action="connection-test" onClick={() => test(c)}>
                Test
              </button>
              {result && (
                <span className={result.ok ? 'nf-test-ok' : 'nf-test-failed'} data-test-ok={String(result.ok)}>
                  {' '}
                  {result.ok ? '✓' : '✗'} {result.message}
                </span>
              )}
            </li>
          );
        })}
      </ul>
      {!adding && (
        <button className="nf-btn" data-action="connection-add" onClick={() => setAdding(true)}>
          + Add
        </button>
      )}
      {adding && (
        <form
          className="nf-connection-form"
          data-connection-form
          onSubmit={e => {
            e.preventDefault();
            add();
          }}
        >
          <label className="nf-row">
            Name <input className="nf-input" name="name" required value={form.name} onChange={set('name')} />
          </label>
          <label className="nf-row">
            Kind{' '}
            <select className="nf-input" name="kind" value={form.kind} onChange={set('kind')}>
              <option value="postgres">postgres</option>
              <option value="http">http</option>
            </select>
          </label>
          <label className="nf-row">
            URL{' '}
            <input
              className="nf-input"
              name="url"
              required
              placeholder={form.kind === 'http' ? 'https://api.example.com/v1' : 'postgresql://user@host:5432/db'}
              value={form.url}
              onChange={set('url')}
            />
          </label>
          {form.kind === 'postgres' ? (
            <label className="nf-row">
              Password{' '}
              <input className="nf-input" name="password" type="password" autoComplete="new-password" value={form.password} onChange={set('password')} />
            </label>
          ) : (
            <label className="nf-row">
              Headers{' '}
              <textarea className="nf-input" name="headers" rows={2} placeholder="Authorization: Bearer …" value={form.headers} onChange={set('headers')} />
            </label>
          )}
          <label className="nf-row" title="Hub groups whose members' runs may use it (empty: any run)">
            Groups <input className="nf-input" name="groups" placeholder="comma-separated" value={form.groups} onChange={set('groups')} />
          </label>
          <label className="nf-row">
            Env{' '}
            <select className="nf-input" name="env" value={form.env} onChange={set('env')}>
              <option value="">every environment</option>
              {envs.map(n => (
                <option key={n} value={n}>
                  {n}
                </option>
              ))}
            </select>
          </label>
          <div className="nf-row">
            <button className="nf-btn nf-primary" type="submit" data-action="connection-save" disabled={busy}>
              Save
            </button>
            <button className="nf-btn" type="button" onClick={() => setAdding(false)}>
              Cancel
            </button>
          </div>
        </form>
      )}
      {error && (
        <div className="nf-refusal" data-connections-error role="alert">
          {error}
        </div>
      )}
    </div>
  );
}
