/** Who else has the file open, what they have selected, and telling them what we select. */
import { useEffect, useMemo, useState } from 'react';
import type { IPeer } from '../canvas/types.js';
import type { NxFlowDoc } from '../model.js';

export interface IAwarenessUser {
  name?: string;
  display_name?: string;
  color?: string;
  initials?: string;
  username?: string;
}

export interface IPresence {
  clientId: number;
  user: IAwarenessUser;
  selected: string[];
}

/** Whether an awareness state is a person: a page whose user is known. A page publishes its
 *  state before JupyterLab has told it who the user is, and the server's own document has a
 *  state too: neither is someone to show. */
export function isPerson(state: any): boolean {
  const user = state?.user;
  return !!user && typeof user === 'object' && !!(user.username || user.name || user.display_name);
}

/** Return the other people of an awareness state map (ours and states of no one left out). */
export function readPresence(states: Map<number, any>, selfId: number): IPresence[] {
  const out: IPresence[] = [];
  states.forEach((state, clientId) => {
    if (clientId === selfId || !isPerson(state)) {
      return;
    }
    out.push({ clientId, user: state.user, selected: state.nexusflow?.selected ?? [] });
  });
  return out;
}

export function displayName(user: IAwarenessUser): string {
  return user.display_name || user.name || user.username || 'someone';
}

/** Return, per node id, the collaborators who have that node selected. */
export function peersByNode(peers: IPresence[]): Map<string, IPeer[]> {
  const out = new Map<string, IPeer[]>();
  for (const p of peers) {
    for (const id of p.selected) {
      out.set(id, [...(out.get(id) ?? []), { name: displayName(p.user), color: p.user.color ?? '#888' }]);
    }
  }
  return out;
}

/** Follow the collaborators on `doc`; publish this page's `selected` node ids to them. */
export function usePresence(
  doc: NxFlowDoc,
  selected: ReadonlySet<string>
): { peers: IPresence[]; byNode: Map<string, IPeer[]> } {
  const [peers, setPeers] = useState<IPresence[]>([]);
  useEffect(() => {
    const awareness = doc.awareness;
    const read = () => setPeers(readPresence(awareness.getStates(), awareness.clientID));
    // Someone new: say we are here now. The server relays awareness updates but keeps no
    // states for newcomers, so without this they would learn of us only at our next renewal
    // (every 15 s).
    const onChange = ({ added }: { added: number[] }) => {
      read();
      const local = awareness.getLocalState();
      if (local && added.some(id => id !== awareness.clientID)) {
        awareness.setLocalState({ ...local });
      }
    };
    read();
    awareness.on('change', onChange);
    return () => awareness.off('change', onChange);
  }, [doc]);
  useEffect(() => {
    doc.awareness.setLocalStateField('nexusflow', { selected: Array.from(selected) });
  }, [doc, selected]);
  const byNode = useMemo(() => peersByNode(peers), [peers]);
  return { peers, byNode };
}
