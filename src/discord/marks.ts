/**
 * Which answers repeat, and for what: a 401, 403 or 404 sent again draws the same answer and spends the egress's
 * invalid-request budget again (docs/discord-ratelimits.md §4), so the proxy answers such requests itself for a
 * while. A mark is exactly as narrow as what Discord's answer says (its JSON error code), never wider: a 404 on
 * one message of a webhook says nothing about the webhook, a 403 on banning one member says nothing about the
 * guild's other members. A code this table does not know marks nothing.
 *
 * The README's "Known-bad answers" table is this table; test/unit/marks.test.ts checks both.
 */
import type { MarkScope } from '../limiter/types.js';

/** Discord's JSON error codes the proxy acts on (https://discord.com/developers/docs/topics/opcodes-and-status-codes#json). */
export const DiscordCode = {
  General: 0,
  UnknownWebhook: 10015,
  MissingAccess: 50001,
  CannotMessageUser: 50007,
  MissingPermissions: 50013,
  InvalidWebhookToken: 50027,
} as const;

export interface MarkedRequest {
  /** The request carried an Authorization header. */
  readonly authorized: boolean;
  /** Its major parameter names a webhook ("w:…"). */
  readonly webhook: boolean;
  /** A webhook route called with the webhook's token in the path. */
  readonly webhookWithToken: boolean;
}

export interface Mark {
  readonly scope: MarkScope;
  /** Which configured duration applies (REVOKED_MARK_MS, GONE_MARK_MS, FORBIDDEN_MARK_MS). */
  readonly duration: 'revoked' | 'gone' | 'forbidden';
  /** The code the proxy's own answer repeats. */
  readonly code: number;
}

/**
 * The mark an answer sets, or null. `code` is the `code` of Discord's JSON body (undefined when the body was not
 * JSON or had none).
 */
export function markFor(status: number, code: number | undefined, req: MarkedRequest): Mark | null {
  switch (status) {
    case 401:
      if (req.webhookWithToken) {
        // The webhook's token no longer opens it: every call with that token fails alike.
        return code === DiscordCode.InvalidWebhookToken ? gone(code) : null;
      }
      // A revoked or wrong token fails on every route. Without a token, only this route is known to need one.
      if (code !== DiscordCode.General && code !== undefined) return null;
      return req.authorized
        ? { scope: 'revoked', duration: 'revoked', code: DiscordCode.General }
        : { scope: 'unauthorized', duration: 'revoked', code: DiscordCode.General };
    case 404:
      return req.webhook && code === DiscordCode.UnknownWebhook ? gone(code) : null;
    case 403:
      switch (code) {
        case DiscordCode.MissingAccess:
          // The bot cannot see the channel (or guild) at all: nothing on it will work.
          return { scope: 'closed', duration: 'forbidden', code };
        case DiscordCode.MissingPermissions:
        case DiscordCode.CannotMessageUser:
          // This target only: that member, that message, that DM channel.
          return { scope: 'forbidden', duration: 'forbidden', code };
        default:
          return null;
      }
    default:
      return null;
  }
}

function gone(code: number): Mark {
  return { scope: 'gone', duration: 'gone', code };
}
