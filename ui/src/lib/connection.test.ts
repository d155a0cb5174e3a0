import { afterEach, describe, expect, it } from "vitest";
import { connection } from "./connection";

describe("the connection store", () => {
  afterEach(() => connection.reset());

  it("tells listeners when the API stops and starts answering", () => {
    const seen: boolean[] = [];
    const stop = connection.subscribe(() => seen.push(connection.get().reachable));
    connection.answered(1000);
    connection.failed();
    connection.failed(); // no change, no news
    connection.answered(2000);
    stop();
    connection.failed();
    expect(seen).toEqual([true, false, true]);
    expect(connection.get().lastAnswer).toBe(2000);
  });

  it("keeps the time of the last answer while unreachable", () => {
    connection.answered(5000);
    connection.failed();
    expect(connection.get()).toEqual({ reachable: false, lastAnswer: 5000, signedOut: false });
  });
});
