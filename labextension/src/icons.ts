import { LabIcon } from '@jupyterlab/ui-components';

const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon-warn0" fill="#f59e0b"><rect x="2" y="2" width="8" height="6" rx="1.5"/></g>
  <g class="jp-icon-brand0" fill="#16a34a"><rect x="14" y="9" width="8" height="6" rx="1.5"/></g>
  <g class="jp-icon-brand1" fill="#2563eb"><rect x="2" y="16" width="8" height="6" rx="1.5"/></g>
  <path d="M6 8v3h12M6 16v-3" fill="none" stroke="#616161" stroke-width="1.6" class="jp-icon3"/>
</svg>`;

export const flowIcon = new LabIcon({ name: 'nexusflow:flow', svgstr: svg });
