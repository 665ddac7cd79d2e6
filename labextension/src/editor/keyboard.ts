/** The canvas's keyboard shortcuts: undo, redo, copy, paste, select all. */
import React, { useCallback } from 'react';

export type Shortcut = 'undo' | 'redo' | 'copy' | 'paste' | 'selectAll';

export interface IKeyPress {
  key: string;
  ctrlKey: boolean;
  metaKey: boolean;
  shiftKey: boolean;
  /** Whether the key went to a text field (it keeps its own shortcuts). */
  inTextField: boolean;
}

/** Return the shortcut a key press means on the canvas, or null. */
export function shortcutOf(press: IKeyPress): Shortcut | null {
  if (press.inTextField || !(press.ctrlKey || press.metaKey)) {
    return null;
  }
  const key = press.key.toLowerCase();
  if (key === 'z') {
    return press.shiftKey ? 'redo' : 'undo';
  }
  if (key === 'y') {
    return 'redo';
  }
  return ({ c: 'copy', v: 'paste', a: 'selectAll' } as { [k: string]: Shortcut })[key] ?? null;
}

function inTextField(target: HTMLElement): boolean {
  return ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName) || target.isContentEditable;
}

/**
 * Return the canvas's key handler. An action returning `false` did nothing (copy with no
 * selection): the key then goes on to the browser.
 */
export function useKeyboard(actions: { [S in Shortcut]: () => boolean | void }) {
  const { undo, redo, copy, paste, selectAll } = actions;
  return useCallback(
    (e: React.KeyboardEvent) => {
      const shortcut = shortcutOf({
        key: e.key,
        ctrlKey: e.ctrlKey,
        metaKey: e.metaKey,
        shiftKey: e.shiftKey,
        inTextField: inTextField(e.target as HTMLElement)
      });
      if (!shortcut || { undo, redo, copy, paste, selectAll }[shortcut]() === false) {
        return;
      }
      e.preventDefault();
      e.stopPropagation();
    },
    [undo, redo, copy, paste, selectAll]
  );
}
