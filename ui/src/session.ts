import { createContext, useContext } from "react";
import type { Schemas } from "./api/client";

export type Session = Schemas["SessionView"];

export const SessionContext = createContext<Session | null>(null);

export type Permission = Session["may"][number];

/** Whether the signed-in person's role may do this, as the API says (``may``: the same
 * table its routes admit by). The API refuses anyone else anyway; this only keeps
 * buttons away from people who could not use them. */
export function useMay(permission: Permission): boolean {
  return useContext(SessionContext)?.may.includes(permission) ?? false;
}

/** Whether the signed-in person may act on the fleet (pause, kill, reconcile). */
export function useCanAct(): boolean {
  return useMay("administer");
}
