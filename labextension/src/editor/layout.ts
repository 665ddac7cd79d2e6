/**
 * Where nodes go: the view fitted to the file as it opened, Fit, nodes added elsewhere brought
 * into view, auto-layout (dagre), and the place of a node added from the palette: a free place
 * near the middle (double-click) or where it was dropped, whole inside the view (snapped to the
 * grid).
 */
import React, { useCallback, useEffect, useRef } from 'react';
import { useReactFlow } from '@xyflow/react';
import type { INodeType } from '../api.js';
import { coveredSides, freeArea, IRect, ISides, revealShift } from '../canvas/uncovered.js';
import { freshId, IFlow, IFlowEdge, IFlowNode, IPosition, layoutPositions } from '../graph.js';
import type { NxFlowDoc } from '../model.js';
import { defaultsOf } from './schema.js';
import type { ICanvasSettings } from './settings.js';

/** Round `pos` to the grid (when snapping is on). */
export function snapped(pos: IPosition, settings: ICanvasSettings): IPosition {
  const snap = settings.snapToGrid ? settings.gridSize : 1;
  return { x: Math.round(pos.x / snap) * snap, y: Math.round(pos.y / snap) * snap };
}

/** A node's box in flow coordinates. */
export interface IBox {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** The size a node is drawn at (canvas.css: `.nf-node` has a fixed width). */
export const NODE_SIZE = { width: 180, height: 56 };
const GAP = 24;

function overlap(a: IBox, b: IBox): boolean {
  return a.x < b.x + b.width + GAP && b.x < a.x + a.width + GAP && a.y < b.y + b.height + GAP && b.y < a.y + a.height + GAP;
}

/**
 * Where a node added without a drop point goes: centred on `centre` if that place is free,
 * else the nearest free place on rings around it (row by row, so it stays in view), never on
 * top of a node of `taken`.
 */
export function freeSpot(centre: IPosition, taken: readonly IBox[], size = NODE_SIZE): IPosition {
  const origin = { x: centre.x - size.width / 2, y: centre.y - size.height / 2 };
  const stepX = size.width + GAP;
  const stepY = size.height + GAP;
  for (let ring = 0; ring < 30; ring++) {
    const candidates: IPosition[] = [];
    for (let dy = -ring; dy <= ring; dy++) {
      for (let dx = -ring; dx <= ring; dx++) {
        if (Math.max(Math.abs(dx), Math.abs(dy)) === ring) {
          candidates.push({ x: origin.x + dx * stepX, y: origin.y + dy * stepY });
        }
      }
    }
    candidates.sort((a, b) => Math.hypot(a.x - origin.x, a.y - origin.y) - Math.hypot(b.x - origin.x, b.y - origin.y));
    const free = candidates.find(c => !taken.some(t => overlap({ ...c, ...size }, t)));
    if (free) {
      return free;
    }
  }
  return origin;
}

/** Move `pos` (a node's top-left corner) so that the whole node lies inside `view`. */
export function insideView(pos: IPosition, view: IBox, size = NODE_SIZE, margin = 12): IPosition {
  const clamp = (v: number, lo: number, hi: number) => (hi < lo ? lo : Math.min(Math.max(v, lo), hi));
  return {
    x: clamp(pos.x, view.x + margin, view.x + view.width - size.width - margin),
    y: clamp(pos.y, view.y + margin, view.y + view.height - size.height - margin)
  };
}

/** Whether every box of `boxes` lies inside `view`. */
export function allInside(boxes: readonly IBox[], view: IBox): boolean {
  return boxes.every(
    b => b.x >= view.x && b.y >= view.y && b.x + b.width <= view.x + view.width && b.y + b.height <= view.y + view.height
  );
}

/** Return the node a palette type adds to `flow` at `pos`: a fresh id, the schema's defaults. */
export function newNode(type: INodeType, flow: IFlow, pos: IPosition, settings: ICanvasSettings): IFlowNode {
  return {
    id: freshId(type.type, new Set(flow.nodes.map(n => n.id))),
    type: type.type,
    position: snapped(pos, settings),
    config: defaultsOf(type.config_schema)
  };
}

export function useLayout(opts: {
  doc: NxFlowDoc;
  flow: IFlow;
  drawable: readonly IFlowEdge[];
  settings: ICanvasSettings;
  wrapper: React.RefObject<HTMLDivElement>;
  shown: number;
  select: (ids: Iterable<string>) => void;
}) {
  const { doc, flow, drawable, settings, wrapper, shown, select } = opts;
  const rf = useReactFlow();

  /** The canvas on the screen and the strips along its sides that the controls (and a
   *  minimap over it) cover; null before it is laid out. */
  const screen = useCallback((): { canvas: IRect; sides: ISides } | null => {
    const el = wrapper.current;
    const box = el?.getBoundingClientRect();
    if (!el || !box || !box.width || !box.height) {
      return null;
    }
    const covers = [
      ...Array.from(el.querySelectorAll(':scope > .react-flow .react-flow__controls, :scope > .react-flow .react-flow__minimap')),
      ...Array.from(el.parentElement?.querySelectorAll(':scope > .nf-right .react-flow__minimap') ?? [])
    ].map(e => e.getBoundingClientRect());
    const canvas = { x: box.left, y: box.top, width: box.width, height: box.height };
    return { canvas, sides: coveredSides(canvas, covers) };
  }, [wrapper]);

  /** fitView's padding: `fraction` (React Flow's default 0.1) or, along a side with a cover,
   *  the strip it covers, whichever is wider. */
  const fitPadding = useCallback(
    (fraction = 0.1) => {
      const s = screen();
      if (!s) {
        return fraction;
      }
      const base = (size: number) => Math.floor((size - size / (1 + fraction)) * 0.5);
      const px = (side: number, size: number) => `${Math.ceil(Math.max(base(size), side))}px` as const;
      const { canvas, sides } = s;
      return {
        top: px(sides.top, canvas.height),
        right: px(sides.right, canvas.width),
        bottom: px(sides.bottom, canvas.height),
        left: px(sides.left, canvas.width)
      };
    },
    [screen]
  );

  /** The part of the flow the canvas shows uncovered now, in flow coordinates. */
  const visible = useCallback((): IBox | null => {
    const s = screen();
    if (!s) {
      return null;
    }
    const free = freeArea(s.canvas, s.sides);
    const a = rf.screenToFlowPosition({ x: free.x, y: free.y });
    const b = rf.screenToFlowPosition({ x: free.x + free.width, y: free.y + free.height });
    return { x: a.x, y: a.y, width: b.x - a.x, height: b.y - a.y };
  }, [rf, screen]);

  /** Pan (animated, only if needed) so that node `id` lies whole in view, under no control:
   *  after the node details open below the canvas and shrink it. */
  const reveal = useCallback(
    (id: string) => {
      const s = screen();
      const el = wrapper.current?.querySelector(`:scope > .react-flow .react-flow__node[data-id="${CSS.escape(id)}"]`);
      if (!s || !el) {
        return;
      }
      const margin = 12;
      const sides = {
        top: Math.max(s.sides.top, margin), right: Math.max(s.sides.right, margin),
        bottom: Math.max(s.sides.bottom, margin), left: Math.max(s.sides.left, margin)
      };
      const r = el.getBoundingClientRect();
      const { dx, dy } = revealShift({ x: r.left, y: r.top, width: r.width, height: r.height }, freeArea(s.canvas, sides));
      if (Math.abs(dx) >= 1 || Math.abs(dy) >= 1) {
        const vp = rf.getViewport();
        void rf.setViewport({ x: vp.x + dx, y: vp.y + dy, zoom: vp.zoom }, { duration: 300 });
      }
    },
    [rf, screen, wrapper]
  );

  // Fit the view to the content the file opened with; afterwards, nodes that arrive from
  // elsewhere (a notebook's link, another user) are brought into view when they land outside.
  const fitted = useRef(doc.nodes.size === 0);
  const known = useRef<Set<string> | null>(null);
  useEffect(() => {
    if (!fitted.current && shown) {
      fitted.current = true;
      window.setTimeout(() => rf.fitView({ maxZoom: 1.2, padding: fitPadding() }), 30);
    }
  }, [shown, rf, fitPadding]);
  const arrived = useRef<{ ids: Set<string>; timer: number | undefined }>({ ids: new Set(), timer: undefined });
  useEffect(() => {
    const ids = new Set(flow.nodes.map(n => n.id));
    const before = known.current;
    known.current = ids;
    if (!before || !fitted.current) {
      return;
    }
    const pending = arrived.current;
    ids.forEach(id => !before.has(id) && pending.ids.add(id));
    if (!pending.ids.size || pending.timer !== undefined) {
      return;
    }
    pending.timer = window.setTimeout(() => {
      // after a frame or two, so that the new nodes are measured
      const fresh = Array.from(pending.ids);
      pending.ids = new Set();
      pending.timer = undefined;
      const view = visible();
      const boxes = rf
        .getNodes()
        .filter(n => fresh.includes(n.id))
        .map(n => ({ ...n.position, width: n.measured?.width ?? NODE_SIZE.width, height: n.measured?.height ?? NODE_SIZE.height }));
      if (view && boxes.length && !allInside(boxes, view)) {
        void rf.fitView({ nodes: fresh.map(id => ({ id })), maxZoom: rf.getZoom(), duration: 300, padding: fitPadding(0.3) });
      }
    }, 80);
  }, [flow, rf, visible, fitPadding]);
  useEffect(() => () => window.clearTimeout(arrived.current.timer), []);

  /** Show every node (the toolbar's Fit button). */
  const fitAll = useCallback(() => {
    void rf.fitView({ maxZoom: 1.2, duration: 300, padding: fitPadding() });
  }, [rf, fitPadding]);

  const autoLayout = useCallback(() => {
    const sizes = new Map(rf.getNodes().map(n => [n.id, n.measured]));
    const positions = layoutPositions(
      flow.nodes.map(n => ({ id: n.id, width: sizes.get(n.id)?.width, height: sizes.get(n.id)?.height })),
      drawable as IFlowEdge[]
    );
    doc.moveNodes(positions);
    window.setTimeout(() => rf.fitView({ duration: 300, padding: fitPadding() }), 50);
  }, [doc, flow, drawable, rf, fitPadding]);

  /**
   * Add a node of `type` dropped at `position` (flow coordinates; kept whole inside the view),
   * or, without one, at the free place nearest the middle of the view.
   */
  const addNode = useCallback(
    (type: INodeType, position?: IPosition) => {
      const view = visible();
      let pos: IPosition;
      if (position) {
        pos = view ? insideView(position, view) : position;
      } else {
        const centre = view ? { x: view.x + view.width / 2, y: view.y + view.height / 2 } : { x: 0, y: 0 };
        const taken = rf.getNodes().map(n => ({
          ...n.position,
          width: n.measured?.width ?? NODE_SIZE.width,
          height: n.measured?.height ?? NODE_SIZE.height
        }));
        pos = freeSpot(centre, taken);
      }
      const node = newNode(type, flow, pos, settings);
      doc.addElements([node]);
      select([node.id]);
    },
    [doc, flow, rf, settings, visible, select]
  );

  /** Turn a point on the screen into flow coordinates. */
  const toFlow = useCallback((p: IPosition) => rf.screenToFlowPosition(p), [rf]);

  return { autoLayout, addNode, toFlow, fitAll, reveal };
}
