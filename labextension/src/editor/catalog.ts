/** What the server knows that the editor needs: the node types, and the secret names. */
import { useCallback, useEffect, useState } from 'react';
import { api, INodeType } from '../api.js';

export interface ICatalog {
  types: Map<string, INodeType> | null;
  error: string | null;
}

/** Load the node types (again with the returned function); `error` when the server is away. */
export function useCatalog(): [ICatalog, () => void] {
  const [catalog, setCatalog] = useState<ICatalog>({ types: null, error: null });
  const load = useCallback(() => {
    setCatalog({ types: null, error: null });
    api.nodeTypes().then(
      list => setCatalog({ types: new Map(list.map(t => [t.type, t])), error: null }),
      err => setCatalog({ types: null, error: (err as Error).message })
    );
  }, []);
  useEffect(load, [load]);
  return [catalog, load];
}

/** Return the names of the stored secrets (never a value); [] when they cannot be listed. */
export function useSecretNames(): string[] | null {
  const [secrets, setSecrets] = useState<string[] | null>(null);
  useEffect(() => {
    api.secrets().then(
      list => setSecrets(list.map(s => s.name)),
      () => setSecrets([])
    );
  }, []);
  return secrets;
}
