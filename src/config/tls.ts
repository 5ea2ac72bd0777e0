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

export interface TlsMaterial {
  readonly cert: string;
  readonly key: string;
  readonly ca: string | null;
  readonly certReqs: 'none' | 'optional' | 'required';
  readonly ciphers: string | null;
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3';
}

/** What the log says of a certificate, so that an operator can tell which one is live. */
export interface CertificateFacts {
  readonly subject: string;
  readonly serial: string;
  readonly fingerprint256: string;
  readonly notAfter: Date;
}

/** A certificate this close to its end is warned about at start and at each reload. */
export const EXPIRY_WARNING_DAYS = 14;

function readPem(setting: string, path: string): string {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch (err) {
    throw new ConfigError(`${setting} ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (!text.includes('-----BEGIN ')) throw new ConfigError(`${setting} ${path}: not a PEM file (no -----BEGIN line)`);
  return text;
}

/** The TLS material of `config`, checked; null when it has no certfile. Throws ConfigError naming
 *  the file and what is wrong with it. */
export function readTls(config: Config, nowMs = Date.now()): { material: TlsMaterial; facts: CertificateFacts } | null {
  if (!config.certfile && !config.keyfile) return null;
  if (!config.certfile || !config.keyfile) {
    throw new ConfigError(`${config.certfile ? 'keyfile' : 'certfile'} is missing: TLS needs both certfile and keyfile`);
  }
  const cert = readPem('certfile', config.certfile);
  const key = readPem('keyfile', config.keyfile);
  const ca = config.caCerts ? readPem('caCerts', config.caCerts) : null;
  let x509: X509Certificate;
  try { x509 = new X509Certificate(cert); } catch (err) {
    throw new ConfigError(`certfile ${config.certfile}: not a certificate Node can read (${(err as Error).message})`);
  }
  let privateKey;
  try { privateKey = createPrivateKey(key); } catch (err) {
    throw new ConfigError(`keyfile ${config.keyfile}: not a private key Node can read (${(err as Error).message})`);
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new ConfigError(`keyfile ${config.keyfile} is not the key of certfile ${config.certfile} (subject ${x509.subject.replace(/\n/g, ', ')})`);
  }
  const notAfter = new Date(x509.validTo);
  if (notAfter.getTime() <= nowMs) throw new ConfigError(`certfile ${config.certfile} expired on ${notAfter.toISOString()}`);
  if (config.certReqs !== 'none' && !ca) throw new ConfigError(`certReqs ${config.certReqs} needs caCerts, the CAs that client certificates are checked against`);
  const material: TlsMaterial = { cert, key, ca, certReqs: config.certReqs, ciphers: config.ciphers, minVersion: config.tlsMinVersion };
  try { createSecureContext(secureContextOptions(material)); } catch (err) {
    throw new ConfigError(`TLS settings refused by OpenSSL: ${(err as Error).message}${config.ciphers ? ` (ciphers ${JSON.stringify(config.ciphers)})` : ''}`);
  }
  return {
    material,
    facts: { subject: x509.subject.replace(/\n/g, ', '), serial: x509.serialNumber, fingerprint256: x509.fingerprint256, notAfter },
  };
}

/** The options Node's tls (and https) server takes for `m`. */
export function secureContextOptions(m: TlsMaterial): import('node:tls').SecureContextOptions & import('node:tls').TlsOptions {
  return {
    cert: m.cert, key: m.key, ...(m.ca ? { ca: m.ca } : {}), ...(m.ciphers ? { ciphers: m.ciphers } : {}), minVersion: m.minVersion,
    requestCert: m.certReqs !== 'none', rejectUnauthorized: m.certReqs === 'required',
  };
}
