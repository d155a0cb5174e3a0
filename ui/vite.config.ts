/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";
import { budget } from "./budget.ts";

export default defineConfig({
  base: "/ui/",
  plugins: [react(), budget({ initialKiB: 120, chunkKiB: 40 })],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    // No inline <script> or data: URLs: the page runs under `default-src 'self'`.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  server: {
    proxy: { "/v1": "http://127.0.0.1:8080" },
  },
  test: {
    environment: "happy-dom",
    include: ["src/**/*.test.ts"],
  },
});
