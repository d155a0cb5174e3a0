/** A proposal's stages in the order a card shows them, each with the time the API gave
 * it (null: not reached). Which stage a proposal is in is the API's word (``stage``);
 * this only lays out the path: a conflict or failure ends it after Proposed, a
 * rejection takes the place of Applied until a later revision applies it. */

export type StageName = "Proposed" | "Pushed" | "Merged" | "Applied" | "Rejected" | "Enforcing" | "Conflict" | "Failed";

export interface StageTimes {
  state: string;
  createdAt: string;
  updatedAt: string;
  pushedAt: string | null;
  mergedAt: string | null;
  appliedAt: string | null;
  rejectedAt: string | null;
  enforcedAt: string | null;
}

export interface StageStep {
  name: StageName;
  at: string | null;
}

export function stagePath(proposal: StageTimes): StageStep[] {
  const proposed: StageStep = { name: "Proposed", at: proposal.createdAt };
  if (proposal.state === "Conflict" || proposal.state === "Failed") {
    return [proposed, { name: proposal.state, at: proposal.updatedAt }];
  }
  const rejected = proposal.rejectedAt !== null && proposal.appliedAt === null;
  return [
    proposed,
    { name: "Pushed", at: proposal.pushedAt },
    { name: "Merged", at: proposal.mergedAt },
    rejected ? { name: "Rejected", at: proposal.rejectedAt } : { name: "Applied", at: proposal.appliedAt },
    { name: "Enforcing", at: proposal.enforcedAt },
  ];
}
