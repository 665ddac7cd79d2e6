/**
 * Yjs sync: the shared document as a React value. The Y document is the single source of
 * truth for nodes and edges; a burst of remote changes is read once per animation frame.
 */
import { useEffect, useMemo, useState } from 'react';
import type { IFlow } from '../graph.js';
import type { NxFlowDoc } from '../model.js';

/** Return a number that changes (at most once a frame) whenever the document changes. */
export function useDocVersion(doc: NxFlowDoc): number {
  const [version, setVersion] = useState(0);
  useEffect(() => {
    let frame = 0;
    const bump = () => {
      if (!frame) {
        frame = requestAnimationFrame(() => {
          frame = 0;
          setVersion(v => v + 1);
        });
      }
    };
    doc.changed.connect(bump);
    return () => {
      doc.changed.disconnect(bump);
      cancelAnimationFrame(frame);
    };
  }, [doc]);
  return version;
}

/** Return the document's flow, read again after each change. */
export function useDocFlow(doc: NxFlowDoc): IFlow {
  const version = useDocVersion(doc);
  return useMemo(() => doc.toFlow(), [doc, version]);
}
