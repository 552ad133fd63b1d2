// node:crypto's createHash('sha256') for the browser bundle (session and model fingerprints, memory file checksums
// must be synchronous, which WebCrypto is not): @noble/hashes, an audited pure-JS implementation.
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';

export function createHash(algorithm: string) {
  if (algorithm !== 'sha256') throw new Error(`createHash('${algorithm}'): only sha256 is available in the browser bundle`);
  const hash = sha256.create();
  const api = {
    update(data: string | Uint8Array) {
      hash.update(typeof data === 'string' ? new TextEncoder().encode(data) : data);
      return api;
    },
    digest(encoding: 'hex') {
      void encoding;
      return bytesToHex(hash.digest());
    },
  };
  return api;
}
