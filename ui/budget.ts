/**
 * A build that fails when the JavaScript a first visit downloads grows past its budget:
 * the entry chunk plus every chunk it imports statically, gzipped. Routes are lazy, so
 * they do not count; they get a budget of their own each: what visiting one adds (its
 * chunk and every chunk it imports that the first visit did not load). The policy
 * editor, which brings CodeMirror, has a larger one than the dashboard's views.
 */
import { gzipSync } from "node:zlib";
import type { Plugin } from "vite";

export interface Budget {
  initialKiB: number;
  chunkKiB: number;
  /** Route chunk name (its module's file name) -> its own budget. */
  routes?: Record<string, number>;
}

interface Chunk {
  type: "chunk";
  name: string;
  fileName: string;
  code: string;
  isEntry: boolean;
  isDynamicEntry: boolean;
  imports: string[];
}

function gzipKiB(code: string): number {
  return gzipSync(Buffer.from(code), { level: 9 }).length / 1024;
}

type Output = Chunk | { type: "asset" };

function chunksOf(bundle: object): Chunk[] {
  return (Object.values(bundle) as Output[]).filter((item): item is Chunk => item.type === "chunk");
}

/** The chunks ``roots`` load: themselves and every chunk they import statically. */
function closure(chunks: Chunk[], roots: Chunk[]): Chunk[] {
  const byName = new Map(chunks.map((chunk) => [chunk.fileName, chunk]));
  const seen = new Set<string>();
  const queue = roots.map((chunk) => chunk.fileName);
  while (queue.length > 0) {
    const name = queue.pop() as string;
    if (seen.has(name)) continue;
    seen.add(name);
    queue.push(...(byName.get(name)?.imports ?? []));
  }
  return chunks.filter((chunk) => seen.has(chunk.fileName));
}

export function initialChunks(bundle: object): Chunk[] {
  const chunks = chunksOf(bundle);
  return closure(chunks, chunks.filter((chunk) => chunk.isEntry));
}

/** What visiting a lazy route adds to the first visit's chunks. */
export function routeChunks(bundle: object, route: Chunk): Chunk[] {
  const initial = new Set(initialChunks(bundle).map((chunk) => chunk.fileName));
  return closure(chunksOf(bundle), [route]).filter((chunk) => !initial.has(chunk.fileName));
}

export function budget(limits: Budget): Plugin {
  return {
    name: "bpfleet-budget",
    apply: "build",
    generateBundle(_options, bundle) {
      const initial = initialChunks(bundle);
      const initialSize = initial.reduce((sum, chunk) => sum + gzipKiB(chunk.code), 0);
      const all = chunksOf(bundle);
      const total = all.reduce((sum, chunk) => sum + gzipKiB(chunk.code), 0);
      this.info(
        `initial JS ${initialSize.toFixed(1)} KiB gzip (budget ${limits.initialKiB}), ` +
          `all JS ${total.toFixed(1)} KiB gzip in ${all.length} chunks`,
      );
      if (initialSize > limits.initialKiB) {
        this.error(
          `initial JS is ${initialSize.toFixed(1)} KiB gzip, over the ${limits.initialKiB} KiB budget`,
        );
      }
      for (const route of all.filter((chunk) => chunk.isDynamicEntry)) {
        const size = routeChunks(bundle, route).reduce((sum, chunk) => sum + gzipKiB(chunk.code), 0);
        const allowed = limits.routes?.[route.name] ?? limits.chunkKiB;
        if (limits.routes?.[route.name] !== undefined) {
          this.info(`route ${route.name}: ${size.toFixed(1)} KiB gzip (budget ${allowed})`);
        }
        if (size > allowed) {
          this.error(`route ${route.name} adds ${size.toFixed(1)} KiB gzip, over its ${allowed} KiB budget`);
        }
      }
    },
  };
}
