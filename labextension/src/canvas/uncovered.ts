/**
 * The part of the canvas nothing covers: React Flow's zoom/fit controls (bottom-left) and a
 * minimap drawn over the canvas hide whatever node lies under them. Fit keeps a strip along
 * the side each one sits on free, and a node whose details open is panned out from under them.
 * Screen pixels throughout; no DOM here (the editor measures the boxes).
 */

export interface IRect {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface ISides {
  top: number;
  right: number;
  bottom: number;
  left: number;
}

/**
 * The strip to keep free along each side of `canvas` so that no node drawn inside the rest lies
 * under one of `covers` (boxes over the canvas; those outside it are ignored). Each cover takes
 * the cheaper of a column (on its side, left or right) or a row (top or bottom), plus `gap`.
 */
export function coveredSides(canvas: IRect, covers: readonly IRect[], gap = 12): ISides {
  const sides: ISides = { top: 0, right: 0, bottom: 0, left: 0 };
  const right = canvas.x + canvas.width;
  const bottom = canvas.y + canvas.height;
  for (const c of covers) {
    const x0 = Math.max(c.x, canvas.x);
    const y0 = Math.max(c.y, canvas.y);
    const x1 = Math.min(c.x + c.width, right);
    const y1 = Math.min(c.y + c.height, bottom);
    if (x1 <= x0 || y1 <= y0) {
      continue; // beside the canvas, not over it
    }
    const leftHalf = (x0 + x1) / 2 < canvas.x + canvas.width / 2;
    const topHalf = (y0 + y1) / 2 < canvas.y + canvas.height / 2;
    if ((x1 - x0) / canvas.width <= (y1 - y0) / canvas.height) {
      if (leftHalf) {
        sides.left = Math.max(sides.left, x1 - canvas.x + gap);
      } else {
        sides.right = Math.max(sides.right, right - x0 + gap);
      }
    } else if (topHalf) {
      sides.top = Math.max(sides.top, y1 - canvas.y + gap);
    } else {
      sides.bottom = Math.max(sides.bottom, bottom - y0 + gap);
    }
  }
  return sides;
}

/** `canvas` without the strips of `sides`. */
export function freeArea(canvas: IRect, sides: ISides): IRect {
  return {
    x: canvas.x + sides.left,
    y: canvas.y + sides.top,
    width: Math.max(0, canvas.width - sides.left - sides.right),
    height: Math.max(0, canvas.height - sides.top - sides.bottom)
  };
}

/**
 * How far to move the view (screen pixels) so that `node` lies whole inside `free`: 0, 0 when
 * it already does. A node larger than `free` is aligned with its top-left corner.
 */
export function revealShift(node: IRect, free: IRect): { dx: number; dy: number } {
  const shift = (start: number, size: number, lo: number, room: number): number => {
    if (start < lo || size > room) {
      return lo - start;
    }
    return start + size > lo + room ? lo + room - (start + size) : 0;
  };
  return {
    dx: shift(node.x, node.width, free.x, free.width),
    dy: shift(node.y, node.height, free.y, free.height)
  };
}
