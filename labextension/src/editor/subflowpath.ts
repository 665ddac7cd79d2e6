/**
 * Where the flow file of a sub-flow's child run is, as a path of the server (what "Open in
 * notebook" of a node of the child run needs), or why it has none.
 *
 * A child run records its `source` as its parent names the sub-flow (the `subflow` node's
 * `flow`, a map's `flow`): a `.nxflow` path relative to the folder the top run resolved
 * every sub-flow of its tree against (runstate/subflows.py), which is the server's root for
 * a run started on the canvas (its `source` is then the flow's path there) and the working
 * directory for a run started in a notebook or the CLI (its `source` is then the absolute
 * path of its file). A sub-flow named by `workflow_id` has no file (`source` null).
 */

export type ChildFlowPath = { path: string; reason?: undefined } | { path?: undefined; reason: string };

/** Normalize a relative POSIX path; null when it leaves its base (`..` above it). */
function normalize(path: string): string | null {
  const out: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') {
      continue;
    }
    if (part === '..') {
      if (out.length === 0) {
        return null;
      }
      out.pop();
    } else {
      out.push(part);
    }
  }
  return out.join('/');
}

function folderOf(path: string): string {
  const at = path.lastIndexOf('/');
  return at < 0 ? '' : path.slice(0, at);
}

/**
 * The child run's flow file as a path of the server.
 *
 * @param canvasPath the flow open on the canvas (the top run's flow), a path of the server
 * @param topSource the `source` of the run shown on the canvas (the top of the drill trail)
 * @param childSource the `source` of the child run
 */
export function childFlowPath(
  canvasPath: string,
  topSource: string | null | undefined,
  childSource: string | null | undefined
): ChildFlowPath {
  if (!childSource || !childSource.endsWith('.nxflow')) {
    return {
      reason:
        'This sub-flow is a stored workflow (named by workflow_id), not a file: there is no flow file to write the debug notebook next to. In a notebook: nf.Run.attach(run_id).debug(node_id).'
    };
  }
  if (childSource.startsWith('/')) {
    return { reason: `The sub-flow file ${childSource} is not a path inside the server's folder.` };
  }
  let base: string;
  const top = topSource ? normalize(topSource) : null;
  if (top && !topSource!.startsWith('/') && (canvasPath === top || canvasPath.endsWith(`/${top}`))) {
    // Started on the canvas (or from a folder above the flow): its source is the flow's path
    // relative to the folder sub-flow paths are resolved against.
    base = canvasPath.slice(0, canvasPath.length - top.length);
  } else {
    // Started in a notebook or the CLI (an absolute source): sub-flow paths were relative to
    // its working directory, taken to be the flow's folder.
    base = folderOf(canvasPath);
  }
  const path = normalize(`${base}/${childSource}`);
  if (path === null) {
    return { reason: `The sub-flow file ${childSource} is outside the server's folder.` };
  }
  return { path };
}
