import { describe, expect, it } from "vitest";
import { cellParam, matrixCells, moveFocus, parseCell, ruleAtLine } from "./layout";
import { ruleOf } from "./peer";

describe("ruleAtLine", () => {
  const rules = [
    { direction: "ingress" as const, index: 0, line: 8, endLine: 10 },
    { direction: "ingress" as const, index: 1, line: 11, endLine: 12 },
    { direction: "egress" as const, index: 0, line: null, endLine: null },
  ];
  it("finds the rule holding a line, or none", () => {
    expect(ruleAtLine(rules, 9)?.index).toBe(0);
    expect(ruleAtLine(rules, 11)?.index).toBe(1);
    expect(ruleAtLine(rules, 3)).toBeNull();
  });
});

describe("matrixCells", () => {
  it("marks what is allowed now and what changed", () => {
    const cells = matrixCells(["a", "b"], ["-X", ".-"], ["-.", "X-"]);
    expect(cells[0]?.[0]).toEqual({ client: "a", server: "a", now: "self", change: null });
    expect(cells[0]?.[1]).toEqual({ client: "a", server: "b", now: "allowed", change: "newly allowed" });
    expect(cells[1]?.[0]).toEqual({ client: "b", server: "a", now: "denied", change: "newly denied" });
  });
});

describe("cells in the URL", () => {
  it("round-trips and refuses nonsense", () => {
    expect(parseCell(cellParam({ client: "shop/web", server: "10.0.0.1" }))).toEqual({
      client: "shop/web",
      server: "10.0.0.1",
    });
    expect(parseCell("a|b|c")).toBeNull();
    expect(parseCell("")).toBeNull();
  });
});

describe("moveFocus", () => {
  it("moves within the grid", () => {
    expect(moveFocus([0, 0], "ArrowRight", 3)).toEqual([0, 1]);
    expect(moveFocus([0, 0], "ArrowUp", 3)).toEqual([0, 0]);
    expect(moveFocus([2, 2], "ArrowDown", 3)).toEqual([2, 2]);
    expect(moveFocus([1, 1], "End", 3)).toEqual([1, 2]);
  });
});

describe("ruleOf", () => {
  const base = {
    direction: "ingress" as const,
    kind: "pods" as const,
    podKey: "app",
    podValue: "web",
    namespaceKey: "",
    namespaceValue: "",
    cidr: "",
    port: "",
    protocol: "TCP" as const,
  };
  it("writes what was chosen", () => {
    expect(ruleOf(base)).toEqual({ from: [{ podSelector: { matchLabels: { app: "web" } } }] });
    expect(ruleOf({ ...base, kind: "namespaces", namespaceKey: "team", namespaceValue: "sre", port: "pg" })).toEqual({
      from: [
        { namespaceSelector: { matchLabels: { team: "sre" } }, podSelector: { matchLabels: { app: "web" } } },
      ],
      ports: [{ protocol: "TCP", port: "pg" }],
    });
    expect(ruleOf({ ...base, direction: "egress", kind: "addresses", cidr: "192.0.2.0/24", port: "443" })).toEqual({
      to: [{ ipBlock: { cidr: "192.0.2.0/24" } }],
      ports: [{ protocol: "TCP", port: 443 }],
    });
  });
});
