/**
 * The notebook widget's ES module (anywidget): the same canvas as the Lab panel, bundled with
 * React and @xyflow/react into one file by `npm run build:widget`, sent over the widget comm.
 */
import React from 'react';
import { createRoot } from 'react-dom/client';
import { ReactFlowProvider } from '@xyflow/react';
import type { Render } from '@anywidget/types';
import { InlineCanvas } from './inline.js';
import '@xyflow/react/dist/style.css';
import '../../style/canvas.css';
import '../../style/notebook.css';

const render: Render = ({ model, el, experimental }) => {
  const root = createRoot(el);
  root.render(
    <ReactFlowProvider>
      <InlineCanvas model={model} experimental={experimental} />
    </ReactFlowProvider>
  );
  return () => root.unmount();
};

export default { render };
