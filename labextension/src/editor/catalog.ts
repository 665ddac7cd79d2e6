/** What the server knows that the editor needs: the node types, and the secret names. */
import { useCallback, useEffect, useState } from 'react';
import { api, IBrokenType, INodeType } from '../api.js';

export interface ICatalog {
  types: Map<string, INodeType> | null;
  /** Node packages' types that could not be registered, with the reason. */
  broken: IBrokenType[];
  error: string | null;
}

/** Load the node types (again with the returned function); `error` when the server is away. */
export function useCatalog(): [ICatalog, () => void] {
  const [catalog, setCatalog] = useState<ICatalog>({ types: null, broken: [], error: null });
  const load = useCallback(() => {
    setCatalog({ types: null, broken: [], error: null });
    api.nodeTypes().then(
      ({ types, broken }) =>
        setCatalog({ types: new Map(types.map(t => [t.type, t])), broken, error: null }),
      err => setCatalog({ types: null, broken: [], error: (err as Error).message })
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
