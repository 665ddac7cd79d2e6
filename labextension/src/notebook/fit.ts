/**
 * Fit the whole flow into the notebook output area, computed from the flow's own positions
 * whenever the area changes size. React Flow's `fitView` runs on the first render, when an
 * output area may still have no size, and left the canvas zoomed in on one node.
 */
import React, { useEffect } from 'react';
import { useReactFlow, Viewport } from '@xyflow/react';
import type { IFlowNode } from '../graph.js';

/** The largest box a node takes (`.nf-node` is at most 220 px wide, about 70 px high). */
export const NODE_BOX = { width: 220, height: 70 };

/**
 * The smallest zoom the fit uses, so node text stays readable (13 px titles at least ~10 px): a
 * flow too big for the area at this zoom starts at its top and is panned or zoomed by hand
 * (the fit-view control still shows all of it).
 */
export const MIN_READABLE_ZOOM = 0.75;

/** Return the viewport that shows every node of `nodes` in a `width` x `height` area, or as
 *  much as fits at a readable zoom (centered across, from the top down). */
export function fitViewport(nodes: readonly IFlowNode[], width: number, height: number): Viewport | null {
  if (!nodes.length || !width || !height) {
    return null;
  }
  const xs = nodes.map(n => n.position?.x ?? 0);
  const ys = nodes.map(n => n.position?.y ?? 0);
  const minX = Math.min(...xs);
  const minY = Math.min(...ys);
  const spanX = Math.max(...xs) + NODE_BOX.width - minX;
  const spanY = Math.max(...ys) + NODE_BOX.height - minY;
  const fitted = 0.85 * Math.min(width / spanX, height / spanY);
  const zoom = Math.max(MIN_READABLE_ZOOM, Math.min(1.25, fitted));
  const top = spanY * zoom <= height ? (height - spanY * zoom) / 2 : 12;
  return { x: (width - spanX * zoom) / 2 - minX * zoom, y: top - minY * zoom, zoom };
}

/** Keep the flow fitted into `area` (again when its nodes move or the area resizes). */
export function useFitToArea(nodes: readonly IFlowNode[], area: React.RefObject<HTMLElement>): void {
  const { setViewport } = useReactFlow();
  const key = nodes.map(n => `${n.id}@${n.position?.x ?? 0},${n.position?.y ?? 0}`).join(';');
  useEffect(() => {
    const el = area.current;
    if (!el || !nodes.length) {
      return undefined;
    }
    const fit = () => {
      const viewport = fitViewport(nodes, el.clientWidth, el.clientHeight);
      if (viewport) {
        setViewport(viewport);
      }
    };
    fit();
    const observer = new ResizeObserver(fit);
    observer.observe(el);
    return () => observer.disconnect();
    // `key` stands for `nodes`: a new array with the same positions needs no refit
  }, [key, area, setViewport]);
}
