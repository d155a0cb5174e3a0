import { describe, expect, it } from "vitest";
import { stagePath, type StageTimes } from "./stages";

const created: StageTimes = {
  state: "Proposed",
  createdAt: "2026-01-01T10:00:00Z",
  updatedAt: "2026-01-01T10:00:00Z",
  pushedAt: null,
  mergedAt: null,
  appliedAt: null,
  rejectedAt: null,
  enforcedAt: null,
};

const names = (times: StageTimes) => stagePath(times).map((step) => `${step.name}${step.at ? "@" : ""}`);

describe("a proposal's stages", () => {
  it("lays out the whole path from the start, only Proposed reached", () => {
    expect(names(created)).toEqual(["Proposed@", "Pushed", "Merged", "Applied", "Enforcing"]);
  });

  it("ends after Proposed on a conflict or a failure", () => {
    expect(names({ ...created, state: "Conflict" })).toEqual(["Proposed@", "Conflict@"]);
    expect(names({ ...created, state: "Failed" })).toEqual(["Proposed@", "Failed@"]);
  });

  it("shows Rejected in Applied's place until a later revision applies it", () => {
    const rejected = { ...created, state: "Rejected", pushedAt: "x", mergedAt: "x", rejectedAt: "x" };
    expect(names(rejected)).toEqual(["Proposed@", "Pushed@", "Merged@", "Rejected@", "Enforcing"]);
    const later = { ...rejected, state: "Applied", appliedAt: "y", enforcedAt: "z" };
    expect(names(later)).toEqual(["Proposed@", "Pushed@", "Merged@", "Applied@", "Enforcing@"]);
  });
});
