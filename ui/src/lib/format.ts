/** Plain words for numbers and times. Display only: no fleet judgement happens here. */

export function ageSeconds(iso: string | null | undefined, now: number): number | null {
  if (!iso) return null;
  const then = Date.parse(iso);
  return Number.isNaN(then) ? null : Math.max(0, (now - then) / 1000);
}

/** 42 -> "42 s", 150 -> "2 min", 7300 -> "2 h", 200000 -> "2 d". */
export function duration(seconds: number): string {
  if (seconds < 60) return `${Math.floor(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h`;
  return `${Math.floor(seconds / 86400)} d`;
}

export function ago(iso: string | null | undefined, now: number): string {
  const seconds = ageSeconds(iso, now);
  return seconds === null ? "never" : `${duration(seconds)} ago`;
}

/** "sha256:0123456789abcdef..." or a bare hex digest -> its first 12 hex digits. */
export function shortDigest(digest: string | null | undefined): string {
  if (!digest) return "";
  return digest.replace(/^sha256:/, "").slice(0, 12);
}

export function count(value: number, noun: string, plural = `${noun}s`): string {
  return `${value.toLocaleString("en-US")} ${value === 1 ? noun : plural}`;
}

export function number(value: number): string {
  return value.toLocaleString("en-US");
}

/** Nanoseconds, readable: 950 ns, 1.2 µs, 3.4 ms, 5.6 s. */
export function nanoseconds(ns: number): string {
  if (ns < 1_000) return `${ns} ns`;
  if (ns < 1_000_000) return `${(ns / 1_000).toFixed(1)} µs`;
  if (ns < 1_000_000_000) return `${(ns / 1_000_000).toFixed(1)} ms`;
  return `${(ns / 1_000_000_000).toFixed(1)} s`;
}

export function clock(iso: string | number | null | undefined): string {
  if (iso === null || iso === undefined) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString("en-GB", { hour12: false });
}

export function dateTime(iso: string | null | undefined): string {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}
