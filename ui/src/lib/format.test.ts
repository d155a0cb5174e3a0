import { describe, expect, it } from "vitest";
import { ago, ageSeconds, count, dateTime, duration, nanoseconds, shortDigest } from "./format";

describe("times", () => {
  const now = Date.parse("2026-01-01T12:00:00Z");

  it("says durations in the largest whole unit", () => {
    expect(duration(0)).toBe("0 s");
    expect(duration(59.9)).toBe("59 s");
    expect(duration(150)).toBe("2 min");
    expect(duration(7300)).toBe("2 h");
    expect(duration(200000)).toBe("2 d");
  });

  it("measures ages from ISO times, never negative", () => {
    expect(ageSeconds("2026-01-01T11:59:30Z", now)).toBe(30);
    expect(ageSeconds("2026-01-01T12:00:05Z", now)).toBe(0);
    expect(ageSeconds(null, now)).toBeNull();
    expect(ageSeconds("yesterday", now)).toBeNull();
    expect(ago("2026-01-01T11:58:00Z", now)).toBe("2 min ago");
    expect(ago(undefined, now)).toBe("never");
  });

  it("prints times in UTC", () => {
    expect(dateTime("2026-01-01T12:00:00.123456Z")).toBe("2026-01-01 12:00:00 UTC");
    expect(dateTime("nonsense")).toBe("nonsense");
  });
});

describe("numbers", () => {
  it("shortens digests with or without their prefix", () => {
    expect(shortDigest("sha256:0123456789abcdef0123")).toBe("0123456789ab");
    expect(shortDigest("fedcba9876543210")).toBe("fedcba987654");
    expect(shortDigest(null)).toBe("");
  });

  it("counts with the right noun", () => {
    expect(count(1, "node")).toBe("1 node");
    expect(count(10000, "node")).toBe("10,000 nodes");
    expect(count(2, "policy", "policies")).toBe("2 policies");
  });

  it("reads nanoseconds", () => {
    expect(nanoseconds(950)).toBe("950 ns");
    expect(nanoseconds(1200)).toBe("1.2 µs");
    expect(nanoseconds(3_400_000)).toBe("3.4 ms");
    expect(nanoseconds(5_600_000_000)).toBe("5.6 s");
  });
});
