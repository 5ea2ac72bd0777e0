/** Owns the checks of a peer's address against a list of addresses and CIDR ranges
 *  (proxyAllowIps, forwardedAllowIps), with Node's net.BlockList. */

import { BlockList, isIPv4 } from 'node:net';

/** Addresses and CIDR ranges (`*`: any) as a check of a peer's address. IPv4 peers that reach an
 *  IPv6 socket as ::ffff:a.b.c.d are checked as a.b.c.d. */
export function allowList(entries: readonly string[]): (address: string | undefined) => boolean {
  if (entries.includes('*')) return () => true;
  const list = new BlockList();
  for (const entry of entries) {
    const [address, prefix] = entry.split('/') as [string, string | undefined];
    const type = isIPv4(address) ? 'ipv4' : 'ipv6';
    if (prefix === undefined) list.addAddress(address, type);
    else list.addSubnet(address, Number(prefix), type);
  }
  return (address) => {
    if (!address) return false;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (mapped) return list.check(mapped[1]!, 'ipv4');
    return list.check(address, isIPv4(address) ? 'ipv4' : 'ipv6');
  };
}
