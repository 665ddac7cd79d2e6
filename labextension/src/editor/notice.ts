/** A short message over the canvas (a refused connection, a copy), gone after 8 s. */
import { useCallback, useRef, useState } from 'react';

export type NoticeKind = 'error' | 'info';
export type Notify = (message: string, kind?: NoticeKind) => void;
export interface INotice {
  message: string;
  kind: NoticeKind;
}

export function useNotice(): [INotice | null, Notify, () => void] {
  const [notice, setNotice] = useState<INotice | null>(null);
  const timer = useRef(0);
  const notify = useCallback<Notify>((message, kind = 'error') => {
    setNotice({ message, kind });
    window.clearTimeout(timer.current);
    timer.current = window.setTimeout(() => setNotice(null), 8000);
  }, []);
  const dismiss = useCallback(() => setNotice(null), []);
  return [notice, notify, dismiss];
}
