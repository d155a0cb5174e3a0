import { describe, expect, it } from "vitest";
import { parts } from "./bar";

describe("the stacked bar", () => {
  it("gives each outcome its share", () => {
    const shares = parts({ attached: 2, failed: 1, incompatible: 1, pending: 0 });
    expect(shares.map((part) => [part.key, part.count, part.percent])).toEqual([
      ["attached", 2, 50],
      ["failed", 1, 25],
      ["incompatible", 1, 25],
      ["pending", 0, 0],
    ]);
  });

  it("draws nothing for a program on no node", () => {
    expect(parts({ attached: 0, failed: 0, incompatible: 0, pending: 0 }).every((p) => p.percent === 0)).toBe(true);
  });
});
