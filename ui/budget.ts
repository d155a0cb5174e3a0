/**
 * A build that fails when the JavaScript a first visit downloads grows past its budget:
 * the entry chunk plus every chunk it imports statically, gzipped. Routes are lazy, so
 * they do not count; they get a budget of their own each.
 */
import { gzipSync } from "node:zlib";
import type { Plugin } from "vite";

export interface Budget {
  initialKiB: number;
  chunkKiB: number;
}

interface Chunk {
  type: "chunk";
  fileName: string;
  code: string;
  isEntry: boolean;
  imports: string[];
}

function gzipKiB(code: string): number {
  return gzipSync(Buffer.from(code), { level: 9 }).length / 1024;
}

type Output = Chunk | { type: "asset" };

function chunksOf(bundle: object): Chunk[] {
  return (Object.values(bundle) as Output[]).filter((item): item is Chunk => item.type === "chunk");
}

export function initialChunks(bundle: object): Chunk[] {
  const chunks = chunksOf(bundle);
  const byName = new Map(chunks.map((chunk) => [chunk.fileName, chunk]));
  const seen = new Set<string>();
  const queue = chunks.filter((chunk) => chunk.isEntry).map((chunk) => chunk.fileName);
  while (queue.length > 0) {
    const name = queue.pop() as string;
    if (seen.has(name)) continue;
    seen.add(name);
    queue.push(...(byName.get(name)?.imports ?? []));
  }
  return chunks.filter((chunk) => seen.has(chunk.fileName));
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
      for (const chunk of all) {
        const size = gzipKiB(chunk.code);
        if (!initial.includes(chunk) && size > limits.chunkKiB) {
          this.error(
            `${chunk.fileName} is ${size.toFixed(1)} KiB gzip, over the ${limits.chunkKiB} KiB route budget`,
          );
        }
      }
    },
  };
}
