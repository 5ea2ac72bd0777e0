/** Certificates for the TLS tests, made with openssl for each test in its temp folder. */

import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

/** A self-signed certificate for localhost and 127.0.0.1, valid `days` days (negative: expired). */
export function certificate(dir: string, name: string, days = 30): { cert: string; key: string } {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}.key`);
  const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
    '-subj', `/CN=${name}`, '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'];
  if (days > 0) {
    execFileSync('openssl', [...args, '-days', String(days)], { stdio: 'ignore' });
  } else {
    // Expired on the spot: OpenSSL 3.0 sets no past dates, but a certificate valid 0 days ends as it begins.
    const csr = join(dir, `${name}.csr`);
    execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`], { stdio: 'ignore' });
    execFileSync('openssl', ['x509', '-req', '-in', csr, '-signkey', key, '-out', cert, '-days', '0'], { stdio: 'ignore' });
  }
  return { cert, key };
}

/** A CA, and a certificate it signed for `cn` (a client's). */
export function caAndClient(dir: string, cn: string): { ca: string; cert: string; key: string } {
  const ca = certificate(dir, 'ca');
  const key = join(dir, `${cn}.key`);
  const csr = join(dir, `${cn}.csr`);
  const cert = join(dir, `${cn}.pem`);
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${cn}`], { stdio: 'ignore' });
  execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', '2'], { stdio: 'ignore' });
  return { ca: ca.cert, cert, key };
}
