/** The canvas preferences of the Lab settings registry (UI only). */
export interface ICanvasSettings {
  snapToGrid: boolean;
  gridSize: number;
  showMinimap: boolean;
  showGrid: boolean;
}

export const DEFAULT_SETTINGS: ICanvasSettings = {
  snapToGrid: true,
  gridSize: 20,
  showMinimap: true,
  showGrid: true
};
