/**
 * The environment picked beside Run, per flow file: the runs started from the canvas and
 * "Test node" in the inspector both use it, so a node is tested where the flow would run.
 */
import { useEffect, useState } from 'react';

const chosen = new Map<string, string>();
const listeners = new Map<string, Set<(env: string) => void>>();

/** The environment picked for ``path`` ('' : dev, the default). */
export function envChoice(path: string): string {
  return chosen.get(path) ?? '';
}

/** Pick the environment of ``path``; every view of the file follows. */
export function setEnvChoice(path: string, env: string): void {
  chosen.set(path, env);
  for (const listener of listeners.get(path) ?? []) {
    listener(env);
  }
}

/** The environment picked for ``path``, and its setter, as React state. */
export function useEnvChoice(path: string): [string, (env: string) => void] {
  const [env, setEnv] = useState(() => envChoice(path));
  useEffect(() => {
    setEnv(envChoice(path));
    const set = listeners.get(path) ?? new Set<(env: string) => void>();
    listeners.set(path, set);
    set.add(setEnv);
    return () => {
      set.delete(setEnv);
    };
  }, [path]);
  return [env, (next: string) => setEnvChoice(path, next)];
}
