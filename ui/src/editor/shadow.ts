/**
 * CodeMirror styles itself with `<style>` tags, which the page's Content-Security-Policy
 * (`default-src 'self'`, no inline styles) refuses. Inside a shadow root it adopts
 * constructed stylesheets instead, which the policy allows: so each editor lives in an
 * open shadow root of its host element (open: the page's tests and tools still see in).
 */
export function shadowParent(host: HTMLElement): { root: ShadowRoot; parent: HTMLElement } {
  const root = host.shadowRoot ?? host.attachShadow({ mode: "open" });
  root.replaceChildren();
  const parent = document.createElement("div");
  root.append(parent);
  return { root, parent };
}
