/** host:port addresses as users type them: 127.0.0.1:7001, [::1]:7001, localhost:7001, :7001. */

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export class AddressError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/**
 * Parses `host:port`. A missing host (":7001") means `defaultHost`; a bare port ("7001") too.
 * Port 0 is allowed only when `allowZero` (listen addresses: pick any free port).
 */
export function parseHostPort(text: string, what: string, opts: { defaultHost?: string; allowZero?: boolean } = {}): HostPort {
  const t = text.trim();
  const bad = (why: string): AddressError => new AddressError(`${what}: '${text}' ${why} (examples: 127.0.0.1:7001, [::1]:7001, localhost:7001)`);
  let host: string;
  let portText: string;
  const v6 = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(t);
  if (v6 !== null) {
    host = v6[1]!;
    portText = v6[2]!;
  } else if (/^\d+$/.test(t)) {
    host = '';
    portText = t;
  } else {
    const i = t.lastIndexOf(':');
    if (i < 0) throw bad('has no port');
    host = t.slice(0, i);
    portText = t.slice(i + 1);
    if (host.includes(':')) throw bad('needs brackets around an IPv6 host');
    if (!/^[A-Za-z0-9._-]*$/.test(host)) throw bad('is not a host:port address');
    if (!/^\d{1,5}$/.test(portText)) throw bad('has no valid port');
  }
  const port = Number(portText);
  if (port > 65535 || (port === 0 && opts.allowZero !== true)) throw bad(`has port ${port}, outside 1..65535`);
  return { host: host === '' ? (opts.defaultHost ?? '127.0.0.1') : host, port };
}

export function formatHostPort(a: HostPort): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** Whether a listen host is a wildcard (then peers must be told a reachable address instead). */
export function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '';
}
