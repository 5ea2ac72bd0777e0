/** Owns reading and checking the TLS material the config names (certfile, keyfile, caCerts): the
 *  master reads the files (a worker that dropped privileges may not be able to) and checks them
 *  before any worker needs them: each file readable PEM, the key the certificate's, the
 *  certificate not expired, the cipher list and versions ones OpenSSL takes. What it returns is
 *  plain JSON, sent to each worker over IPC, which builds its secure context from it. */

import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { ConfigError } from './errors';
import type { Config } from './settings';
import type { Logger } from '../log/logger';

export interface TlsMaterial {
  readonly cert: string;
  readonly key: string;
  /** More certificates by the server name a client asks for (SNI); lower case, maybe *.name. */
  readonly sni: ReadonlyArray<{ readonly servername: string; readonly cert: string; readonly key: string }>;
  readonly ca: string | null;
  readonly certReqs: 'none' | 'optional' | 'required';
  readonly ciphers: string | null;
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3';
  /** Offer h2 beside http/1.1 by ALPN (the http2 setting). */
  readonly http2: boolean;
}

/** What the log says of a certificate, so that an operator can tell which one is live. */
export interface CertificateFacts {
  readonly subject: string;
  readonly serial: string;
  readonly fingerprint256: string;
  readonly notAfter: Date;
}

/** A certificate this close to its end is warned about at start, at each reload and each rotation. */
export const EXPIRY_WARNING_DAYS = 14;

/** Says which certificate is live (`what`: "TLS certificate", or the rotation's words), and warns
 *  when it ends within EXPIRY_WARNING_DAYS: at start, at each reload, at each rotation. */
export function logCertificate(log: Logger, what: string, facts: CertificateFacts, certfile: string, event: string, nowMs = Date.now()): void {
  log.info(`${what}: ${facts.subject}, serial ${facts.serial}, SHA-256 ${facts.fingerprint256}, valid until ${facts.notAfter.toISOString()}`, { event });
  const daysLeft = (facts.notAfter.getTime() - nowMs) / 86_400_000;
  if (daysLeft < EXPIRY_WARNING_DAYS) log.warning(`TLS certificate ${certfile} expires in ${daysLeft.toFixed(1)} days`, { event: 'tls.expiring' });
}

function readPem(setting: string, path: string): string {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch (err) {
    throw new ConfigError(`${setting} ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (!text.includes('-----BEGIN ')) throw new ConfigError(`${setting} ${path}: not a PEM file (no -----BEGIN line)`);
  return text;
}

/** A certificate and its key, read and checked: each PEM, the key the certificate's, not expired. */
function readPair(certfile: string, keyfile: string, nowMs: number, what: string): { cert: string; key: string; x509: X509Certificate } {
  const cert = readPem(`${what}certfile`, certfile);
  const key = readPem(`${what}keyfile`, keyfile);
  let x509: X509Certificate;
  try { x509 = new X509Certificate(cert); } catch (err) {
    throw new ConfigError(`${what}certfile ${certfile}: not a certificate Node can read (${(err as Error).message})`);
  }
  let privateKey;
  try { privateKey = createPrivateKey(key); } catch (err) {
    throw new ConfigError(`${what}keyfile ${keyfile}: not a private key Node can read (${(err as Error).message})`);
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new ConfigError(`${what}keyfile ${keyfile} is not the key of certfile ${certfile} (subject ${x509.subject.replace(/\n/g, ', ')})`);
  }
  const notAfter = new Date(x509.validTo);
  if (notAfter.getTime() <= nowMs) throw new ConfigError(`${what}certfile ${certfile} expired on ${notAfter.toISOString()}`);
  return { cert, key, x509 };
}

/** The TLS material of `config`, checked; null when it has no certfile. Throws ConfigError naming
 *  the file and what is wrong with it. */
export function readTls(config: Config, nowMs = Date.now()): { material: TlsMaterial; facts: CertificateFacts } | null {
  if (!config.certfile && !config.keyfile) {
    if (config.http2) throw new ConfigError('http2 needs certfile and keyfile: HTTP/2 is offered by ALPN on TLS listeners only (h2c, cleartext HTTP/2, is not served)');
    return null;
  }
  if (!config.certfile || !config.keyfile) {
    throw new ConfigError(`${config.certfile ? 'keyfile' : 'certfile'} is missing: TLS needs both certfile and keyfile`);
  }
  const { cert, key, x509 } = readPair(config.certfile, config.keyfile, nowMs, '');
  const ca = config.caCerts ? readPem('caCerts', config.caCerts) : null;
  const sni = config.sni.map((e) => {
    const pair = readPair(e.certfile, e.keyfile, nowMs, `sni ${e.servername}: `);
    return { servername: e.servername, cert: pair.cert, key: pair.key };
  });
  const notAfter = new Date(x509.validTo);
  if (config.certReqs !== 'none' && !ca) throw new ConfigError(`certReqs ${config.certReqs} needs caCerts, the CAs that client certificates are checked against`);
  const material: TlsMaterial = { cert, key, sni, ca, certReqs: config.certReqs, ciphers: config.ciphers, minVersion: config.tlsMinVersion, http2: config.http2 };
  try { createSecureContext(secureContextOptions(material)); } catch (err) {
    throw new ConfigError(`TLS settings refused by OpenSSL: ${(err as Error).message}${config.ciphers ? ` (ciphers ${JSON.stringify(config.ciphers)})` : ''}`);
  }
  return {
    material,
    facts: { subject: x509.subject.replace(/\n/g, ', '), serial: x509.serialNumber, fingerprint256: x509.fingerprint256, notAfter },
  };
}

/** The options Node's tls (and https) server takes for `m`, but SNI (sniContexts). */
export function secureContextOptions(m: TlsMaterial): import('node:tls').SecureContextOptions & import('node:tls').TlsOptions {
  return {
    ...(m.ca ? { ca: m.ca } : {}), ...(m.ciphers ? { ciphers: m.ciphers } : {}), minVersion: m.minVersion, cert: m.cert, key: m.key,
    requestCert: m.certReqs !== 'none', rejectUnauthorized: m.certReqs === 'required',
  };
}

/** SNI's secure contexts by server name, made where they are used (a context does not cross IPC). */
export function sniContexts(m: TlsMaterial): Map<string, import('node:tls').SecureContext> {
  if (m.sni.length === 0) return new Map();
  const { createSecureContext: make } = require('node:tls') as typeof import('node:tls');
  const base = secureContextOptions(m);
  return new Map(m.sni.map((e) => [e.servername, make({ ...base, cert: e.cert, key: e.key })]));
}

/** The context for the name a client asked for: its own, or its parent's *.name; none: the default. */
export function sniLookup(contexts: ReadonlyMap<string, import('node:tls').SecureContext>, servername: string): import('node:tls').SecureContext | undefined {
  const name = servername.toLowerCase();
  return contexts.get(name) ?? contexts.get(`*.${name.slice(name.indexOf('.') + 1)}`);
}
