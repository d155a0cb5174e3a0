import { describe, expect, it } from "vitest";
import { appendRule, applyEdits, EditFailed, smallestChange, styleOf } from "./edits";

const POLICY = `# the database, web only
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}   # the database
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}   # only web
    ports: [{port: 5432}]
`;

const DNS = {
  to: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "kube-system" } } }],
  ports: [{ protocol: "UDP", port: 53 }],
};

describe("applyEdits", () => {
  it("adds a list and keeps comments, key order and flow style", () => {
    const after = applyEdits(POLICY, [{ op: "add", path: ["spec", "egress"], value: [DNS] }]);
    expect(after.startsWith(POLICY)).toBe(true);
    expect(after.slice(POLICY.length)).toBe(
      "  egress:\n  - to:\n    - namespaceSelector:\n        matchLabels:\n          kubernetes.io/metadata.name: kube-system\n    ports:\n    - protocol: UDP\n      port: 53\n",
    );
  });

  it("appends to a list at its length", () => {
    const after = applyEdits(POLICY, [
      { op: "add", path: ["spec", "ingress", 1], value: { from: [{ podSelector: {} }] } },
    ]);
    expect(after).toContain("# only web");
    expect(after).toContain("  - from:\n    - podSelector: {}\n");
    expect(after.indexOf("app: web")).toBeLessThan(after.indexOf("podSelector: {}"));
  });

  it("replaces a scalar keeping the comment beside it", () => {
    const text = "spec:\n  mode: enforce  # for now\n";
    expect(applyEdits(text, [{ op: "replace", path: ["spec", "mode"], value: "audit" }])).toBe(
      "spec:\n  mode: audit # for now\n",
    );
  });

  it("removes a field", () => {
    const after = applyEdits(POLICY, [{ op: "remove", path: ["spec", "policyTypes"] }]);
    expect(after).not.toContain("policyTypes");
    expect(after).toContain("# only web");
  });

  it("edits the document asked for and leaves the others as written", () => {
    const second = "---\napiVersion: v1\nkind: NetworkPolicy\nspec: {}\n";
    const text = POLICY + second;
    const after = applyEdits(text, [{ op: "add", path: ["spec", "mode"], value: "audit" }], 1);
    expect(after.startsWith(POLICY)).toBe(true);
    expect(after.slice(POLICY.length)).toBe("---\napiVersion: v1\nkind: NetworkPolicy\nspec: { mode: audit }\n".replace("{ mode: audit }", "{mode: audit}"));
  });

  it("refuses edits that do not fit, and text that is not YAML yet", () => {
    expect(() => applyEdits(POLICY, [{ op: "replace", path: ["spec", "nothing"], value: 1 }])).toThrow(EditFailed);
    expect(() => applyEdits(POLICY, [{ op: "add", path: ["spec", "ingress", 5], value: {} }])).toThrow(EditFailed);
    expect(() => applyEdits(POLICY, [{ op: "add", path: ["kind", "x"], value: 1 }])).toThrow(EditFailed);
    expect(() => applyEdits("spec: [\n", [{ op: "add", path: ["a"], value: 1 }])).toThrow(EditFailed);
  });
});

describe("appendRule", () => {
  it("appends to the rules, or makes the list", () => {
    const rule = { from: [{ ipBlock: { cidr: "192.0.2.0/24" } }] };
    expect(appendRule(POLICY, "ingress", rule)).toContain("  - from:\n    - ipBlock:\n        cidr: 192.0.2.0/24\n");
    expect(appendRule(POLICY, "egress", DNS)).toContain("  egress:\n  - to:");
  });
});

describe("styleOf", () => {
  it("reads how the text indents lists and pads flow collections", () => {
    expect(styleOf("a:\n- b\n").indentSeq).toBe(false);
    expect(styleOf("a:\n  - b\n").indentSeq).toBe(true);
    expect(styleOf("a: {b: c}\n").flowCollectionPadding).toBe(false);
    expect(styleOf("a: { b: c }\n").flowCollectionPadding).toBe(true);
  });
});

describe("smallestChange", () => {
  it("covers only what differs", () => {
    expect(smallestChange("abcdef", "abXYef")).toEqual({ from: 2, to: 4, insert: "XY" });
    expect(smallestChange("abc", "abc")).toEqual({ from: 3, to: 3, insert: "" });
    expect(smallestChange("abc", "abcd")).toEqual({ from: 3, to: 3, insert: "d" });
    expect(smallestChange("aaa", "aa")).toEqual({ from: 2, to: 3, insert: "" });
  });
});
