/** Owns turning user and group settings into ids, through the system's own name service (`id`,
 *  `getent`), so that users from LDAP or systemd's dynamic users resolve as they do for everything
 *  else on the machine. */

import { execFileSync } from 'node:child_process';
import { ConfigError } from './errors';

export interface Identity {
  readonly uid: number;
  readonly gid: number;
  /** The user's name, for initgroups. */
  readonly user: string;
}

function run(cmd: string, args: string[]): string | null {
  try { return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(); } catch { return null; }
}

/** The uid and gid workers run as, or null when `user` is unset (they run as the master does). */
export function resolveIdentity(user: string | null, group: string | null): Identity | null {
  if (user === null && group === null) return null;
  const who = user ?? String(process.getuid?.() ?? 0);
  const uid = /^\d+$/.test(who) ? Number(who) : Number(run('id', ['-u', who]) ?? NaN);
  if (!Number.isInteger(uid)) throw new ConfigError(`user ${JSON.stringify(user)} does not exist (id -u found no such user)`);
  const name = run('id', ['-un', String(uid)]) ?? who;
  let gid: number;
  if (group === null) gid = Number(run('id', ['-g', String(uid)]) ?? NaN);
  else if (/^\d+$/.test(group)) gid = Number(group);
  else gid = Number(run('getent', ['group', group])?.split(':')[2] ?? NaN);
  if (!Number.isInteger(gid)) throw new ConfigError(`group ${JSON.stringify(group ?? name)} does not exist (getent group found none)`);
  return { uid, gid, user: name };
}

/** The gid of `group` (a name or a gid); a ConfigError naming `setting` when there is none. */
export function resolveGroup(group: string, setting: string): number {
  const gid = /^\d+$/.test(group) ? Number(group) : Number(run('getent', ['group', group])?.split(':')[2] ?? NaN);
  if (!Number.isInteger(gid)) throw new ConfigError(`${setting}: group ${JSON.stringify(group)} does not exist (getent group found none)`);
  return gid;
}

/** A uid's user name, or the number when the name service has none. */
export function userName(uid: number): string { return run('getent', ['passwd', String(uid)])?.split(':')[0] || String(uid); }

/** A gid's group name, or the number when the name service has none. */
export function groupName(gid: number): string { return run('getent', ['group', String(gid)])?.split(':')[0] || String(gid); }
