/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";
import { budget } from "./budget.ts";

export default defineConfig({
  base: "/ui/",
  plugins: [react(), budget({ initialKiB: 120, chunkKiB: 40, routes: { Editor: 300 } })],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    // No inline <script> or data: URLs: the page runs under `default-src 'self'`.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    // The budget plugin judges sizes (gzip, per route); the editor's chunk is large
    // by nature (CodeMirror) and within its own budget.
    chunkSizeWarningLimit: 700,
  },
  server: {
    proxy: { "/v1": "http://127.0.0.1:8080" },
  },
  test: {
    environment: "happy-dom",
    include: ["src/**/*.test.ts"],
  },
});
