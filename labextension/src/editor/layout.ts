/**
 * Where nodes go: the view fitted to the file as it opened, auto-layout (dagre), and the
 * place of a node added from the palette (snapped to the grid).
 */
import React, { useCallback, useEffect, useRef } from 'react';
import { useReactFlow } from '@xyflow/react';
import type { INodeType } from '../api.js';
import { freshId, IFlow, IFlowEdge, IFlowNode, IPosition, layoutPositions } from '../graph.js';
import type { NxFlowDoc } from '../model.js';
import { defaultsOf } from './schema.js';
import type { ICanvasSettings } from './settings.js';

/** Round `pos` to the grid (when snapping is on). */
export function snapped(pos: IPosition, settings: ICanvasSettings): IPosition {
  const snap = settings.snapToGrid ? settings.gridSize : 1;
  return { x: Math.round(pos.x / snap) * snap, y: Math.round(pos.y / snap) * snap };
}

/** Where the n-th node added without a drop point goes: near the centre, stepped so that
 *  several added in a row do not cover each other. */
export function besideCentre(centre: IPosition, n: number): IPosition {
  const step = 30 * (n % 5);
  return { x: centre.x - 90 + step, y: centre.y - 28 + step };
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

  // Fit the view to the content the file opened with (never later, when nodes get added).
  const fitted = useRef(doc.nodes.size === 0);
  useEffect(() => {
    if (!fitted.current && shown) {
      fitted.current = true;
      window.setTimeout(() => rf.fitView({ maxZoom: 1.2 }), 30);
    }
  }, [shown, rf]);

  const autoLayout = useCallback(() => {
    const sizes = new Map(rf.getNodes().map(n => [n.id, n.measured]));
    const positions = layoutPositions(
      flow.nodes.map(n => ({ id: n.id, width: sizes.get(n.id)?.width, height: sizes.get(n.id)?.height })),
      drawable as IFlowEdge[]
    );
    doc.moveNodes(positions);
    window.setTimeout(() => rf.fitView({ duration: 300 }), 50);
  }, [doc, flow, drawable, rf]);

  /** Add a node of `type` at `position` (flow coordinates), or near the middle of the view. */
  const addNode = useCallback(
    (type: INodeType, position?: IPosition) => {
      let pos = position;
      if (!pos) {
        const box = wrapper.current?.getBoundingClientRect();
        const centre = rf.screenToFlowPosition({
          x: (box?.left ?? 0) + (box?.width ?? 400) / 2,
          y: (box?.top ?? 0) + (box?.height ?? 300) / 2
        });
        pos = besideCentre(centre, flow.nodes.length);
      }
      const node = newNode(type, flow, pos, settings);
      doc.addElements([node]);
      select([node.id]);
    },
    [doc, flow, rf, settings, wrapper, select]
  );

  /** Turn a point on the screen into flow coordinates. */
  const toFlow = useCallback((p: IPosition) => rf.screenToFlowPosition(p), [rf]);

  return { autoLayout, addNode, toFlow };
}
