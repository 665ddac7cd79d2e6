/** Nexus-Flow for JupyterLab: the `.nxflow` document type and its collaborative canvas. */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, WidgetTracker } from '@jupyterlab/apputils';
import { ICollaborativeContentProvider } from '@jupyter/collaborative-drive';
import { DocumentWidget } from '@jupyterlab/docregistry';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { DEFAULT_SETTINGS, ICanvasSettings } from './editor/settings.js';
import { dumpsCanonical } from './graph.js';
import { flowIcon } from './icons.js';
import { CONTENT_TYPE, NxFlowDoc, NxFlowModel, NxFlowModelFactory } from './model.js';
import { CanvasSettings, FACTORY, NxFlowPanel, NxFlowWidgetFactory } from './widget.js';

const PLUGIN_ID = 'nexusflow:plugin';
const CMD_NEW = 'nexusflow:new-flow';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The Nexus-Flow canvas for .nxflow files, edited together in real time.',
  autoStart: true,
  optional: [
    ICollaborativeContentProvider,
    ILauncher,
    IMainMenu,
    ICommandPalette,
    ISettingRegistry,
    IDefaultFileBrowser,
    ILayoutRestorer
  ],
  activate: (
    app: JupyterFrontEnd,
    rtc: ICollaborativeContentProvider | null,
    launcher: ILauncher | null,
    mainMenu: IMainMenu | null,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    browser: IDefaultFileBrowser | null,
    restorer: ILayoutRestorer | null
  ) => {
    const settings = new CanvasSettings();
    app.docRegistry.addFileType({
      name: CONTENT_TYPE,
      displayName: 'Nexus-Flow flow',
      extensions: ['.nxflow'],
      mimeTypes: ['application/x-nexusflow+json'],
      fileFormat: 'text',
      contentType: CONTENT_TYPE,
      icon: flowIcon
    });
    if (rtc) {
      rtc.sharedModelFactory.registerDocumentFactory(CONTENT_TYPE, () => new NxFlowDoc());
    }
    app.docRegistry.addModelFactory(new NxFlowModelFactory());
    const openAsText = (path: string) =>
      void app.commands.execute('docmanager:open', { path, factory: 'Editor' });
    const factory = new NxFlowWidgetFactory(
      {
        name: FACTORY,
        label: 'Nexus-Flow Canvas',
        modelName: 'nexusflow-model',
        fileTypes: [CONTENT_TYPE],
        defaultFor: [CONTENT_TYPE],
        contentProviderId: rtc ? 'rtc' : undefined
      } as any,
      settings,
      openAsText,
      // The debug notebook of a node: opened with its default factory (a notebook, its kernel).
      (path: string) => void app.commands.execute('docmanager:open', { path })
    );
    app.docRegistry.addWidgetFactory(factory);

    const tracker = new WidgetTracker<DocumentWidget<NxFlowPanel, NxFlowModel>>({
      namespace: 'nexusflow'
    });
    factory.widgetCreated.connect((_, widget) => {
      widget.title.icon = flowIcon;
      widget.context.pathChanged.connect(() => void tracker.save(widget));
      void tracker.add(widget);
    });
    if (restorer) {
      void restorer.restore(tracker, {
        command: 'docmanager:open',
        args: widget => ({ path: widget.context.path, factory: FACTORY }),
        name: widget => widget.context.path
      });
    }

    app.commands.addCommand(CMD_NEW, {
      label: args => (args.isPalette ? 'New Nexus-Flow Flow' : args.isLauncher ? 'Flow' : 'Flow'),
      caption: 'Create a new Nexus-Flow workflow',
      icon: args => (args.isPalette ? undefined : flowIcon),
      execute: async args => {
        const cwd = (args.cwd as string) ?? browser?.model.path ?? '';
        const contents = app.serviceManager.contents;
        const created = await contents.newUntitled({ path: cwd, type: 'file', ext: '.nxflow' });
        const name = created.name.replace(/\.nxflow$/, '');
        await contents.save(created.path, {
          type: 'file',
          format: 'text',
          content: dumpsCanonical({ schema: 1, name, nodes: [], edges: [] })
        });
        return app.commands.execute('docmanager:open', { path: created.path, factory: FACTORY });
      }
    });
    launcher?.add({ command: CMD_NEW, category: 'Other', rank: 1 });
    palette?.addItem({ command: CMD_NEW, category: 'Nexus-Flow', args: { isPalette: true } });
    mainMenu?.fileMenu.newMenu.addGroup([{ command: CMD_NEW }], 30);

    if (settingRegistry) {
      const apply = (s: ISettingRegistry.ISettings) => {
        settings.current = { ...DEFAULT_SETTINGS, ...(s.composite as Partial<ICanvasSettings>) };
      };
      settingRegistry.load(PLUGIN_ID).then(
        s => {
          apply(s);
          s.changed.connect(apply);
        },
        err => console.warn('Nexus-Flow settings could not be loaded', err)
      );
    }
  }
};

export default plugin;
