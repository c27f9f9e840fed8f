// The public listener's certificate: read, checked and re-read on reload (rotation without a
// restart). Used by the config checks (so `keygate check` reports a bad file with its position)
// and by the server.

import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { KeygateError } from './errors.js';

export interface TlsFiles {
  cert_file: string;
  key_file: string;
}

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  /** the server's certificate (the first of the chain) */
  x509: X509Certificate;
}

/** A problem with one of the two files; `field` says which. */
export class TlsFileError extends KeygateError {
  constructor(
    readonly field: 'cert_file' | 'key_file',
    message: string,
  ) {
    super('tls_file', 500, message);
  }
}

function read(file: string, field: 'cert_file' | 'key_file'): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new TlsFileError(field, `cannot read ${file}: ${(err as Error).message}`);
  }
}

/** Read both files and check that they are PEM and belong together. */
export function loadTls(files: TlsFiles): TlsMaterial {
  const cert = read(files.cert_file, 'cert_file');
  const key = read(files.key_file, 'key_file');
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new TlsFileError('cert_file', `${files.cert_file} is not a PEM certificate: ${(err as Error).message}`);
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new TlsFileError('key_file', `${files.key_file} is not a PEM private key (or it is encrypted): ${(err as Error).message}`);
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new TlsFileError('key_file', `${files.key_file} is not the key of the certificate in ${files.cert_file}`);
  }
  return { cert, key, x509 };
}
