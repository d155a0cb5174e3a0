import { describe, expect, it } from "vitest";
import { nextSort, offsetOf, pageCount, pageOf, rangeText, sortState, withParams } from "./params";

describe("view state in the URL", () => {
  it("sets and removes parameters, and goes back to page 1 on a new filter", () => {
    const search = new URLSearchParams("selector=tier%3Dedge&page=3");
    const next = withParams(search, { readiness: "Ready" });
    expect(next.get("readiness")).toBe("Ready");
    expect(next.get("selector")).toBe("tier=edge");
    expect(next.has("page")).toBe(false);
    expect(withParams(search, { selector: "" }).has("selector")).toBe(false);
    expect(withParams(search, { page: 4 }).get("page")).toBe("4");
    expect(search.get("page")).toBe("3"); // the original is left alone
  });

  it("reads pages defensively", () => {
    expect(pageOf(new URLSearchParams(""))).toBe(1);
    expect(pageOf(new URLSearchParams("page=0"))).toBe(1);
    expect(pageOf(new URLSearchParams("page=abc"))).toBe(1);
    expect(pageOf(new URLSearchParams("page=7"))).toBe(7);
    expect(offsetOf(new URLSearchParams("page=3"), 50)).toBe(100);
    expect(pageCount(0)).toBe(1);
    expect(pageCount(10001, 50)).toBe(201);
  });

  it("describes the rows shown", () => {
    expect(rangeText(2, 50, 10000, 50)).toBe("51–100 of 10,000");
    expect(rangeText(1, 3, 3, 50)).toBe("1–3 of 3");
    expect(rangeText(1, 0, 0, 50)).toBe("0 of 0");
  });

  it("toggles sort direction per column", () => {
    expect(nextSort("name", "name")).toBe("-name");
    expect(nextSort("-name", "name")).toBe("name");
    expect(nextSort("name", "kernelRelease")).toBe("kernelRelease");
    expect(sortState("-name", "name")).toBe("descending");
    expect(sortState("name", "name")).toBe("ascending");
    expect(sortState("name", "readiness")).toBe("none");
  });
});
