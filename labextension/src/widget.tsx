/** The document widget that shows a `.nxflow` file on the canvas. */
import React from 'react';
import { ReactWidget } from '@jupyterlab/apputils';
import { ABCWidgetFactory, DocumentRegistry, DocumentWidget } from '@jupyterlab/docregistry';
import { ISignal, Signal } from '@lumino/signaling';
import { FlowEditor } from './editor/editor.js';
import { DEFAULT_SETTINGS, ICanvasSettings } from './editor/settings.js';
import { NxFlowModel } from './model.js';

export const FACTORY = 'Nexus-Flow Canvas';

/** Canvas settings that every open canvas follows live. */
export class CanvasSettings {
  get current(): ICanvasSettings {
    return this._current;
  }

  set current(value: ICanvasSettings) {
    this._current = value;
    this._changed.emit(value);
  }

  get changed(): ISignal<this, ICanvasSettings> {
    return this._changed;
  }

  private _current: ICanvasSettings = DEFAULT_SETTINGS;
  private _changed = new Signal<this, ICanvasSettings>(this);
}

export class NxFlowPanel extends ReactWidget {
  constructor(
    private _context: DocumentRegistry.IContext<NxFlowModel>,
    private _settings: CanvasSettings,
    private _openAsText: (path: string) => void,
    private _openPath?: (path: string) => void
  ) {
    super();
    this.addClass('nf-panel');
    this._settings.changed.connect(this.update, this);
    void this._context.ready.then(() => {
      this._ready = true;
      this.update();
    });
  }

  dispose(): void {
    this._settings.changed.disconnect(this.update, this);
    super.dispose();
  }

  protected render(): JSX.Element {
    if (!this._ready) {
      return <div className="nf-loading">Opening flow…</div>;
    }
    const context = this._context;
    return (
      <FlowEditor
        model={context.model}
        path={() => context.localPath}
        settings={this._settings.current}
        openAsText={() => this._openAsText(context.path)}
        openPath={this._openPath}
      />
    );
  }

  private _ready = false;
}

export class NxFlowWidgetFactory extends ABCWidgetFactory<
  DocumentWidget<NxFlowPanel, NxFlowModel>,
  NxFlowModel
> {
  constructor(
    options: DocumentRegistry.IWidgetFactoryOptions,
    private _settings: CanvasSettings,
    private _openAsText: (path: string) => void,
    private _openPath?: (path: string) => void
  ) {
    super(options);
  }

  protected createNewWidget(
    context: DocumentRegistry.IContext<NxFlowModel>
  ): DocumentWidget<NxFlowPanel, NxFlowModel> {
    const content = new NxFlowPanel(context, this._settings, this._openAsText, this._openPath);
    const widget = new DocumentWidget({ content, context });
    widget.addClass('nf-document');
    return widget;
  }
}
