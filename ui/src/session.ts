import { createContext, useContext } from "react";
import type { Schemas } from "./api/client";

export type Session = Schemas["SessionView"];

export const SessionContext = createContext<Session | null>(null);

/** Whether the signed-in person may act (pause, kill, reconcile): the API's admin role.
 * The API refuses anyone else anyway; this only keeps buttons away from viewers. */
export function useCanAct(): boolean {
  return useContext(SessionContext)?.role === "admin";
}
