/**
 * The widget's side of the kernel comm: synced traits as React state, and the node details
 * asked of the kernel (anywidget's `invoke` of the widget's `_node_attempts` command).
 */
import { useEffect, useMemo, useState } from 'react';
import type { AnyModel, Experimental } from '@anywidget/types';
import type { AttemptsLoader, IAttempt, IItemsPage, ItemsLoader } from '../canvas/types.js';

/** Return the current value of trait `name`, re-rendering when the kernel changes it. */
export function useTrait<T>(model: AnyModel, name: string): T {
  const [value, setValue] = useState<T>(() => model.get(name));
  useEffect(() => {
    const onChange = () => setValue(model.get(name));
    setValue(model.get(name));
    model.on(`change:${name}`, onChange);
    return () => model.off(`change:${name}`, onChange);
  }, [model, name]);
  return value;
}

/** The kernel's answer: the attempts, or why there are none. */
export interface IAttemptsReply {
  attempts?: IAttempt[];
  error?: string;
}

/** Turn the kernel's reply into attempts, or an error with its message. */
export function attemptsOf(reply: IAttemptsReply | null | undefined): IAttempt[] {
  if (!reply) {
    throw new Error('the kernel sent no answer');
  }
  if (reply.error) {
    throw new Error(reply.error);
  }
  return reply.attempts ?? [];
}

/** Return a loader that asks the kernel for a node's attempts. */
export function useKernelAttempts(experimental: Experimental): AttemptsLoader {
  return useMemo(
    () => (runId: string, nodeId: string) =>
      experimental
        .invoke<IAttemptsReply>('_node_attempts', { run_id: runId, node: nodeId })
        .then(([reply]) => attemptsOf(reply)),
    [experimental]
  );
}

/** Return a loader that asks the kernel for a page of a map node's items. */
export function useKernelItems(experimental: Experimental): ItemsLoader {
  return useMemo(
    () => (runId: string, nodeId: string, page: { offset: number; limit: number; state?: string }) =>
      experimental
        .invoke<IItemsPage & { error?: string }>('_map_items', { run_id: runId, node: nodeId, ...page })
        .then(([reply]) => {
          if (!reply) {
            throw new Error('the kernel sent no answer');
          }
          if (reply.error) {
            throw new Error(reply.error);
          }
          return reply;
        }),
    [experimental]
  );
}
